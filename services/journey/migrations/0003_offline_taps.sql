-- Issue 16: a gate's offline taps (SyncOfflineTaps), placed on the card's timeline by
-- tapped_at (services/journey/timeline.py states the rules).

-- An offline tap is recorded in the same table as the online ones (one idempotency key for
-- both), answered at once ('done', response = the serialized OfflineTapResult first given).
ALTER TABLE taps ADD COLUMN offline BOOLEAN NOT NULL DEFAULT false;
-- What the gate reckoned offline (OfflineTap.offline_amount), for the price comparison.
ALTER TABLE taps ADD COLUMN offline_amount NUMERIC(15,2);
-- A card's timeline: its taps by time.
CREATE INDEX idx_taps_user_time ON taps (user_id, tapped_at);

-- A journey the timeline no longer makes (an incomplete journey a late check-in completes,
-- an entry that turned out to repeat an earlier one) is cancelled: fare 0, what it took
-- refunded. It keeps its entry and exit as they were, so 'cancelled' is exempt from the
-- entry/exit shape rules of the other statuses.
ALTER TABLE journey_history DROP CONSTRAINT check_entry_unless_incomplete;
ALTER TABLE journey_history ADD CONSTRAINT check_entry_unless_incomplete
    CHECK ((status = 'cancelled' OR (status = 'incomplete') = (checkin_time IS NULL))
       AND (checkin_time IS NULL) = (checkin_terminal_code IS NULL)
       AND (checkin_time IS NULL) = (held_amount IS NULL)
       AND (checkin_time IS NULL) = (hold_reference IS NULL));
ALTER TABLE journey_history DROP CONSTRAINT check_exit_when_exited;
ALTER TABLE journey_history ADD CONSTRAINT check_exit_when_exited
    CHECK ((status = 'cancelled'
            OR (status IN ('completed', 'incomplete')) = (checkout_time IS NOT NULL))
       AND (checkout_time IS NULL) = (checkout_terminal_code IS NULL));

-- A re-pricing of a journey already paid: the difference, to refund (amount < 0) or to
-- charge (amount > 0) under the journey's reference. Written with the journey's new price
-- in one transaction, then moved on the wallet (idempotent by the row's id); a crash in
-- between leaves it pending for the sweeper. 'unpaid': the wallet refused the charge (a debt).
CREATE TYPE adjustment_state AS ENUM ('pending', 'done', 'unpaid');
CREATE TABLE journey_adjustments (
    id            UUID PRIMARY KEY,
    journey_id    UUID NOT NULL REFERENCES journey_history (id),
    user_id       UUID NOT NULL,
    amount        NUMERIC(10,2) NOT NULL CHECK (amount <> 0),
    reason        VARCHAR(255) NOT NULL,
    state         adjustment_state NOT NULL DEFAULT 'pending',
    unpaid_reason TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_adjustments_journey ON journey_adjustments (journey_id);
CREATE INDEX idx_adjustments_pending ON journey_adjustments (user_id, updated_at)
    WHERE state = 'pending';
