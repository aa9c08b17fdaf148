-- Facility (room) booking by free time range (seed 003, issue 15): tiket.booking.v1.
-- FacilityService, served by the booking process from this database. Differences from the
-- seed, and why:
-- * facilities is defined here (the seed references it and never defines it): capacity
--   1..1000, an IANA time zone, whether bookings need approval, active. Opening hours are
--   facility_hours: windows of local wall-clock minutes per ISO weekday (1 = Monday), several a
--   day, none = closed that day; close may be 1440 (midnight), windows of a day never overlap
--   (exclusion constraint).
-- * Ids are UUIDs; user_id is the user service's UUID (no foreign key: another service's
--   data); created_by / cancelled_by / decided_by are VARCHAR(100) "role:subject" (staff and
--   admins are not users); created_by differs from "user:<user_id>" for a proxy booking.
-- * status is VARCHAR with a CHECK (confirmed, pending, cancelled, rejected), not an enum type:
--   'rejected' is the approval workflow's answer the seed foresaw.
-- * Overlaps: the seed's UNIQUE index on (facility_id, start_time, end_time) does not prevent
--   them (two different ranges that overlap are different keys). The exclusion constraint the
--   seed left commented out does, between concurrent transactions too, on tstzrange (the
--   columns are TIMESTAMPTZ; the seed's tsrange would cast through the session's zone). Its
--   GiST index is also the seed's idx_bookings_facility_time_range (availability lookups),
--   so that one is not made twice.
-- * Granularity: the seed's EXTRACT(minute FROM start_time) reads the session's time zone and
--   ignores seconds; extract(epoch ...) % 900 = 0 is zone-free and refuses seconds and
--   fractions too (every zone's offset today is a multiple of 15 minutes, so a UTC quarter
--   hour is a local one).
-- * "Not in the past" is checked by the service: a CHECK with NOW() is not a constraint (it
--   is evaluated only when a row is written, so an old row would violate it on any update, and
--   a restore of a dump would fail).
-- * The seed's facility/day index reads the UTC day; utilization is per the facility's local
--   day, so a plain (facility_id, start_time) index serves any zone's day ranges.
-- * The audit log (seed booking_audit_log) adds approved / rejected; changed_by is
--   "role:subject"; request_id is VARCHAR(128) (a client's x-request-id need not be a UUID).

CREATE TABLE facilities (
    facility_id       UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name              VARCHAR(255) NOT NULL,
    location          TEXT,
    capacity          INTEGER NOT NULL,
    time_zone         VARCHAR(64) NOT NULL DEFAULT 'Asia/Jakarta',
    requires_approval BOOLEAN NOT NULL DEFAULT false,
    is_active         BOOLEAN NOT NULL DEFAULT true,
    request_id        VARCHAR(100) UNIQUE,
    created_by        VARCHAR(100),
    created_at        TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CONSTRAINT check_facility_name CHECK (length(btrim(name)) > 0),
    CONSTRAINT check_facility_capacity CHECK (capacity BETWEEN 1 AND 1000)
);

CREATE INDEX facilities_created_idx ON facilities (created_at, facility_id);

CREATE TRIGGER facilities_updated_at BEFORE UPDATE ON facilities
    FOR EACH ROW EXECUTE FUNCTION update_timestamp();

CREATE TABLE facility_hours (
    facility_id  UUID NOT NULL REFERENCES facilities (facility_id) ON DELETE CASCADE,
    weekday      SMALLINT NOT NULL,
    open_minute  SMALLINT NOT NULL,
    close_minute SMALLINT NOT NULL,
    PRIMARY KEY (facility_id, weekday, open_minute),
    CONSTRAINT check_hours_weekday CHECK (weekday BETWEEN 1 AND 7),
    CONSTRAINT check_hours_window CHECK (
        open_minute >= 0 AND close_minute <= 1440 AND open_minute < close_minute
        AND open_minute % 15 = 0 AND close_minute % 15 = 0
    ),
    CONSTRAINT no_hours_overlap EXCLUDE USING gist (
        facility_id WITH =,
        weekday WITH =,
        int4range(open_minute, close_minute) WITH &&
    )
);

CREATE TABLE facility_bookings (
    booking_id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    facility_id          UUID NOT NULL REFERENCES facilities (facility_id) ON DELETE RESTRICT,
    user_id              UUID NOT NULL,
    start_time           TIMESTAMPTZ NOT NULL,
    end_time             TIMESTAMPTZ NOT NULL,
    title                VARCHAR(255) NOT NULL,
    description          TEXT,
    attendee_count       INTEGER NOT NULL DEFAULT 1,
    external_meeting_url VARCHAR(500),
    status               VARCHAR(20) NOT NULL DEFAULT 'confirmed',
    cancelled_at         TIMESTAMPTZ,
    cancelled_by         VARCHAR(100),
    cancellation_reason  TEXT,
    decided_at           TIMESTAMPTZ,
    decided_by           VARCHAR(100),
    decision_reason      TEXT,
    request_id           VARCHAR(100),
    created_by           VARCHAR(100) NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CONSTRAINT check_booking_status
        CHECK (status IN ('confirmed', 'pending', 'cancelled', 'rejected')),
    CONSTRAINT booking_time_valid CHECK (end_time > start_time),
    CONSTRAINT booking_time_granularity CHECK (
        extract(epoch FROM start_time) % 900 = 0 AND extract(epoch FROM end_time) % 900 = 0
    ),
    CONSTRAINT booking_duration_reasonable CHECK (end_time <= start_time + INTERVAL '24 hours'),
    CONSTRAINT booking_attendee_count_valid CHECK (attendee_count BETWEEN 1 AND 1000),
    CONSTRAINT booking_cancellation_consistency CHECK (
        (status = 'cancelled' AND cancelled_at IS NOT NULL AND cancelled_by IS NOT NULL)
        OR (status <> 'cancelled' AND cancelled_at IS NULL AND cancelled_by IS NULL)
    ),
    CONSTRAINT booking_rejection_consistency CHECK (
        status <> 'rejected' OR (decided_at IS NOT NULL AND decided_by IS NOT NULL)
    ),
    CONSTRAINT booking_title_present CHECK (length(btrim(title)) > 0),
    CONSTRAINT booking_request_unique UNIQUE (user_id, request_id),
    CONSTRAINT booking_no_overlap EXCLUDE USING gist (
        facility_id WITH =,
        tstzrange(start_time, end_time) WITH &&
    ) WHERE (status IN ('confirmed', 'pending'))
);

CREATE TRIGGER facility_bookings_updated_at BEFORE UPDATE ON facility_bookings
    FOR EACH ROW EXECUTE FUNCTION update_timestamp();

-- The seed's indexes, adapted (the facility/time GiST index is booking_no_overlap's).
CREATE INDEX facility_bookings_user_active_idx ON facility_bookings (user_id, start_time, booking_id)
    WHERE status IN ('confirmed', 'pending');
