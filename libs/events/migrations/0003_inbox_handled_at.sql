-- The retention job (libs/events/retention.py) deletes inbox rows by age, oldest first.
CREATE INDEX inbox_handled_at_idx ON inbox (handled_at);
