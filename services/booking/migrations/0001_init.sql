-- Booking service (seeds 000/002 §2-4, seed 001 §4.3, issue 14). Differences from the seed,
-- and why:
-- * Money is NUMERIC(15,2) (ARCHITECTURE.md "Contract conventions"), not DECIMAL(12,2).
-- * The clinic catalogue (clinics, clinic_services, staff) is this service's own: the seed's
--   clinic service does not exist in the mesh. Slots, reservations and bookings reference it.
-- * The seed's no_staff_overlap_idx, a UNIQUE index on (staff_id, daterange(start_time,
--   end_time)), does not prevent overlaps: two different ranges that overlap are different
--   keys, and a daterange drops the time of day. An exclusion constraint on the tstzrange
--   does (btree_gist), between concurrent transactions too.
-- * slots.price is NOT NULL (the service's price when none is given), so a booking's total
--   never falls back to the seed's COALESCE(price, 0); slots.date is the clinic's local
--   date of start_time. A CHECK ties status to remaining: available has a place, booked none.
-- * reservations carry clinic_id (operators are scoped by clinic) and request_id
--   (idempotency per rider), and a partial unique index keeps one pending reservation per
--   rider and slot.
-- * bookings: one per reservation (UNIQUE reservation_id); discount_amount NOT NULL, within
--   the total. The seed's status <-> payment_status constraint is kept as written; note
--   that it admits no 'rescheduled' booking and no unpaid cancelled one ('failed' aside).
-- * booking_history.changed_by is VARCHAR(100) "role:subject" (from app.user_id, set per
--   transaction), not a UUID: staff, admins and services are not users. The creation of a
--   booking is a history row too (previous_status NULL), written by an INSERT trigger;
--   change_reason comes from app.change_reason when the transaction sets it.
-- * event_store (seed 001 §4.3) adds aggregate_type and seq: rows of one transaction share
--   created_at, seq orders them.
-- * Not yet (issue 14's later increments): payment_records, the booking_analytics_daily
--   materialized view, the monthly partitioning of bookings and slots (PostgreSQL 15 cannot
--   enforce the exclusion constraint across partitions; the next increment decides).

CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE OR REPLACE FUNCTION update_timestamp()
RETURNS TRIGGER AS $$
BEGIN
    NEW.updated_at = NOW();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

-- --- catalogue --------------------------------------------------------------------------

CREATE TABLE clinics (
    clinic_id   UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name        VARCHAR(255) NOT NULL,
    address     TEXT,
    time_zone   VARCHAR(64) NOT NULL DEFAULT 'Asia/Jakarta',
    is_active   BOOLEAN NOT NULL DEFAULT true,
    request_id  VARCHAR(100) UNIQUE,
    created_by  VARCHAR(100),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CONSTRAINT check_clinic_name CHECK (length(btrim(name)) > 0)
);

CREATE INDEX clinics_created_idx ON clinics (created_at, clinic_id);

CREATE TABLE clinic_services (
    service_id       UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    clinic_id        UUID NOT NULL REFERENCES clinics (clinic_id),
    name             VARCHAR(255) NOT NULL,
    duration_minutes INTEGER NOT NULL,
    price            NUMERIC(15,2) NOT NULL,
    currency         CHAR(3) NOT NULL DEFAULT 'IDR',
    default_capacity INTEGER NOT NULL DEFAULT 1,
    is_active        BOOLEAN NOT NULL DEFAULT true,
    request_id       VARCHAR(100) UNIQUE,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CONSTRAINT unique_service_name_per_clinic UNIQUE (clinic_id, name),
    CONSTRAINT check_service_name CHECK (length(btrim(name)) > 0),
    CONSTRAINT check_duration CHECK (duration_minutes BETWEEN 5 AND 480),
    CONSTRAINT check_service_price CHECK (price >= 0),
    CONSTRAINT check_default_capacity CHECK (default_capacity BETWEEN 1 AND 1000)
);

CREATE INDEX clinic_services_clinic_idx ON clinic_services (clinic_id, created_at, service_id);

CREATE TABLE staff (
    staff_id    UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    clinic_id   UUID NOT NULL REFERENCES clinics (clinic_id),
    full_name   VARCHAR(255) NOT NULL,
    title       VARCHAR(100),
    is_active   BOOLEAN NOT NULL DEFAULT true,
    request_id  VARCHAR(100) UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CONSTRAINT check_staff_name CHECK (length(btrim(full_name)) > 0)
);

CREATE INDEX staff_clinic_idx ON staff (clinic_id, created_at, staff_id);

CREATE TRIGGER clinics_update_timestamp BEFORE UPDATE ON clinics
    FOR EACH ROW EXECUTE FUNCTION update_timestamp();
CREATE TRIGGER clinic_services_update_timestamp BEFORE UPDATE ON clinic_services
    FOR EACH ROW EXECUTE FUNCTION update_timestamp();
CREATE TRIGGER staff_update_timestamp BEFORE UPDATE ON staff
    FOR EACH ROW EXECUTE FUNCTION update_timestamp();

-- --- slots (seed 2.1.2) -----------------------------------------------------------------

-- A GenerateSlots request: its slots, found again by a retry with the same request_id.
CREATE TABLE slot_batches (
    batch_id    UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    clinic_id   UUID NOT NULL REFERENCES clinics (clinic_id),
    request_id  VARCHAR(100) NOT NULL UNIQUE,
    -- SHA-256 of the request's normalised fields: the same request_id with other fields is
    -- refused.
    fingerprint CHAR(64) NOT NULL,
    skipped     INTEGER NOT NULL DEFAULT 0,
    created_by  VARCHAR(100),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE slots (
    slot_id     UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    clinic_id   UUID NOT NULL REFERENCES clinics (clinic_id),
    service_id  UUID NOT NULL REFERENCES clinic_services (service_id),
    staff_id    UUID REFERENCES staff (staff_id),
    date        DATE NOT NULL,
    start_time  TIMESTAMPTZ NOT NULL,
    end_time    TIMESTAMPTZ NOT NULL,
    status      VARCHAR(20) NOT NULL DEFAULT 'available',
    capacity    INTEGER NOT NULL DEFAULT 1,
    remaining   INTEGER NOT NULL,
    price       NUMERIC(15,2) NOT NULL,
    currency    CHAR(3) NOT NULL DEFAULT 'IDR',
    request_id  VARCHAR(100) UNIQUE,
    batch_id    UUID REFERENCES slot_batches (batch_id),
    created_by  VARCHAR(100),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    version     INTEGER NOT NULL DEFAULT 1,
    CONSTRAINT check_slot_status
        CHECK (status IN ('available', 'booked', 'unavailable', 'maintenance')),
    CONSTRAINT check_capacity CHECK (capacity > 0),
    CONSTRAINT check_remaining CHECK (remaining BETWEEN 0 AND capacity),
    CONSTRAINT check_slot_times CHECK (start_time < end_time),
    CONSTRAINT check_slot_price CHECK (price >= 0),
    CONSTRAINT check_status_remaining CHECK (
        (status = 'available' AND remaining > 0)
        OR (status = 'booked' AND remaining = 0)
        OR status IN ('unavailable', 'maintenance')
    ),
    CONSTRAINT no_staff_overlap EXCLUDE USING gist (
        staff_id WITH =,
        tstzrange(start_time, end_time) WITH &&
    ) WHERE (staff_id IS NOT NULL)
);

CREATE INDEX slots_clinic_id_date_idx ON slots (clinic_id, date);
CREATE INDEX slots_service_id_idx ON slots (service_id);
CREATE INDEX slots_staff_id_idx ON slots (staff_id);
CREATE INDEX slots_date_idx ON slots (date);
CREATE INDEX slots_status_idx ON slots (status);
CREATE INDEX slots_composite_search_idx ON slots (clinic_id, date, status);
CREATE INDEX slots_availability_idx ON slots (clinic_id, date, status) WHERE status = 'available';
CREATE INDEX slots_batch_idx ON slots (batch_id) WHERE batch_id IS NOT NULL;

CREATE TRIGGER slots_update_timestamp BEFORE UPDATE ON slots
    FOR EACH ROW EXECUTE FUNCTION update_timestamp();

-- --- reservations (seed 2.1.3) ----------------------------------------------------------

CREATE TABLE reservations (
    reservation_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id        UUID NOT NULL,
    pet_id         UUID NOT NULL,
    slot_id        UUID NOT NULL REFERENCES slots (slot_id) ON DELETE CASCADE,
    service_id     UUID NOT NULL,
    clinic_id      UUID NOT NULL,
    status         VARCHAR(20) NOT NULL DEFAULT 'pending',
    request_id     VARCHAR(100),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    expires_at     TIMESTAMPTZ NOT NULL,
    lock_token     VARCHAR(64) NOT NULL UNIQUE,
    CONSTRAINT check_reservation_status
        CHECK (status IN ('pending', 'confirmed', 'expired', 'cancelled')),
    CONSTRAINT check_reservation_expiry CHECK (expires_at > created_at),
    CONSTRAINT unique_reservation_request UNIQUE (user_id, request_id)
);

CREATE INDEX reservations_user_id_idx ON reservations (user_id);
CREATE INDEX reservations_slot_id_idx ON reservations (slot_id);
CREATE INDEX reservations_status_idx ON reservations (status);
CREATE INDEX reservations_expires_at_idx ON reservations (expires_at);
-- One rider holds a slot at most once at a time.
CREATE UNIQUE INDEX reservations_one_pending_per_user_slot
    ON reservations (user_id, slot_id) WHERE status = 'pending';
-- The sweeper's scan: pending reservations by expiry.
CREATE INDEX reservations_pending_expiry_idx ON reservations (expires_at)
    WHERE status = 'pending';

CREATE TRIGGER reservations_update_timestamp BEFORE UPDATE ON reservations
    FOR EACH ROW EXECUTE FUNCTION update_timestamp();

-- --- bookings (seed 2.1.1, 4.1) ---------------------------------------------------------

CREATE TABLE bookings (
    booking_id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    reservation_id      UUID UNIQUE REFERENCES reservations (reservation_id) ON DELETE SET NULL,
    user_id             UUID NOT NULL,
    pet_id              UUID NOT NULL,
    clinic_id           UUID NOT NULL REFERENCES clinics (clinic_id),
    service_id          UUID NOT NULL REFERENCES clinic_services (service_id),
    slot_id             UUID NOT NULL,
    staff_id            UUID,
    status              VARCHAR(20) NOT NULL DEFAULT 'pending_payment',
    payment_status      VARCHAR(20) NOT NULL DEFAULT 'pending',
    total_amount        NUMERIC(15,2) NOT NULL,
    discount_amount     NUMERIC(15,2) NOT NULL DEFAULT 0,
    final_amount        NUMERIC(15,2) NOT NULL,
    currency            CHAR(3) NOT NULL DEFAULT 'IDR',
    notes               TEXT,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    cancelled_at        TIMESTAMPTZ,
    completed_at        TIMESTAMPTZ,
    cancellation_reason VARCHAR(50),
    cancellation_notes  TEXT,
    payment_id          UUID,
    qr_code_url         TEXT,
    version             INTEGER NOT NULL DEFAULT 1,
    CONSTRAINT check_booking_status CHECK (status IN ('pending_payment', 'confirmed',
        'in_progress', 'completed', 'cancelled', 'rescheduled', 'no_show')),
    CONSTRAINT check_payment_status_value CHECK (payment_status IN ('pending', 'paid',
        'refunded', 'partially_refunded', 'failed')),
    CONSTRAINT check_final_amount CHECK (final_amount = total_amount - discount_amount),
    CONSTRAINT check_amounts CHECK (total_amount >= 0 AND discount_amount >= 0
        AND discount_amount <= total_amount),
    CONSTRAINT check_payment_status CHECK (
        (status = 'pending_payment' AND payment_status = 'pending') OR
        (status = 'confirmed' AND payment_status = 'paid') OR
        (status = 'cancelled' AND payment_status IN ('refunded', 'partially_refunded', 'failed')) OR
        (status IN ('in_progress', 'completed', 'no_show'))
    ),
    CONSTRAINT fk_bookings_slot FOREIGN KEY (slot_id) REFERENCES slots (slot_id)
);

CREATE INDEX bookings_user_id_idx ON bookings (user_id);
CREATE INDEX bookings_clinic_id_idx ON bookings (clinic_id);
CREATE INDEX bookings_status_idx ON bookings (status);
CREATE INDEX bookings_created_at_idx ON bookings (created_at);
CREATE INDEX bookings_slot_id_idx ON bookings (slot_id);
CREATE INDEX bookings_created_at_range_idx ON bookings USING BRIN (created_at);
CREATE INDEX bookings_clinic_service_idx ON bookings (clinic_id, service_id, created_at);
CREATE INDEX bookings_notes_idx ON bookings USING GIN (to_tsvector('indonesian', notes));

CREATE TRIGGER booking_update_timestamp BEFORE UPDATE ON bookings
    FOR EACH ROW EXECUTE FUNCTION update_timestamp();

-- --- booking history (seed 2.1.5, 4.3) --------------------------------------------------

CREATE TABLE booking_history (
    history_id      UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    booking_id      UUID NOT NULL REFERENCES bookings (booking_id) ON DELETE CASCADE,
    previous_status VARCHAR(20),
    new_status      VARCHAR(20) NOT NULL,
    changed_at      TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    changed_by      VARCHAR(100),
    change_reason   TEXT,
    metadata        JSONB
);

CREATE INDEX booking_history_booking_id_idx ON booking_history (booking_id);
CREATE INDEX booking_history_changed_at_idx ON booking_history (changed_at);

-- Who and why come from the transaction's settings (services/booking/store.py sets them);
-- TG_ARGV[0] is the reason when it sets none.
CREATE OR REPLACE FUNCTION log_booking_status_change()
RETURNS TRIGGER AS $$
BEGIN
    IF TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status THEN
        INSERT INTO booking_history (
            booking_id, previous_status, new_status, changed_by, change_reason
        ) VALUES (
            NEW.booking_id,
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END,
            NEW.status,
            NULLIF(current_setting('app.user_id', true), ''),
            COALESCE(NULLIF(current_setting('app.change_reason', true), ''), TG_ARGV[0])
        );
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER booking_status_change
AFTER UPDATE OF status ON bookings
FOR EACH ROW
EXECUTE FUNCTION log_booking_status_change('system_update');

CREATE TRIGGER booking_created
AFTER INSERT ON bookings
FOR EACH ROW
EXECUTE FUNCTION log_booking_status_change('created');

-- --- event store (seed 001 §4.3) --------------------------------------------------------

CREATE TABLE event_store (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    event_id       UUID PRIMARY KEY,
    aggregate_id   UUID NOT NULL,
    -- slot, reservation, booking
    aggregate_type VARCHAR(20) NOT NULL,
    -- SlotCreated, ReservationCreated, … (seed 001 §4.3.1)
    event_type     VARCHAR(50) NOT NULL,
    payload        JSONB NOT NULL,
    metadata       JSONB NOT NULL DEFAULT '{}',
    created_at     TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX event_store_aggregate_idx ON event_store (aggregate_id, seq);
CREATE INDEX event_store_created_at_idx ON event_store (created_at);
