-- BookFacility in plain SQL (bench/facility.py): the booking INSERT of the facility service
-- (services/booking/facilities/store.py insert_booking, the statement booking_no_overlap
-- guards) with the service's eleven parameters written as pgbench expressions: ids from one
-- random number per transaction, the facility from bench_facilities, a range of 1..4 quarter
-- hours drawn as the benchmark's gRPC workers draw it.
-- One difference: `ON CONFLICT DO NOTHING` without a target, so that a range the exclusion
-- constraint refuses returns no row instead of an error (pgbench aborts a client on any
-- error; the service catches the ExclusionViolation in a savepoint and answers TIME_CONFLICT).
-- The arbiter is then both booking_request_unique (the service's target) and
-- booking_no_overlap; the benchmark counts the rows written as the bookings made.
-- Run with -M prepared and
--   -D first=<n> -D last=<n>   the facilities to pick from: bench_facilities(n, id)
--   -D base=<epoch s>          local midnight of the first day (a 15-minute boundary)
--   -D days=<n>                days to pick from
--   -D qfirst=<n> -D qlast=<n> the first quarter hours of a day a range may start at
--   -D title=… -D description=… -D url=… -D created_by=…
--                              the texts the benchmark's BookFacility requests carry, bound
--                              per execution as the service binds them
\set n random(:first, :last)
\set rid random(1, 9223372036854775806)
\set start :base + 86400 * random(0, :days - 1) + 900 * random(:qfirst, :qlast)
\set finish :start + 900 * random(1, 4)

INSERT INTO facility_bookings (facility_id, user_id, start_time, end_time, title,
       description, attendee_count, external_meeting_url, status, request_id,
       created_by)
VALUES ((SELECT id FROM bench_facilities WHERE n = :n), md5('user' || :rid)::uuid,
        to_timestamp(:start), to_timestamp(:finish), :title, :description, 5, :url,
        'confirmed', 'pgbench-' || :rid, :created_by)
ON CONFLICT DO NOTHING RETURNING booking_id AS id, facility_id, user_id, start_time, end_time,
       title, description, attendee_count, external_meeting_url, status, created_by, created_at,
       updated_at, request_id, cancelled_at, cancelled_by, cancellation_reason, decided_at,
       decided_by, decision_reason;
