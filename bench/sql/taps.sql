-- One check-in + check-out pair of bench/taps.py in plain SQL: the transactions the journey
-- service (services/journey/checkin.py, checkout.py, closings.py, store.py) and the user
-- service (PlaceHold, GetWallet, CaptureHold: services/user/store.py) send for one ride,
-- in the same order, with what the services pipeline pipelined here too. The benchmark runs
-- it on one database holding both schemas (the user service's, plus the journey migration),
-- so pgbench gives the ceiling of the database work a ride costs; Redis and the fare lookups
-- (in-process caches in the journey service) are not database work and are left out.
-- Run with -M prepared, -D clients=<clients> -D per=<riders per client>: like the service
-- benchmark's gates, each client rides only its own riders (bench_users(n, id, card_id)), so
-- no two ever hold one card's journey at once.
\set n 1 + :client_id + :clients * random(0, :per - 1)

-- CheckIn: the tap's first answer? (a read), then the tap recorded (asynchronous commit)
-- with the rider's active journey.
SELECT gen_random_uuid() AS tap_in, gen_random_uuid() AS tap_out, gen_random_uuid() AS jid,
       b.id AS user_id, b.card_id
  FROM bench_users b WHERE b.n = :n \gset
SELECT tap_id, state FROM taps WHERE tap_id = :tap_in::uuid;
BEGIN;
SET LOCAL synchronous_commit = off;
INSERT INTO taps (tap_id, kind, card_id, terminal_code, gate_code, tapped_at, user_id,
                  journey_id)
VALUES (:tap_in::uuid, 'checkin', :card_id::text, 'A', 'A-ENTRY-01', now(), :user_id::uuid,
        :jid::uuid)
ON CONFLICT (tap_id) DO NOTHING RETURNING tap_id, state, tapped_at;
SELECT id, status FROM journey_history WHERE user_id = :user_id::uuid AND status = 'active';
COMMIT;

-- PlaceHold (user service): lock the wallet and look for the reference, then write.
BEGIN;
SELECT u.id, u.status, u.balance, u.held, u.updated_at, now() AS now, h.id AS h_id
  FROM users u LEFT JOIN holds h ON h.reference = 'journey-' || :jid::text
 WHERE u.id = :user_id::uuid FOR UPDATE OF u \gset
\startpipeline
INSERT INTO holds (id, user_id, amount, reference, reason, expires_at, created_at)
VALUES (gen_random_uuid(), :user_id::uuid, 12000, 'journey-' || :jid::text,
        'Trip fare hold: check-in at Terminal Utara', :now::timestamptz + interval '3 hours',
        :now::timestamptz);
INSERT INTO outbox (event_id, event_type, body, traceparent)
VALUES (gen_random_uuid(), 'wallet.hold_placed',
        jsonb_build_object('specversion', '1.0', 'type', 'wallet.hold_placed',
                           'source', '/tiket/user', 'subject', :user_id::text,
                           'data', jsonb_build_object('userId', :user_id::text,
                                                      'reference', 'journey-' || :jid::text,
                                                      'amount', jsonb_build_object('units', '12000'))),
        '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01');
COMMIT;
\endpipeline

-- GetWallet (user service): the available balance for the gate's answer.
SELECT id, status, balance, held, updated_at FROM users WHERE id = :user_id::uuid;

-- CheckIn: the journey, the tap's answer and journey.checked_in in one transaction.
BEGIN;
INSERT INTO journey_history
       (id, user_id, card_id, status, settlement, checkin_terminal_code, checkin_terminal_name,
        checkin_gate_code, checkin_time, held_amount, hold_reference, metadata)
VALUES (:jid::uuid, :user_id::uuid, :card_id::text, 'active', 'none', 'A', 'Terminal Utara',
        'A-ENTRY-01', now(), 12000, 'journey-' || :jid::text, '{}')
ON CONFLICT (id) DO NOTHING RETURNING id, status, checkin_time;
\startpipeline
UPDATE taps SET state = 'done', response = decode(repeat('0a', 400), 'hex'), journey_id = :jid::uuid,
       updated_at = now()
 WHERE tap_id = :tap_in::uuid AND state = 'pending' RETURNING 1;
INSERT INTO outbox (event_id, event_type, body, traceparent)
VALUES (gen_random_uuid(), 'journey.checked_in',
        jsonb_build_object('specversion', '1.0', 'type', 'journey.checked_in',
                           'source', '/tiket/journey', 'subject', :user_id::text,
                           'data', jsonb_build_object('journeyId', :jid::text, 'cardId', :card_id::text,
                                                      'terminalName', 'Terminal Utara',
                                                      'heldAmount', jsonb_build_object('units', '12000'))),
        '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01');
COMMIT;
\endpipeline

-- CheckOut: the tap's first answer? then the tap recorded and the active journey claimed.
SELECT tap_id, state FROM taps WHERE tap_id = :tap_out::uuid;
BEGIN;
INSERT INTO taps (tap_id, kind, card_id, terminal_code, gate_code, tapped_at, user_id)
VALUES (:tap_out::uuid, 'checkout', :card_id::text, 'E', 'E-EXIT-01', now(), :user_id::uuid)
ON CONFLICT (tap_id) DO NOTHING RETURNING tap_id, state, tapped_at;
SELECT id, checkin_terminal_code, checkin_time, held_amount FROM journey_history
 WHERE user_id = :user_id::uuid AND status = 'active' FOR UPDATE;
UPDATE journey_history
   SET status = 'completed', settlement = 'pending', fare_charged = 12000, pricing = 'fare',
       checkout_terminal_code = 'E', checkout_terminal_name = 'Terminal Pusat',
       checkout_gate_code = 'E-EXIT-01', checkout_time = now(), closing_tap_id = :tap_out::uuid,
       metadata = metadata || '{}', closed_at = now(), updated_at = now()
 WHERE id = :jid::uuid AND status = 'active' RETURNING id, journey_duration_minutes;
\startpipeline
UPDATE taps SET journey_id = :jid::uuid, updated_at = now() WHERE tap_id = :tap_out::uuid;
COMMIT;
\endpipeline

-- CaptureHold (user service): lock the hold, then the writes and the wallet after.
BEGIN;
SELECT now() AS now, h.id AS hold_id FROM holds h
 WHERE h.reference = 'journey-' || :jid::text FOR UPDATE \gset
\startpipeline
UPDATE holds SET status = 'captured', final_amount = 12000, closed_at = :now::timestamptz
 WHERE id = :hold_id::uuid;
INSERT INTO ledger_entries
       (user_id, kind, amount, balance_after, reference, idempotency_key, hold_id, description)
VALUES (:user_id::uuid, 'capture', -12000, 0, 'journey-' || :jid::text, NULL, :hold_id::uuid,
        'Trip fare hold: check-in at Terminal Utara')
RETURNING id, balance_after;
SELECT id, status, balance, held, updated_at FROM users WHERE id = :user_id::uuid;
\endpipeline
\startpipeline
INSERT INTO outbox (event_id, event_type, body, traceparent)
VALUES (gen_random_uuid(), 'wallet.hold_captured',
        jsonb_build_object('specversion', '1.0', 'type', 'wallet.hold_captured',
                           'source', '/tiket/user', 'subject', :user_id::text,
                           'data', jsonb_build_object('userId', :user_id::text,
                                                      'reference', 'journey-' || :jid::text,
                                                      'finalAmount', jsonb_build_object('units', '12000'))),
        '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01');
COMMIT;
\endpipeline

-- CheckOut: settled, journey.checked_out and the tap's answer in one transaction.
BEGIN;
UPDATE journey_history SET settlement = 'paid', remaining_balance = 0,
       metadata = metadata || '{}', updated_at = now()
 WHERE id = :jid::uuid AND settlement = 'pending' RETURNING id, settlement;
\startpipeline
INSERT INTO outbox (event_id, event_type, body, traceparent)
VALUES (gen_random_uuid(), 'journey.checked_out',
        jsonb_build_object('specversion', '1.0', 'type', 'journey.checked_out',
                           'source', '/tiket/journey', 'subject', :user_id::text,
                           'data', jsonb_build_object('journeyId', :jid::text, 'originName', 'Terminal Utara',
                                                      'destinationName', 'Terminal Pusat',
                                                      'fare', jsonb_build_object('units', '12000'))),
        '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01');
UPDATE taps SET state = 'done', response = decode(repeat('0a', 400), 'hex'), journey_id = :jid::uuid,
       updated_at = now()
 WHERE tap_id = :tap_out::uuid AND state = 'pending' RETURNING 1;
COMMIT;
\endpipeline
