-- ReserveSlot in plain SQL (bench/booking.py): RESERVE, the one statement the booking service
-- sends for a reservation (services/booking/reservation_store.py) on an autocommit
-- connection — the place taken by a conditional UPDATE, the reservation and its event store
-- row (ReservationCreated is not published), or nothing at all — with the service's
-- parameters written as pgbench expressions (bench/booking.py PGBENCH_PARAMS; the benchmark
-- warns when the two differ): ids from one random number per transaction, the slot from
-- bench_slots, the event texts bound per execution as the service binds them.
-- Run with -M prepared and
--   -D first=<n> -D last=<n>   the slots to pick from: bench_slots(n integer, id uuid), which
--                              the benchmark fills with the hot slot as n = 0 and the many
--                              slots as 1..N (first=1 last=N: distinct; first=0 last=0: hot)
--   -D payload=<json> -D metadata=<json>
--                              the event store payload and metadata of a reservation the
--                              service wrote (the benchmark copies them)
\set n random(:first, :last)
\set rid random(1, 9223372036854775806)

WITH taken AS (
    UPDATE slots
       SET remaining = remaining - 1,
           status = CASE WHEN remaining = 1 THEN 'booked' ELSE status END,
           version = version + 1
     WHERE slot_id = (SELECT id FROM bench_slots WHERE n = :n) AND status = 'available'
       AND remaining > 0 AND start_time > now()
       AND EXISTS (SELECT FROM clinics c WHERE c.clinic_id = slots.clinic_id AND c.is_active)
    RETURNING slot_id, clinic_id, service_id, remaining
), reserved AS (
    INSERT INTO reservations (reservation_id, user_id, pet_id, slot_id, service_id, clinic_id,
                              request_id, expires_at, lock_token)
    SELECT md5('reservation' || :rid)::uuid, md5('user' || :rid)::uuid,
           md5('pet' || :rid)::uuid, slot_id, service_id, clinic_id, 'pgbench-' || :rid,
           now() + interval '10 minutes', rpad(md5('lock' || :rid), 43, '-')
      FROM taken
    RETURNING reservation_id AS id, user_id, pet_id, slot_id, clinic_id, service_id, status,
              request_id, lock_token, expires_at, created_at, updated_at
), stored AS (
    INSERT INTO event_store (event_id, aggregate_id, aggregate_type, event_type, payload,
                             metadata)
    SELECT md5('event' || :rid)::uuid, md5('reservation' || :rid)::uuid, 'reservation',
           'ReservationCreated',
           jsonb_set(:payload::jsonb, '{slotRemaining}', to_jsonb(t.remaining)),
           :metadata::jsonb
      FROM taken t, reserved
)
SELECT r.*, NULL::uuid AS booking_id FROM reserved r;
