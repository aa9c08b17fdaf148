-- Journey service (seed 004 §2.3 "Journey Service Database", its fail-safe mechanism, and
-- ARCHITECTURE.md "Concurrency and money").
-- Departures from the seed, and why:
--   ids are UUIDs (ARCHITECTURE "ids"), derived from the tap that made the journey;
--   terminals are kept by code (the fare service's public id) and name (as it was then);
--   'incomplete' (an exit without an entry) joins the status enum, and such a journey has no
--   check-in, so checkin_terminal/checkin_time are required for every other status only;
--   `settlement` tracks the money of a closed journey apart from what happened to the trip:
--   a journey is closed in the database first, then the wallet is asked, so a crash in
--   between leaves a record of what to finish.

CREATE TYPE journey_status_enum AS ENUM ('active', 'completed', 'cancelled', 'abandoned', 'incomplete');
CREATE TYPE settlement_status AS ENUM ('none', 'pending', 'paid', 'unpaid');
CREATE TYPE tap_kind AS ENUM ('checkin', 'checkout');
CREATE TYPE tap_state AS ENUM ('pending', 'done', 'refused', 'expired');

CREATE TABLE journey_history (
    id                       UUID PRIMARY KEY,
    user_id                  UUID NOT NULL,         -- external reference (user service)
    card_id                  VARCHAR(20) NOT NULL,
    checkin_terminal_code    VARCHAR(3),            -- external reference (fare service)
    checkin_terminal_name    VARCHAR(100),
    checkin_gate_code        VARCHAR(20),
    checkin_time             TIMESTAMPTZ,
    checkout_terminal_code   VARCHAR(3),
    checkout_terminal_name   VARCHAR(100),
    checkout_gate_code       VARCHAR(20),
    checkout_time            TIMESTAMPTZ,
    held_amount              NUMERIC(10,2),         -- the maximum fare held at check-in
    fare_charged             NUMERIC(10,2),         -- the price of the journey, once closed
    journey_duration_minutes INTEGER,               -- set by the trigger below
    status                   journey_status_enum NOT NULL DEFAULT 'active',
    settlement               settlement_status NOT NULL DEFAULT 'none',
    pricing                  VARCHAR(30),
    close_reason             VARCHAR(255),
    hold_reference           VARCHAR(100) UNIQUE,
    closing_tap_id           UUID UNIQUE,           -- the check-out tap that closed it
    remaining_balance        NUMERIC(15,2),         -- available balance after the fare
    metadata                 JSONB NOT NULL DEFAULT '{}',
    started_at               TIMESTAMPTZ GENERATED ALWAYS AS (coalesce(checkin_time, checkout_time)) STORED,
    created_at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    closed_at                TIMESTAMPTZ,

    CONSTRAINT check_checkout_after_checkin
        CHECK (checkout_time IS NULL OR checkout_time > checkin_time),
    CONSTRAINT check_entry_unless_incomplete
        CHECK ((status = 'incomplete') = (checkin_time IS NULL)
           AND (checkin_time IS NULL) = (checkin_terminal_code IS NULL)
           AND (checkin_time IS NULL) = (held_amount IS NULL)
           AND (checkin_time IS NULL) = (hold_reference IS NULL)),
    CONSTRAINT check_exit_when_exited
        CHECK ((status IN ('completed', 'incomplete')) = (checkout_time IS NOT NULL)
           AND (checkout_time IS NULL) = (checkout_terminal_code IS NULL)),
    CONSTRAINT check_settlement_of_status
        CHECK ((status = 'active') = (settlement = 'none')),
    CONSTRAINT check_closed_has_price
        CHECK ((status = 'active') = (fare_charged IS NULL)
           AND (status = 'active') = (closed_at IS NULL)
           AND (status = 'active') = (pricing IS NULL)),
    CONSTRAINT check_amounts
        CHECK ((held_amount IS NULL OR held_amount > 0)
           AND (fare_charged IS NULL OR fare_charged >= 0)),
    CONSTRAINT check_paid_has_balance
        CHECK ((settlement = 'paid') = (remaining_balance IS NOT NULL))
);

-- Seed 004's duration trigger: ceil(minutes) between check-in and check-out.
CREATE OR REPLACE FUNCTION calculate_journey_duration()
RETURNS TRIGGER AS $$
BEGIN
    IF NEW.checkout_time IS NOT NULL AND NEW.checkin_time IS NOT NULL THEN
        NEW.journey_duration_minutes := CEIL(EXTRACT(EPOCH FROM (NEW.checkout_time - NEW.checkin_time)) / 60);
    ELSE
        NEW.journey_duration_minutes := NULL;
    END IF;

    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

-- (The seed defines the function but never attaches it.)
CREATE TRIGGER journey_duration BEFORE INSERT OR UPDATE OF checkin_time, checkout_time
    ON journey_history FOR EACH ROW EXECUTE FUNCTION calculate_journey_duration();

-- Seed 004's indexes.
CREATE INDEX idx_journey_user_status ON journey_history (user_id, status);
CREATE INDEX idx_journey_terminals ON journey_history (checkin_terminal_code, checkout_terminal_code);
CREATE INDEX idx_journey_date ON journey_history (checkin_time DESC);

-- One active journey per user: the database decides, whatever a cache or a race says.
CREATE UNIQUE INDEX one_active_journey_per_user ON journey_history (user_id) WHERE status = 'active';
-- ListJourneys: a rider's own, newest first; operators by terminal and time range.
CREATE INDEX idx_journey_user_started ON journey_history (user_id, started_at DESC, id DESC);
CREATE INDEX idx_journey_started ON journey_history (started_at DESC, id DESC);
CREATE INDEX idx_journey_exit_started ON journey_history (checkout_terminal_code, started_at DESC);
CREATE INDEX idx_journey_entry_started ON journey_history (checkin_terminal_code, started_at DESC);
-- Sweepers: journeys open too long, closings whose money is unconfirmed.
CREATE INDEX idx_journey_active_created ON journey_history (created_at) WHERE status = 'active';
CREATE INDEX idx_journey_settling ON journey_history (updated_at) WHERE settlement = 'pending';

-- Every tap, recorded before the wallet is touched: the idempotency key of CheckIn and
-- CheckOut, and the first answer given, returned again to any retry.
CREATE TABLE taps (
    tap_id          UUID PRIMARY KEY,
    kind            tap_kind NOT NULL,
    card_id         VARCHAR(20) NOT NULL,
    terminal_code   VARCHAR(3) NOT NULL,
    gate_code       VARCHAR(20) NOT NULL,
    tapped_at       TIMESTAMPTZ NOT NULL,
    user_id         UUID NOT NULL,
    -- check-in: the journey it starts; check-out: the journey it closed (once claimed).
    journey_id      UUID,
    state           tap_state NOT NULL DEFAULT 'pending',
    response        BYTEA,          -- the serialized CheckInResponse / CheckOutResponse
    refusal_reason  VARCHAR(50),    -- google.rpc.ErrorInfo.reason of a refusal
    refusal_message TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),

    CONSTRAINT check_done_has_response CHECK ((state = 'done') = (response IS NOT NULL)),
    CONSTRAINT check_refusal_has_reason
        CHECK ((state IN ('refused', 'expired')) = (refusal_reason IS NOT NULL)),
    CONSTRAINT check_checkin_has_journey CHECK (kind = 'checkout' OR journey_id IS NOT NULL)
);

CREATE INDEX idx_taps_pending ON taps (created_at) WHERE state = 'pending';
