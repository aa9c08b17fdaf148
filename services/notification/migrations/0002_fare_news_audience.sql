-- fare.updated goes, by default, to the riders who travelled its pair in the last 30 days
-- (seed 004 tells riders "… efektif besok"), learnt from the journey.checked_out events the
-- service consumes anyway: one row per rider and pair, the last time they travelled it.
-- Rows older than that window are deleted by a job, so the table stays small.
CREATE TABLE travelled_pairs (
    origin_code       VARCHAR(3) NOT NULL,   -- external reference (fare service)
    destination_code  VARCHAR(3) NOT NULL,
    user_id           UUID NOT NULL,         -- external reference (user service)
    last_travelled_at TIMESTAMPTZ NOT NULL,

    -- The fan-out reads a pair's riders in user id order, a chunk at a time.
    PRIMARY KEY (origin_code, destination_code, user_id)
);

CREATE INDEX idx_travelled_pairs_last ON travelled_pairs (last_travelled_at);

-- Opting out of the news about travelled pairs; fare_updates (opt-in, every pair) stays.
ALTER TABLE preferences ADD COLUMN travelled_fare_updates BOOLEAN NOT NULL DEFAULT true;
