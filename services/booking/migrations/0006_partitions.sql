-- Monthly partitions (seed 000 §2.2), for the tables that only ever grow: the event store
-- (by created_at) and the booking history (by changed_at). Why these and not the seed's
-- bookings and slots:
-- * PostgreSQL 15 enforces a unique or exclusion constraint of a partitioned table only
--   when it contains the partition key. Partitioning slots by date would turn
--   no_staff_overlap into "no overlap on the same date" (a slot across midnight, or two
--   slots on two dates, could overlap), and partitioning bookings by created_at would turn
--   UNIQUE (reservation_id) into "unique per month" — one reservation could become two
--   bookings. Both guard against double booking, so both tables stay whole.
-- * The two append-only tables carry no such guard (their keys are ours, UUIDs and a
--   sequence), grow with every change, and are read per aggregate or by recent time: they
--   gain what partitioning offers (old months detached or dropped whole, no bloat, recent
--   months hot in memory) and lose nothing.
-- Partitions are made for the current month and three ahead here, then kept ahead by the
-- service (services/booking/partitions.py, daily); a DEFAULT partition takes any row outside
-- them, so no insert can fail for a missing month. pg_partman (the seed's) is not assumed
-- to be installed: create_month_partitions() is its small part that is needed.

CREATE OR REPLACE FUNCTION create_month_partitions(parent TEXT, months_ahead INTEGER)
RETURNS INTEGER AS $$
DECLARE
    first_month DATE := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    month_start DATE;
    partition TEXT;
    made INTEGER := 0;
BEGIN
    -- Replicas keeping partitions at the same time take turns.
    PERFORM pg_advisory_xact_lock(hashtext('create_month_partitions:' || parent));
    FOR i IN 0..months_ahead LOOP
        month_start := first_month + make_interval(months => i);
        partition := parent || '_' || to_char(month_start, 'YYYYMM');
        IF to_regclass(partition) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                partition, parent,
                month_start::timestamp AT TIME ZONE 'UTC',
                (month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC'
            );
            made := made + 1;
        END IF;
    END LOOP;
    RETURN made;
END;
$$ LANGUAGE plpgsql;

-- --- event_store --------------------------------------------------------------------------

ALTER TABLE event_store RENAME TO event_store_whole;
ALTER INDEX event_store_aggregate_idx RENAME TO event_store_whole_aggregate_idx;
ALTER INDEX event_store_created_at_idx RENAME TO event_store_whole_created_at_idx;

CREATE TABLE event_store (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY,
    event_id       UUID NOT NULL,
    aggregate_id   UUID NOT NULL,
    aggregate_type VARCHAR(20) NOT NULL,
    event_type     VARCHAR(50) NOT NULL,
    payload        JSONB NOT NULL,
    metadata       JSONB NOT NULL DEFAULT '{}',
    created_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (event_id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE event_store_default PARTITION OF event_store DEFAULT;
SELECT create_month_partitions('event_store', 3);

INSERT INTO event_store (seq, event_id, aggregate_id, aggregate_type, event_type, payload,
                         metadata, created_at)
OVERRIDING SYSTEM VALUE
SELECT seq, event_id, aggregate_id, aggregate_type, event_type, payload, metadata, created_at
  FROM event_store_whole;
SELECT setval(pg_get_serial_sequence('event_store', 'seq'),
              GREATEST((SELECT max(seq) FROM event_store), 1));
DROP TABLE event_store_whole;

CREATE INDEX event_store_aggregate_idx ON event_store (aggregate_id, seq);
CREATE INDEX event_store_created_at_idx ON event_store (created_at);

-- --- booking_history ------------------------------------------------------------------------

ALTER TABLE booking_history RENAME TO booking_history_whole;
ALTER INDEX booking_history_booking_id_idx RENAME TO booking_history_whole_booking_id_idx;
ALTER INDEX booking_history_changed_at_idx RENAME TO booking_history_whole_changed_at_idx;

CREATE TABLE booking_history (
    history_id      UUID NOT NULL DEFAULT gen_random_uuid(),
    booking_id      UUID NOT NULL REFERENCES bookings (booking_id) ON DELETE CASCADE,
    previous_status VARCHAR(20),
    new_status      VARCHAR(20) NOT NULL,
    changed_at      TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    changed_by      VARCHAR(100),
    change_reason   TEXT,
    metadata        JSONB,
    PRIMARY KEY (history_id, changed_at)
) PARTITION BY RANGE (changed_at);

CREATE TABLE booking_history_default PARTITION OF booking_history DEFAULT;
SELECT create_month_partitions('booking_history', 3);

INSERT INTO booking_history SELECT * FROM booking_history_whole;
DROP TABLE booking_history_whole;

CREATE INDEX booking_history_booking_id_idx ON booking_history (booking_id);
CREATE INDEX booking_history_changed_at_idx ON booking_history (changed_at);
