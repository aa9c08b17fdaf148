-- Terminal & fare service (seed 004 §2.2). Differences from the seed, and why:
-- * balance_holds and hold_status_enum are not here: holds live in the user service's
--   database, atomic with the balance they reserve (ARCHITECTURE.md "Concurrency and money").
-- * fares are effective-dated versions: `effective` is the range [effective_from,
--   effective_until) derived from the seed's two columns, and an exclusion constraint makes
--   two active versions of one pair overlapping in time impossible, whatever the code does.
--   is_active = false marks a scheduled version replaced before it came into force (kept
--   for the audit trail, ignored by lookups and by the constraint).
-- * the seed's idx_terminals_code is the index of the UNIQUE constraint on code.

CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TYPE gate_type AS ENUM ('entry', 'exit', 'bidirectional');
CREATE TYPE gate_status AS ENUM ('online', 'offline', 'maintenance', 'error');

CREATE TABLE terminals (
    id          SERIAL PRIMARY KEY,
    name        VARCHAR(100) NOT NULL,
    code        VARCHAR(10) UNIQUE NOT NULL,
    location    TEXT,
    latitude    NUMERIC(10,8),
    longitude   NUMERIC(11,8),
    is_active   BOOLEAN NOT NULL DEFAULT true,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),

    CONSTRAINT check_terminal_code CHECK (code ~ '^[A-Z]{1,3}$'),
    CONSTRAINT check_name_present CHECK (length(btrim(name)) > 0),
    CONSTRAINT check_latitude CHECK (latitude BETWEEN -90 AND 90),
    CONSTRAINT check_longitude CHECK (longitude BETWEEN -180 AND 180),
    CONSTRAINT check_coordinates_together CHECK ((latitude IS NULL) = (longitude IS NULL))
);

CREATE INDEX idx_terminals_active ON terminals (is_active);

CREATE TABLE gates (
    id              BIGSERIAL PRIMARY KEY,
    terminal_id     INTEGER NOT NULL REFERENCES terminals (id) ON DELETE CASCADE,
    gate_code       VARCHAR(20) NOT NULL,
    gate_type       gate_type NOT NULL,
    status          gate_status NOT NULL DEFAULT 'online',
    last_heartbeat  TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),

    CONSTRAINT unique_gate_per_terminal UNIQUE (terminal_id, gate_code),
    CONSTRAINT check_gate_code CHECK (gate_code ~ '^[A-Z0-9][A-Z0-9-]{0,19}$')
);

CREATE INDEX idx_gates_terminal_status ON gates (terminal_id, status);
-- The sweeper's scan for online gates whose heartbeat stopped.
CREATE INDEX idx_gates_heartbeat ON gates (last_heartbeat) WHERE status = 'online';

CREATE TABLE fares (
    id                      BIGSERIAL PRIMARY KEY,
    origin_terminal_id      INTEGER NOT NULL REFERENCES terminals (id) ON DELETE CASCADE,
    destination_terminal_id INTEGER NOT NULL REFERENCES terminals (id) ON DELETE CASCADE,
    price                   NUMERIC(10,2) NOT NULL,
    currency                CHAR(3) NOT NULL DEFAULT 'IDR',
    is_active               BOOLEAN NOT NULL DEFAULT true,
    effective_from          TIMESTAMPTZ NOT NULL DEFAULT now(),
    effective_until         TIMESTAMPTZ,
    effective               TSTZRANGE NOT NULL
                            GENERATED ALWAYS AS (tstzrange(effective_from, effective_until, '[)'))
                            STORED,
    -- The version in force at effective_from when this one was set (closed or replaced).
    replaces_id             BIGINT REFERENCES fares (id),
    source                  VARCHAR(20) NOT NULL DEFAULT 'api',
    request_id              VARCHAR(100) UNIQUE,
    created_by              VARCHAR(100),
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at              TIMESTAMPTZ NOT NULL DEFAULT now(),

    CONSTRAINT check_price_positive CHECK (price >= 0),
    CONSTRAINT check_different_terminals CHECK (origin_terminal_id != destination_terminal_id),
    CONSTRAINT check_effective_period
        CHECK (effective_until IS NULL OR effective_until > effective_from),
    CONSTRAINT no_overlapping_fare_versions EXCLUDE USING gist (
        origin_terminal_id WITH =,
        destination_terminal_id WITH =,
        effective WITH &&
    ) WHERE (is_active)
);

-- A pair's versions in time order (GetFare's load, SetFare's lock-and-read).
CREATE INDEX idx_fares_route ON fares (origin_terminal_id, destination_terminal_id, effective_from);
-- The active versions from one origin (GetMaxFare, the gates' snapshot).
CREATE INDEX idx_fares_active ON fares (origin_terminal_id, effective_from) WHERE is_active;
CREATE INDEX idx_fares_dates ON fares (effective_from, effective_until);
