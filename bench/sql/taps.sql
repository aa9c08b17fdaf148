-- One check-in + check-out pair of bench/taps.py in plain SQL: the statements the journey
-- service (services/journey/tap_store.py, store.py) and the user service (PlaceHold,
-- CaptureHold: services/user/store.py) send for one ride, in the same order, each on its own
-- as the services send them on autocommit connections. The benchmark runs
-- it on one database holding both schemas (the user service's, plus the journey migration),
-- so pgbench gives the ceiling of the database work a ride costs; Redis and the fare lookups
-- (in-process caches in the journey service) are not database work and are left out.
-- Run with -M prepared, -D clients=<clients> -D per=<riders per client>: like the service
-- benchmark's gates, each client rides only its own riders (bench_users(n, id, card_id)), so
-- no two ever hold one card's journey at once.
\set n 1 + :client_id + :clients * random(0, :per - 1)

SELECT gen_random_uuid() AS tap_in, gen_random_uuid() AS tap_out, gen_random_uuid() AS jid,
       b.id AS user_id, b.card_id
  FROM bench_users b WHERE b.n = :n \gset

-- CheckIn: the tap recorded, with the rider's active journey (tap_store.record_tap).
WITH inserted AS (
    INSERT INTO taps (tap_id, kind, card_id, terminal_code, gate_code, tapped_at, user_id,
                      journey_id)
    VALUES (:tap_in::uuid, 'checkin', :card_id::text, 'A', 'A-ENTRY-01', now(),
            :user_id::uuid, :jid::uuid)
    ON CONFLICT (tap_id) DO NOTHING RETURNING tap_id, kind, card_id, terminal_code, gate_code, tapped_at, user_id, journey_id, state, response, refusal_reason, refusal_message, created_at),
recorded AS (
    SELECT tap_id, kind, card_id, terminal_code, gate_code, tapped_at, user_id, journey_id, state, response, refusal_reason, refusal_message, created_at FROM inserted
    UNION ALL
    SELECT tap_id, kind, card_id, terminal_code, gate_code, tapped_at, user_id, journey_id, state, response, refusal_reason, refusal_message, created_at FROM taps WHERE tap_id = :tap_in::uuid AND NOT EXISTS (SELECT 1 FROM inserted))
SELECT tap_id, kind, card_id, terminal_code, gate_code, tapped_at, user_id, journey_id, state, response, refusal_reason, refusal_message, created_at,
       CASE WHEN true THEN (SELECT id FROM journey_history
                             WHERE user_id = :user_id::uuid AND status = 'active') END
  FROM recorded;

-- PlaceHold (user service): one statement (store.PLACE_HOLD) that locks the wallet, looks
-- for the reference, places the hold and writes its event.
WITH wallet AS (
    SELECT id, status, balance, held, updated_at FROM users
     WHERE id = :user_id::uuid FOR UPDATE
), existing AS (
    SELECT id, user_id, amount, final_amount, status, reference, reason, release_reason,
           expires_at, created_at, closed_at
      FROM holds WHERE reference = 'journey-' || :jid::text
), placed AS (
    INSERT INTO holds (id, user_id, amount, reference, reason, expires_at, created_at)
    SELECT gen_random_uuid(), id, 12000, 'journey-' || :jid::text,
           'Trip fare hold: check-in at Terminal Utara', now() + interval '3 hours', now()
      FROM wallet
     WHERE status = 'active' AND balance - held >= 12000
       AND NOT EXISTS (SELECT FROM existing)
        ON CONFLICT (reference) DO NOTHING
    RETURNING id, user_id, amount
), announced AS (
    INSERT INTO outbox (event_id, event_type, body, traceparent)
    SELECT e.id, 'wallet.hold_placed',
           jsonb_set(
               jsonb_build_object(
                   'specversion', '1.0', 'id', e.id, 'source', '/tiket/user',
                   'type', 'wallet.hold_placed', 'time', now(), 'subject', p.user_id::text,
                   'datacontenttype', 'application/json',
                   'data', jsonb_build_object(
                       'userId', p.user_id::text, 'holdId', p.id::text,
                       'reference', 'journey-' || :jid::text,
                       'amount', jsonb_build_object('currencyCode', 'IDR', 'units', '12000'),
                       'reason', 'Trip fare hold: check-in at Terminal Utara')),
               '{data,availableAfter}', money_json(w.balance - w.held - p.amount)),
           '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
      FROM wallet w, placed p, (SELECT gen_random_uuid() AS id) AS e
)
SELECT w.id AS user_id, w.status, w.balance, w.held, w.updated_at,
       EXISTS (SELECT FROM placed) AS placed,
       e.id AS h_id, e.user_id AS h_user_id, e.amount AS h_amount,
       e.final_amount AS h_final_amount, e.status AS h_status, e.reference AS h_reference,
       e.reason AS h_reason, e.release_reason AS h_release_reason,
       e.expires_at AS h_expires_at, e.created_at AS h_created_at, e.closed_at AS h_closed_at
  FROM wallet w LEFT JOIN existing e ON true;

-- CheckIn: the tap's answer, the journey and journey.checked_in (store.start_journey).
WITH answered AS (
    UPDATE taps SET state = 'done', response = decode(repeat('0a', 400), 'hex'),
           journey_id = :jid::uuid, updated_at = now()
     WHERE tap_id = :tap_in::uuid AND state = 'pending'
 RETURNING 1),
started AS (
    INSERT INTO journey_history
           (id, user_id, card_id, status, settlement, checkin_terminal_code,
            checkin_terminal_name, checkin_gate_code, checkin_time, checkout_terminal_code,
            checkout_terminal_name, checkout_gate_code, checkout_time, held_amount,
            fare_charged, pricing, close_reason, hold_reference, closing_tap_id, metadata,
            closed_at)
    SELECT :jid::uuid, :user_id::uuid, :card_id::text, 'active', 'none', 'A', 'Terminal Utara',
           'A-ENTRY-01', now(), NULL, NULL, NULL, NULL, 12000, NULL, NULL, NULL,
           'journey-' || :jid::text, NULL, '{}', NULL
      FROM answered
 RETURNING id, user_id, card_id, status, settlement, checkin_terminal_code, checkin_terminal_name, checkin_gate_code, checkin_time, checkout_terminal_code, checkout_terminal_name, checkout_gate_code, checkout_time, held_amount, fare_charged, journey_duration_minutes, pricing, close_reason, hold_reference, closing_tap_id, remaining_balance, metadata, created_at, closed_at),
announced AS (
    INSERT INTO outbox (event_id, event_type, body, traceparent)
    SELECT gen_random_uuid(), 'journey.checked_in',
           jsonb_build_object('specversion', '1.0', 'type', 'journey.checked_in',
                          'source', '/tiket/journey', 'subject', :user_id::text,
                          'data', jsonb_build_object('journeyId', :jid::text, 'cardId', :card_id::text,
                                                     'terminalName', 'Terminal Utara',
                                                     'heldAmount', jsonb_build_object('units', '12000'))),
           '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
      FROM started)
SELECT id, user_id, card_id, status, settlement, checkin_terminal_code, checkin_terminal_name, checkin_gate_code, checkin_time, checkout_terminal_code, checkout_terminal_name, checkout_gate_code, checkout_time, held_amount, fare_charged, journey_duration_minutes, pricing, close_reason, hold_reference, closing_tap_id, remaining_balance, metadata, created_at, closed_at FROM started;

-- CheckOut: the active journey claimed and the tap recorded, linked to it
-- (tap_store.record_checkout, priced from the active_trip hint).
WITH claimed AS (
    UPDATE journey_history
       SET status = 'completed', settlement = 'pending', fare_charged = 12000, pricing = 'fare',
           close_reason = NULL, checkout_terminal_code = 'E',
           checkout_terminal_name = 'Terminal Pusat', checkout_gate_code = 'E-EXIT-01',
           checkout_time = now(), closing_tap_id = :tap_out::uuid, metadata = metadata || '{}',
           closed_at = now(), updated_at = now()
     WHERE id = :jid::uuid AND user_id = :user_id::uuid AND status = 'active'
       AND NOT EXISTS (SELECT 1 FROM taps WHERE tap_id = :tap_out::uuid)
 RETURNING id, user_id, card_id, status, settlement, checkin_terminal_code, checkin_terminal_name, checkin_gate_code, checkin_time, checkout_terminal_code, checkout_terminal_name, checkout_gate_code, checkout_time, held_amount, fare_charged, journey_duration_minutes, pricing, close_reason, hold_reference, closing_tap_id, remaining_balance, metadata, created_at, closed_at),
inserted AS (
    INSERT INTO taps (tap_id, kind, card_id, terminal_code, gate_code, tapped_at, user_id,
                      journey_id)
    VALUES (:tap_out::uuid, 'checkout', :card_id::text, 'E', 'E-EXIT-01', now(),
            :user_id::uuid, (SELECT id FROM claimed))
    ON CONFLICT (tap_id) DO NOTHING RETURNING tap_id, kind, card_id, terminal_code, gate_code, tapped_at, user_id, journey_id, state, response, refusal_reason, refusal_message, created_at),
recorded AS (
    SELECT tap_id, kind, card_id, terminal_code, gate_code, tapped_at, user_id, journey_id, state, response, refusal_reason, refusal_message, created_at FROM inserted
    UNION ALL
    SELECT tap_id, kind, card_id, terminal_code, gate_code, tapped_at, user_id, journey_id, state, response, refusal_reason, refusal_message, created_at FROM taps WHERE tap_id = :tap_out::uuid AND NOT EXISTS (SELECT 1 FROM inserted))
SELECT r.*, c.* FROM recorded r LEFT JOIN claimed c ON true;

-- CaptureHold (user service): the hold read (unlocked), then one statement
-- (store.CAPTURE_HOLD) that locks the hold and its wallet, captures, debits and writes the event.
SELECT id AS hold_id, user_id AS hold_user, amount, status, reference, reason, expires_at,
       created_at
  FROM holds WHERE reference = 'journey-' || :jid::text \gset
WITH hold AS (
    SELECT id, user_id, amount, reference, reason FROM holds
     WHERE id = :hold_id::uuid AND status = 'held' AND expires_at > now() FOR UPDATE
), wallet AS (
    SELECT id, status, balance, held FROM users
     WHERE id = (SELECT user_id FROM hold) FOR UPDATE
), captured AS (
    UPDATE holds SET status = 'captured', final_amount = 12000, closed_at = now()
      FROM wallet
     WHERE holds.id = (SELECT id FROM hold)
    RETURNING holds.id, holds.user_id, holds.amount, holds.reference, holds.reason,
              holds.closed_at
), debited AS (
    INSERT INTO ledger_entries (user_id, kind, amount, balance_after, reference, hold_id,
                                description)
    SELECT user_id, 'capture', -12000, 0, reference, id, reason
      FROM captured
     WHERE 12000 > 0
    RETURNING id, user_id, kind, amount, balance_after, reference, idempotency_key, hold_id,
              description, created_at
), announced AS (
    INSERT INTO outbox (event_id, event_type, body, traceparent)
    SELECT e.id, 'wallet.hold_captured',
           jsonb_set(
               jsonb_build_object(
                   'specversion', '1.0', 'id', e.id, 'source', '/tiket/user',
                   'type', 'wallet.hold_captured', 'time', now(), 'subject', c.user_id::text,
                   'datacontenttype', 'application/json',
                   'data', jsonb_build_object(
                       'userId', c.user_id::text, 'holdId', c.id::text,
                       'reference', c.reference,
                       'amount', jsonb_build_object('currencyCode', 'IDR', 'units', '12000'),
                       'finalAmount', jsonb_build_object('currencyCode', 'IDR', 'units', '12000'),
                       'reason', c.reason)),
               '{data,availableAfter}', money_json(w.balance - 12000 - (w.held - c.amount))),
           '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
      FROM captured c, wallet w, (SELECT gen_random_uuid() AS id) AS e
)
SELECT c.closed_at AS captured_at, w.id AS w_user_id, w.status AS w_status,
       w.balance - 12000 AS w_balance, w.held - c.amount AS w_held,
       now() AS w_updated_at, d.*
  FROM captured c JOIN wallet w ON true LEFT JOIN debited d ON true;

-- CheckOut: settled, journey.checked_out and the tap's answer (store.settle).
WITH settled AS (
    UPDATE journey_history
       SET settlement = 'paid', remaining_balance = 0, metadata = metadata || '{}',
           updated_at = now()
     WHERE id = :jid::uuid AND settlement = 'pending' RETURNING id, user_id, card_id, status, settlement, checkin_terminal_code, checkin_terminal_name, checkin_gate_code, checkin_time, checkout_terminal_code, checkout_terminal_name, checkout_gate_code, checkout_time, held_amount, fare_charged, journey_duration_minutes, pricing, close_reason, hold_reference, closing_tap_id, remaining_balance, metadata, created_at, closed_at),
announced AS (
    INSERT INTO outbox (event_id, event_type, body, traceparent)
    SELECT gen_random_uuid(), 'journey.checked_out',
           jsonb_build_object('specversion', '1.0', 'type', 'journey.checked_out',
                          'source', '/tiket/journey', 'subject', :user_id::text,
                          'data', jsonb_build_object('journeyId', :jid::text, 'originName', 'Terminal Utara',
                                                     'destinationName', 'Terminal Pusat',
                                                     'fare', jsonb_build_object('units', '12000'))),
           '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
      FROM settled),
answered AS (
    UPDATE taps SET state = 'done', response = decode(repeat('0a', 400), 'hex'),
           refusal_reason = NULL, refusal_message = NULL, journey_id = :jid::uuid,
           updated_at = now()
     WHERE tap_id = :tap_out::uuid AND state = 'pending' AND EXISTS (SELECT 1 FROM settled))
SELECT id, user_id, card_id, status, settlement, checkin_terminal_code, checkin_terminal_name, checkin_gate_code, checkin_time, checkout_terminal_code, checkout_terminal_name, checkout_gate_code, checkout_time, held_amount, fare_charged, journey_duration_minutes, pricing, close_reason, hold_reference, closing_tap_id, remaining_balance, metadata, created_at, closed_at FROM settled;
