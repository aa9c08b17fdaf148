-- ExportUsers reads in pages, each one statement continuing after the last row of the one
-- before: WHERE (updated_at, id) > (last updated_at, last id) ORDER BY updated_at, id. An index
-- on updated_at alone makes every page re-read all the rows tied on updated_at (one
-- transaction touching many users gives them all its now()); on (updated_at, id) a page starts
-- right after the last row. IF NOT EXISTS: on a large table, build it beforehand without
-- blocking writes (CREATE INDEX CONCURRENTLY idx_users_updated_at_id ON users (updated_at, id))
-- and this migration only drops the old index.
CREATE INDEX IF NOT EXISTS idx_users_updated_at_id ON users (updated_at, id);
DROP INDEX IF EXISTS idx_users_updated_at;
