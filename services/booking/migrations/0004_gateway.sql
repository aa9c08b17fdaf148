-- The payment gateway (Midtrans, issue 14): the notifications it sent, and wallet top-ups
-- paid through it.
-- * gateway_notifications: every verified notification once, by the gateway's transaction
--   id and status (a notification replayed is recognised and applies nothing twice), with
--   what we did about it. Unverified ones are never written.
-- * top_ups: a rider's top-up intent; the verified, confirmed settlement credits the
--   wallet through the user service (TopUp, idempotent by the intent) and records it.
-- * Order ids name what they pay: 'pay-<payment_id>' for a booking's payment,
--   'topup-<intent_id>' for a top-up (Midtrans allows 50 characters).

CREATE TABLE gateway_notifications (
    notification_id    UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    provider           VARCHAR(30) NOT NULL DEFAULT 'midtrans',
    order_id           VARCHAR(50) NOT NULL,
    transaction_id     VARCHAR(100) NOT NULL,
    transaction_status VARCHAR(30) NOT NULL,
    body               JSONB NOT NULL,
    outcome            VARCHAR(30),
    received_at        TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CONSTRAINT unique_gateway_notification UNIQUE (provider, transaction_id, transaction_status)
);

CREATE INDEX gateway_notifications_order_idx ON gateway_notifications (order_id);

CREATE TABLE top_ups (
    intent_id       UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         UUID NOT NULL,
    amount          NUMERIC(15,2) NOT NULL,
    currency        CHAR(3) NOT NULL DEFAULT 'IDR',
    status          VARCHAR(20) NOT NULL DEFAULT 'pending',
    payment_url     TEXT,
    provider_payment_id VARCHAR(100),
    expires_at      TIMESTAMPTZ NOT NULL,
    credited_at     TIMESTAMPTZ,
    idempotency_key VARCHAR(100) NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CONSTRAINT unique_top_up_request UNIQUE (user_id, idempotency_key),
    CONSTRAINT check_top_up_status CHECK (status IN ('pending', 'paid', 'failed', 'expired',
                                                  'refunded')),
    CONSTRAINT check_top_up_amount CHECK (amount > 0),
    CONSTRAINT check_top_up_credited CHECK ((status = 'paid') = (credited_at IS NOT NULL))
);

CREATE INDEX top_ups_pending_idx ON top_ups (updated_at) WHERE status = 'pending';

CREATE TRIGGER top_ups_update_timestamp BEFORE UPDATE ON top_ups
    FOR EACH ROW EXECUTE FUNCTION update_timestamp();

-- The sweeper asks the gateway about payments it never heard of (status API).
CREATE INDEX payment_records_pending_gateway_idx ON payment_records (updated_at)
    WHERE status = 'pending' AND payment_provider = 'midtrans';
