-- Analytics service (seed 004 §2.5 "Analytics Service Database"), fed by every event.
-- Departures from the seed, and why:
--   events come from every service, so event_type is the CloudEvents type (TEXT, not an
--   enum of three), the key is the CloudEvents id, terminals and users are kept by their
--   public ids (terminal code, user UUID: no service reads another's tables), and the
--   event's data replaces user_demographics;
--   partitions are months of UTC instants, created ahead by a job and on demand by
--   analytics_ensure_partition() for an event of any other month;
--   daily metrics are kept up to date by each event (see store.py), with the hourly counts
--   and the set of riders per terminal and day beside them, so that the peak hour and the
--   unique users stay exact; days and hours are local (TIKET_ANALYTICS_TIME_ZONE);
--   the route matrix and the booking figures are new tables.
-- Sums of money are NUMERIC(20,2): a sum of NUMERIC(15,2) amounts must not overflow.

CREATE TABLE analytics_events (
    event_id        UUID NOT NULL,           -- CloudEvents id (the inbox dedupes by it)
    event_type      TEXT NOT NULL,           -- CloudEvents type = routing key
    terminal_code   VARCHAR(3),              -- where it happened, when it names a terminal
    user_id         UUID,                    -- whose it is; NULL for system events
    data            JSONB NOT NULL,          -- the CloudEvents data as received
    event_timestamp TIMESTAMPTZ NOT NULL,    -- when it happened (see facts.py)
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A unique constraint of a partitioned table must include the partition key.
    PRIMARY KEY (event_id, event_timestamp)
) PARTITION BY RANGE (event_timestamp);

CREATE INDEX idx_analytics_event_type ON analytics_events (event_type, event_timestamp);
CREATE INDEX idx_analytics_terminal ON analytics_events (terminal_code, event_timestamp);
CREATE INDEX idx_analytics_user ON analytics_events (user_id, event_timestamp)
    WHERE user_id IS NOT NULL;
CREATE INDEX idx_analytics_data ON analytics_events USING GIN (data);

-- Creates the partition `name` over [lower, upper) (upper NULL = MAXVALUE) unless it
-- exists; true when it created it. Replicas and concurrent consumers may call it for the
-- same month at once: the advisory lock lets one create, the others then find it. The
-- re-check reads pg_inherits with the statement's fresh snapshot: to_regclass() would answer
-- from this backend's catalog cache, still "missing" from the first check.
CREATE FUNCTION analytics_ensure_partition(name TEXT, lower TIMESTAMPTZ, upper TIMESTAMPTZ)
RETURNS BOOLEAN AS $$
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN FALSE;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('analytics_events'), hashtext(name));
    IF EXISTS (SELECT FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'analytics_events'::regclass AND c.relname = name) THEN
        RETURN FALSE;
    END IF;
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF analytics_events FOR VALUES FROM (%L) TO (%s)',
        name, lower, coalesce(quote_literal(upper), 'MAXVALUE'));
    RETURN TRUE;
END;
$$ LANGUAGE plpgsql;

CREATE TABLE daily_terminal_metrics (
    metric_date         DATE NOT NULL,
    terminal_code       VARCHAR(3) NOT NULL,
    total_checkins      INTEGER NOT NULL DEFAULT 0,
    total_checkouts     INTEGER NOT NULL DEFAULT 0,   -- every exit tap, incomplete included
    unique_users        INTEGER NOT NULL DEFAULT 0,   -- = rows of daily_terminal_users
    peak_hour           INTEGER CHECK (peak_hour BETWEEN 0 AND 23),  -- NULL without taps
    busiest_hour_count  INTEGER NOT NULL DEFAULT 0,
    abandoned_journeys  INTEGER NOT NULL DEFAULT 0,   -- entered here, never exited
    incomplete_journeys INTEGER NOT NULL DEFAULT 0,   -- exited here without entry
    unfinished_fares    NUMERIC(20,2) NOT NULL DEFAULT 0,  -- charged for those two
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (metric_date, terminal_code)
);

-- The seed's idx_daily_metrics_date (metric_date DESC) is left out: the primary key leads
-- with metric_date and serves the same scans both ways.
CREATE INDEX idx_daily_metrics_terminal ON daily_terminal_metrics (terminal_code, metric_date DESC);

-- Taps per terminal, local day and local hour: the peak hour of a day, and peak hours over
-- any range of days and terminals.
CREATE TABLE terminal_hourly_taps (
    metric_date   DATE NOT NULL,
    terminal_code VARCHAR(3) NOT NULL,
    hour          SMALLINT NOT NULL CHECK (hour BETWEEN 0 AND 23),
    taps          INTEGER NOT NULL,
    PRIMARY KEY (metric_date, terminal_code, hour)
);

CREATE INDEX idx_hourly_taps_terminal ON terminal_hourly_taps (terminal_code, metric_date);

-- The riders seen at a terminal on a day: a rider's first tap there that day counts once.
CREATE TABLE daily_terminal_users (
    metric_date   DATE NOT NULL,
    terminal_code VARCHAR(3) NOT NULL,
    user_id       UUID NOT NULL,
    PRIMARY KEY (metric_date, terminal_code, user_id)
);

-- Completed journeys per local day of check-out and origin–destination pair.
CREATE TABLE daily_route_metrics (
    metric_date            DATE NOT NULL,
    origin_code            VARCHAR(3) NOT NULL,
    destination_code       VARCHAR(3) NOT NULL,
    trips                  INTEGER NOT NULL,
    revenue                NUMERIC(20,2) NOT NULL,   -- sum of the fares
    duration_minutes_total BIGINT NOT NULL,          -- over the trips with a duration
    timed_trips            INTEGER NOT NULL,
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (metric_date, origin_code, destination_code)
);

CREATE INDEX idx_route_metrics_origin ON daily_route_metrics (origin_code, metric_date);

-- Booking events per local day and type.
CREATE TABLE daily_booking_stats (
    metric_date DATE NOT NULL,
    event_type  TEXT NOT NULL,
    events      INTEGER NOT NULL,
    amount      NUMERIC(20,2) NOT NULL,   -- sum of data.amount where present
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (metric_date, event_type)
);
