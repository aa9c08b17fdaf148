-- Notification service (seed 004 §2.4 "Notification Service Database"; seed 001 §3.2.2's
-- email / push / SMS channels). Departures from the seed, and why:
--   user_id is a UUID and references nothing: users live in the user service's database;
--   the type enum covers every event riders are told about (abandoned and incomplete
--   journeys, wallet and booking events besides check-in, check-out and fare updates);
--   the terminal is kept by code (the fare service's public id), not by a foreign key;
--   event_id/event_type name the event a notification was made from, and UNIQUE (event_id,
--   user_id) makes a second notification of one event for one rider impossible, whatever a
--   redelivery or a replay does;
--   each channel is a delivery with its own status and attempts (notification_deliveries),
--   every attempt is logged (delivery_attempts), and the seed's status becomes their
--   roll-up: pending while a channel is pending, failed when one failed, else sent.

CREATE TYPE notification_type_enum AS ENUM
    ('checkin', 'checkout', 'abandoned', 'incomplete', 'fare_update', 'wallet', 'booking');
CREATE TYPE notification_status_enum AS ENUM ('pending', 'sent', 'failed');
CREATE TYPE notification_channel AS ENUM ('email', 'push', 'sms');
CREATE TYPE delivery_status AS ENUM ('pending', 'sent', 'failed', 'skipped');
CREATE TYPE attempt_outcome AS ENUM ('sent', 'failed', 'rejected', 'skipped');

CREATE TABLE notifications (
    id                    BIGSERIAL PRIMARY KEY,
    user_id               UUID NOT NULL,            -- external reference (user service)
    type                  notification_type_enum NOT NULL,
    status                notification_status_enum NOT NULL DEFAULT 'pending',
    message               TEXT NOT NULL,            -- the full text, in the rider's language
    language              VARCHAR(5) NOT NULL,
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at               TIMESTAMPTZ,
    terminal_code         VARCHAR(3),               -- external reference (fare service)
    transaction_reference VARCHAR(100),             -- journey, ledger entry, hold or booking
    metadata              JSONB NOT NULL DEFAULT '{}',  -- the values the text was made from
    event_id              UUID NOT NULL,
    event_type            VARCHAR(100) NOT NULL,

    CONSTRAINT one_notification_per_event_and_user UNIQUE (event_id, user_id),
    CONSTRAINT check_sent_at CHECK ((status = 'sent') = (sent_at IS NOT NULL)),
    CONSTRAINT check_message_present CHECK (length(message) > 0)
);

-- Seed 004's indexes.
CREATE INDEX idx_notifications_user_status ON notifications (user_id, status);
CREATE INDEX idx_notifications_created ON notifications (created_at DESC);
CREATE INDEX idx_notifications_pending ON notifications (status) WHERE status = 'pending';
CREATE INDEX idx_notifications_type ON notifications (type);
-- ListNotifications: a rider's own, newest first.
CREATE INDEX idx_notifications_user_id ON notifications (user_id, id DESC);

CREATE TABLE notification_deliveries (
    notification_id BIGINT NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    channel         notification_channel NOT NULL,
    status          delivery_status NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,  -- since made or last retried by an operator
    -- Pending: when a worker may take it next (a claim pushes it out by a lease, so a worker
    -- that dies mid-send leaves it to another once the lease is over).
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error      TEXT,
    sent_at         TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),

    PRIMARY KEY (notification_id, channel),
    CONSTRAINT check_attempts CHECK (attempts >= 0),
    CONSTRAINT check_delivery_sent_at CHECK ((status = 'sent') = (sent_at IS NOT NULL))
);

-- The delivery worker's claim: due pending deliveries, oldest first.
CREATE INDEX idx_deliveries_due ON notification_deliveries (next_attempt_at)
    WHERE status = 'pending';

CREATE TABLE delivery_attempts (
    id              BIGSERIAL PRIMARY KEY,
    notification_id BIGINT NOT NULL,
    channel         notification_channel NOT NULL,
    attempt         INTEGER NOT NULL CHECK (attempt > 0),
    outcome         attempt_outcome NOT NULL,
    recipient       VARCHAR(255),                -- the address or number used
    error           TEXT,
    at              TIMESTAMPTZ NOT NULL DEFAULT now(),

    FOREIGN KEY (notification_id, channel)
        REFERENCES notification_deliveries (notification_id, channel) ON DELETE CASCADE
);

CREATE INDEX idx_delivery_attempts_delivery ON delivery_attempts (notification_id, channel, id);

-- Per-rider choices (seed 001 §3.2.2 channels); no row = the defaults.
CREATE TABLE preferences (
    user_id        UUID PRIMARY KEY,             -- external reference (user service)
    muted_channels notification_channel[] NOT NULL DEFAULT '{}',
    language       VARCHAR(5) NOT NULL DEFAULT 'id',
    time_zone      VARCHAR(64) NOT NULL DEFAULT 'Asia/Jakarta',
    fare_updates   BOOLEAN NOT NULL DEFAULT false,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),

    CONSTRAINT check_language CHECK (language IN ('id', 'en'))
);

-- fare.updated goes to the riders who opted in.
CREATE INDEX idx_preferences_fare_updates ON preferences (user_id) WHERE fare_updates;