CREATE INDEX facility_bookings_created_at_idx ON facility_bookings (created_at DESC);
CREATE INDEX facility_bookings_status_time_idx ON facility_bookings (status, start_time)
    WHERE status <> 'cancelled';
CREATE INDEX facility_bookings_facility_time_idx ON facility_bookings (facility_id, start_time)
    WHERE status = 'confirmed';

CREATE TABLE facility_booking_audit_log (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- No foreign key: the history outlives the booking.
    booking_id  UUID NOT NULL,
    action      VARCHAR(20) NOT NULL,
    old_values  JSONB,
    new_values  JSONB,
    changed_by  VARCHAR(100) NOT NULL,
    changed_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    user_agent  TEXT,
    ip_address  INET,
    request_id  VARCHAR(128),
    CONSTRAINT check_audit_action CHECK (
        action IN ('created', 'updated', 'cancelled', 'admin_cancelled', 'approved', 'rejected')
    )
);

CREATE INDEX facility_audit_booking_idx
    ON facility_booking_audit_log (booking_id, changed_at DESC);
CREATE INDEX facility_audit_changed_by_idx
    ON facility_booking_audit_log (changed_by, changed_at DESC);
CREATE INDEX facility_audit_action_idx ON facility_booking_audit_log (action, changed_at DESC);
