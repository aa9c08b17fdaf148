-- Issue 13.
-- Anti-passback: a tap refused as a repeat of the card's check-in or check-out keeps the
-- journey it repeats (a serialized tiket.journey.v1.Journey), given again with the refusal
-- to every retry of the tap.
ALTER TABLE taps ADD COLUMN refusal_detail BYTEA;
-- A check-in tap answered without its journey (expired by the sweeper, refused, or answered
-- by another attempt) after its hold may have been placed: the hold is released after the
-- answer is written, and this says the release is not confirmed yet (the sweeper retries it).
ALTER TABLE taps ADD COLUMN release_owed BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX idx_taps_release_owed ON taps (updated_at) WHERE release_owed;
