-- Payments, refunds and the visit (seed 000 §2.1.4, §4.2; issue 14). Differences from the
-- seed, and why:
-- * payment_records.payment_method is what moved the money: 'wallet' or 'gateway' for a
--   payment, 'refund' for a refund (as the seed's refund row); payment_provider is the
--   channel ('wallet', 'midtrans'): a refund goes back through the channel that paid, so it
--   names that channel, not the seed's 'system'. refund_of links a refund to its payment.
-- * Money is NUMERIC(15,2); idempotency_key is VARCHAR(100) (our keys name the booking).
-- * One live payment per booking (a partial unique index): two payments of one booking can
--   never both be pending or completed, whatever the channels.
-- * bookings.check_payment_status admits one pair more than the seed's: a cancelled booking
--   that stays 'paid', for a policy tier that refunds nothing (e.g. 0 % in the last hours);
--   the seed's pairs could only call that 'refunded' or 'partially_refunded', which would be
--   false. An unpaid booking cancelled is 'failed', as in the seed.
-- * bookings.qr_code_url holds the signed QR payload (Booking.qr_payload), set when paid.

CREATE TABLE payment_records (
    payment_id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    booking_id          UUID NOT NULL REFERENCES bookings (booking_id) ON DELETE CASCADE,
    user_id             UUID NOT NULL,
    amount              NUMERIC(15,2) NOT NULL,
    currency            CHAR(3) NOT NULL DEFAULT 'IDR',
    payment_method      VARCHAR(30) NOT NULL,
    payment_provider    VARCHAR(30) NOT NULL,
    provider_payment_id VARCHAR(100),
    status              VARCHAR(20) NOT NULL DEFAULT 'pending',
    payment_url         TEXT,
    expiry_time         TIMESTAMPTZ,
    paid_at             TIMESTAMPTZ,
    refunded_at         TIMESTAMPTZ,
    refund_amount       NUMERIC(15,2),
    transaction_fee     NUMERIC(15,2),
    metadata            JSONB,
    refund_of           UUID REFERENCES payment_records (payment_id),
    attempts            INTEGER NOT NULL DEFAULT 0,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    idempotency_key     VARCHAR(100) UNIQUE,
    CONSTRAINT check_payment_record_status CHECK (status IN ('pending', 'completed', 'failed',
        'expired', 'refunded', 'partially_refunded')),
    CONSTRAINT check_payment_method CHECK (payment_method IN ('wallet', 'gateway', 'refund')),
    CONSTRAINT check_payment_provider CHECK (payment_provider IN ('wallet', 'midtrans')),
    CONSTRAINT check_payment_amount CHECK (amount >= 0),
    CONSTRAINT check_refund_amount CHECK (refund_amount IS NULL
        OR (refund_amount >= 0 AND refund_amount <= amount)),
    CONSTRAINT check_refund_links CHECK ((payment_method = 'refund') = (refund_of IS NOT NULL))
);

CREATE INDEX payment_records_booking_id_idx ON payment_records (booking_id);
CREATE INDEX payment_records_status_idx ON payment_records (status);
CREATE INDEX payment_records_provider_payment_id_idx ON payment_records (provider_payment_id);
CREATE UNIQUE INDEX payment_records_one_live_payment ON payment_records (booking_id)
    WHERE payment_method <> 'refund' AND status IN ('pending', 'completed', 'refunded',
                                                    'partially_refunded');
-- The sweeper's scan: money moves begun and not yet confirmed by the wallet or gateway.
CREATE INDEX payment_records_pending_idx ON payment_records (updated_at)
    WHERE status = 'pending';

CREATE TRIGGER payment_records_update_timestamp BEFORE UPDATE ON payment_records
    FOR EACH ROW EXECUTE FUNCTION update_timestamp();

ALTER TABLE bookings ADD CONSTRAINT fk_bookings_payment
    FOREIGN KEY (payment_id) REFERENCES payment_records (payment_id);

ALTER TABLE bookings DROP CONSTRAINT check_payment_status;
ALTER TABLE bookings ADD CONSTRAINT check_payment_status CHECK (
    (status = 'pending_payment' AND payment_status = 'pending') OR
    (status = 'confirmed' AND payment_status = 'paid') OR
    (status = 'cancelled' AND payment_status IN ('refunded', 'partially_refunded', 'failed',
                                                 'paid')) OR
    (status IN ('in_progress', 'completed', 'no_show'))
);

-- Unpaid bookings past their payment window: the sweeper's scan.
CREATE INDEX bookings_pending_payment_idx ON bookings (created_at)
    WHERE status = 'pending_payment';
-- A rider's bookings, newest first (ListBookings).
CREATE INDEX bookings_user_created_idx ON bookings (user_id, created_at DESC, booking_id);
