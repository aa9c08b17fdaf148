-- Seed 001: riders are reminded of a confirmed visit 24 hours before it. reminded_at marks a
-- booking reminded, so each is reminded once, by one replica's sweeper (SKIP LOCKED).
ALTER TABLE bookings ADD COLUMN reminded_at TIMESTAMPTZ;

-- The sweeper's scan: slots starting soon, and their confirmed bookings not yet reminded.
CREATE INDEX slots_start_time_idx ON slots (start_time);
CREATE INDEX bookings_to_remind_idx ON bookings (slot_id)
    WHERE status = 'confirmed' AND reminded_at IS NULL;
