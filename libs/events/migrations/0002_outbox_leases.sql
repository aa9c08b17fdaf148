-- The relay leases the rows it publishes instead of holding a transaction open across the
-- publish (libs/events/relay.py): claimed_until is when the lease ends, NULL when none.
ALTER TABLE outbox ADD COLUMN claimed_until TIMESTAMPTZ;

-- The relay claims the oldest rows of the first index, whose predicate is exactly the claim's
-- WHERE: with a "lease ended" test in the claim instead, the planner estimates fewer rows and
-- switches to a bitmap scan, which visits every row ever claimed until the next vacuum
-- (an index scan skips them once it has seen them dead). The second index finds the leases
-- of relays that died.
DROP INDEX outbox_unsent_idx;
CREATE INDEX outbox_unclaimed_idx ON outbox (seq) WHERE sent_at IS NULL AND claimed_until IS NULL;
CREATE INDEX outbox_claimed_idx ON outbox (claimed_until)
    WHERE sent_at IS NULL AND claimed_until IS NOT NULL;
