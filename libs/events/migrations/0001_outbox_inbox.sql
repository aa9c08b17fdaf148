-- Transactional outbox: events are written in the same transaction as the state change
-- and published by the relay (libs/events/relay.py), woken in-process after the commit
-- (libs/events/outbox.py says why not by a NOTIFY trigger).
CREATE TABLE outbox (
    seq         BIGSERIAL PRIMARY KEY,
    event_id    UUID NOT NULL UNIQUE,
    event_type  TEXT NOT NULL,            -- the routing key, e.g. wallet.topped_up
    body        JSONB NOT NULL,           -- the CloudEvents 1.0 envelope
    traceparent TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at     TIMESTAMPTZ,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT
);

CREATE INDEX outbox_unsent_idx ON outbox (seq) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent_at_idx ON outbox (sent_at) WHERE sent_at IS NOT NULL;

-- Inbox: the events a consumer has handled, recorded in the same transaction as the effect,
-- so a redelivered event changes nothing a second time.
CREATE TABLE inbox (
    consumer   TEXT NOT NULL,
    event_id   UUID NOT NULL,
    event_type TEXT NOT NULL,
    handled_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
