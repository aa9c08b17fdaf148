-- Recurring facility bookings (issue 15): a series is one BookFacilitySeries request, its
-- occurrences are ordinary facility_bookings rows that name it (series_id), so the exclusion
-- constraint, the audit log, the calendar and every other query treat them like any booking.
-- * The series row keeps what a retry must repeat (facility, first range, title, attendees,
--   rule, skip_conflicts) under UNIQUE (user_id, request_id), and the occurrences it skipped
--   ([{"start_time", "end_time", "local_start", "reason"}]), so a retry answers the first
--   result without booking anything twice.
-- * Occurrences carry no request_id of their own (the series' key is the series row's).
-- * facility_bookings_series_idx serves CancelFacilitySeries ("the occurrences of a series
--   from a time on") and a retry's read of the series' bookings.

CREATE TABLE facility_booking_series (
    series_id      UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    facility_id    UUID NOT NULL REFERENCES facilities (facility_id) ON DELETE RESTRICT,
    user_id        UUID NOT NULL,
    rrule          VARCHAR(500) NOT NULL,
    start_time     TIMESTAMPTZ NOT NULL,
    end_time       TIMESTAMPTZ NOT NULL,
    title          VARCHAR(255) NOT NULL,
    attendee_count INTEGER NOT NULL,
    skip_conflicts BOOLEAN NOT NULL,
    skipped        JSONB NOT NULL DEFAULT '[]',
    request_id     VARCHAR(100) NOT NULL,
    created_by     VARCHAR(100) NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CONSTRAINT series_request_unique UNIQUE (user_id, request_id),
    CONSTRAINT series_time_valid CHECK (end_time > start_time)
);

ALTER TABLE facility_bookings
    ADD COLUMN series_id UUID REFERENCES facility_booking_series (series_id) ON DELETE RESTRICT;

CREATE INDEX facility_bookings_series_idx ON facility_bookings (series_id, start_time)
    WHERE series_id IS NOT NULL;
