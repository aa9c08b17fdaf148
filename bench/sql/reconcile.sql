-- One ride reconciled offline by bench/reconcile.py, in plain SQL: the statements the journey
-- service (services/journey/reconcile.py, reconcile_store.py, closings.py, store.py) and the
-- user service (CaptureHold's lookup, Charge, GetWallet: services/user/app.py, store.py) send
-- to place a check-in, then a check-out, each the only new tap of its card in its batch, and
-- to charge the trip (a journey started offline has no hold), with the events each step
-- writes (journey.checked_in of the offline entry, wallet.charged, journey.checked_out).
-- Autocommit statements as the services send them; the placement itself is one transaction.
-- Run on one database holding both schemas (bench_users(n, id, card_id) names the riders),
-- -M prepared, -D clients=<clients> -D per=<riders per client>: each client reconciles only
-- its own riders.
\set n 1 + :client_id + :clients * random(0, :per - 1)

SELECT gen_random_uuid() AS tap_in, gen_random_uuid() AS tap_out, gen_random_uuid() AS jid,
       b.id AS user_id, b.card_id, clock_timestamp() AS t_in,
       clock_timestamp() + interval '1 millisecond' AS t_out
  FROM bench_users b WHERE b.n = :n \gset

-- === the check-in ===================================================================
-- step 1: nothing unsettled on the card (reconcile.finish)
SELECT id, user_id, card_id, status, settlement, checkin_terminal_code, checkin_terminal_name, checkin_gate_code, checkin_time, checkout_terminal_code, checkout_terminal_name, checkout_gate_code, checkout_time, held_amount, fare_charged, journey_duration_minutes, pricing, close_reason, hold_reference, closing_tap_id, remaining_balance, metadata, created_at, closed_at
  FROM journey_history WHERE user_id = :user_id::uuid AND settlement = 'pending';
SELECT id, journey_id, user_id, amount, reason FROM journey_adjustments
 WHERE state = 'pending' AND (:user_id::uuid IS NULL OR user_id = :user_id::uuid)
   AND updated_at <= now() - interval '0 seconds' ORDER BY updated_at LIMIT 200;
-- step 2: the scope, read to learn the prices (reconcile.Reconciler._scope)
SELECT tap_id, kind, card_id, terminal_code, gate_code, tapped_at, user_id, journey_id, state, response, refusal_reason, refusal_message, created_at, refusal_detail, release_owed, offline, offline_amount
  FROM taps WHERE tap_id = ANY(ARRAY[:tap_in::uuid]);
SELECT coalesce(max(checkin_time), :t_in::timestamptz) AS since FROM journey_history
 WHERE user_id = :user_id::uuid AND checkin_time < :t_in::timestamptz AND status <> 'cancelled' \gset
SELECT tap_id, kind, card_id, terminal_code, gate_code, tapped_at, user_id, journey_id, state, response, refusal_reason, refusal_message, created_at, refusal_detail, release_owed, offline, offline_amount
  FROM taps t WHERE user_id = :user_id::uuid AND tapped_at >= :since::timestamptz
   AND (state = 'done' OR EXISTS (SELECT 1 FROM journey_history j WHERE j.closing_tap_id = t.tap_id));
SELECT id, user_id, card_id, status, settlement, checkin_terminal_code, checkin_terminal_name, checkin_gate_code, checkin_time, checkout_terminal_code, checkout_terminal_name, checkout_gate_code, checkout_time, held_amount, fare_charged, journey_duration_minutes, pricing, close_reason, hold_reference, closing_tap_id, remaining_balance, metadata, created_at, closed_at
  FROM journey_history WHERE id = ANY(ARRAY[:jid::uuid]);
-- step 3: the placement, one transaction under the card's lock (reconcile.Reconciler._apply)
BEGIN;
SELECT pg_advisory_xact_lock(4005016, hashtext(:user_id));
SELECT tap_id, kind, card_id, terminal_code, gate_code, tapped_at, user_id, journey_id, state, response, refusal_reason, refusal_message, created_at, refusal_detail, release_owed, offline, offline_amount
  FROM taps WHERE tap_id = ANY(ARRAY[:tap_in::uuid]);
SELECT max(checkin_time) FROM journey_history
 WHERE user_id = :user_id::uuid AND checkin_time < :t_in::timestamptz AND status <> 'cancelled';
SELECT tap_id, kind, card_id, terminal_code, gate_code, tapped_at, user_id, journey_id, state, response, refusal_reason, refusal_message, created_at, refusal_detail, release_owed, offline, offline_amount
  FROM taps t WHERE user_id = :user_id::uuid AND tapped_at >= :since::timestamptz
   AND (state = 'done' OR EXISTS (SELECT 1 FROM journey_history j WHERE j.closing_tap_id = t.tap_id));
SELECT id, user_id, card_id, status, settlement, checkin_terminal_code, checkin_terminal_name, checkin_gate_code, checkin_time, checkout_terminal_code, checkout_terminal_name, checkout_gate_code, checkout_time, held_amount, fare_charged, journey_duration_minutes, pricing, close_reason, hold_reference, closing_tap_id, remaining_balance, metadata, created_at, closed_at
  FROM journey_history WHERE id = ANY(ARRAY[:jid::uuid]);
UPDATE journey_history SET closing_tap_id = NULL WHERE id = ANY(ARRAY[:jid::uuid]);
INSERT INTO journey_history (id, user_id, card_id, status, settlement, checkin_terminal_code, checkin_terminal_name, checkin_gate_code, checkin_time, checkout_terminal_code, checkout_terminal_name, checkout_gate_code, checkout_time, held_amount, fare_charged, pricing, close_reason, hold_reference, closing_tap_id, remaining_balance, metadata, created_at, closed_at)
VALUES (:jid::uuid, :user_id::uuid, :card_id::text, 'active', 'none', 'A', 'Terminal Utara', 'A-ENTRY-01', :t_in::timestamptz, NULL, NULL, NULL, NULL, 12000, NULL, NULL, NULL, 'journey-' || :jid::text, NULL, NULL, '{"reconciled": true}', now(), NULL)
ON CONFLICT (id) DO UPDATE SET user_id = EXCLUDED.user_id, card_id = EXCLUDED.card_id, status = EXCLUDED.status, settlement = EXCLUDED.settlement, checkin_terminal_code = EXCLUDED.checkin_terminal_code, checkin_terminal_name = EXCLUDED.checkin_terminal_name, checkin_gate_code = EXCLUDED.checkin_gate_code, checkin_time = EXCLUDED.checkin_time, checkout_terminal_code = EXCLUDED.checkout_terminal_code, checkout_terminal_name = EXCLUDED.checkout_terminal_name, checkout_gate_code = EXCLUDED.checkout_gate_code, checkout_time = EXCLUDED.checkout_time, held_amount = EXCLUDED.held_amount, fare_charged = EXCLUDED.fare_charged, pricing = EXCLUDED.pricing, close_reason = EXCLUDED.close_reason, hold_reference = EXCLUDED.hold_reference, closing_tap_id = EXCLUDED.closing_tap_id, remaining_balance = EXCLUDED.remaining_balance, metadata = EXCLUDED.metadata, closed_at = EXCLUDED.closed_at, updated_at = now()
RETURNING id, user_id, card_id, status, settlement, checkin_terminal_code, checkin_terminal_name, checkin_gate_code, checkin_time, checkout_terminal_code, checkout_terminal_name, checkout_gate_code, checkout_time, held_amount, fare_charged, journey_duration_minutes, pricing, close_reason, hold_reference, closing_tap_id, remaining_balance, metadata, created_at, closed_at;
INSERT INTO taps (tap_id, kind, card_id, terminal_code, gate_code, tapped_at, user_id, journey_id, state, response, refusal_reason, refusal_message, refusal_detail, release_owed, offline, offline_amount)
VALUES (:tap_in::uuid, 'checkin', :card_id::text, 'A', 'A-ENTRY-01', :t_in::timestamptz, :user_id::uuid, :jid::uuid, 'done', decode(repeat('0a', 300), 'hex'), NULL, NULL, NULL, false, true, 12000)
ON CONFLICT (tap_id) DO UPDATE SET state = 'done', response = EXCLUDED.response, tapped_at = EXCLUDED.tapped_at, refusal_reason = NULL, refusal_message = NULL, refusal_detail = NULL, offline = true, offline_amount = EXCLUDED.offline_amount, updated_at = now()
 WHERE taps.state IN ('refused', 'expired') AND NOT taps.offline
RETURNING 1;
INSERT INTO outbox (event_id, event_type, body, traceparent)
VALUES (gen_random_uuid(), 'journey.checked_in',
        jsonb_build_object('specversion', '1.0', 'type', 'journey.checked_in', 'source', '/tiket/journey',
                           'subject', :user_id::text,
                           'data', jsonb_build_object('journeyId', :jid::text, 'cardId', :card_id::text,
                                                      'terminalName', 'Terminal Utara', 'offline', true)),
        '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01');
COMMIT;

-- === the check-out ==================================================================
SELECT id, user_id, card_id, status, settlement, checkin_terminal_code, checkin_terminal_name, checkin_gate_code, checkin_time, checkout_terminal_code, checkout_terminal_name, checkout_gate_code, checkout_time, held_amount, fare_charged, journey_duration_minutes, pricing, close_reason, hold_reference, closing_tap_id, remaining_balance, metadata, created_at, closed_at
  FROM journey_history WHERE user_id = :user_id::uuid AND settlement = 'pending';
SELECT id, journey_id, user_id, amount, reason FROM journey_adjustments
 WHERE state = 'pending' AND (:user_id::uuid IS NULL OR user_id = :user_id::uuid)
   AND updated_at <= now() - interval '0 seconds' ORDER BY updated_at LIMIT 200;
SELECT tap_id, kind, card_id, terminal_code, gate_code, tapped_at, user_id, journey_id, state, response, refusal_reason, refusal_message, created_at, refusal_detail, release_owed, offline, offline_amount
  FROM taps WHERE tap_id = ANY(ARRAY[:tap_out::uuid]);
SELECT coalesce(max(checkin_time), :t_out::timestamptz) AS since FROM journey_history
 WHERE user_id = :user_id::uuid AND checkin_time < :t_out::timestamptz AND status <> 'cancelled' \gset
SELECT tap_id, kind, card_id, terminal_code, gate_code, tapped_at, user_id, journey_id, state, response, refusal_reason, refusal_message, created_at, refusal_detail, release_owed, offline, offline_amount
  FROM taps t WHERE user_id = :user_id::uuid AND tapped_at >= :since::timestamptz
   AND (state = 'done' OR EXISTS (SELECT 1 FROM journey_history j WHERE j.closing_tap_id = t.tap_id));
SELECT id, user_id, card_id, status, settlement, checkin_terminal_code, checkin_terminal_name, checkin_gate_code, checkin_time, checkout_terminal_code, checkout_terminal_name, checkout_gate_code, checkout_time, held_amount, fare_charged, journey_duration_minutes, pricing, close_reason, hold_reference, closing_tap_id, remaining_balance, metadata, created_at, closed_at
  FROM journey_history WHERE id = ANY(ARRAY[:jid::uuid, gen_random_uuid()]);
BEGIN;
SELECT pg_advisory_xact_lock(4005016, hashtext(:user_id));
SELECT tap_id, kind, card_id, terminal_code, gate_code, tapped_at, user_id, journey_id, state, response, refusal_reason, refusal_message, created_at, refusal_detail, release_owed, offline, offline_amount
  FROM taps WHERE tap_id = ANY(ARRAY[:tap_out::uuid]);
SELECT max(checkin_time) FROM journey_history
 WHERE user_id = :user_id::uuid AND checkin_time < :t_out::timestamptz AND status <> 'cancelled';
SELECT tap_id, kind, card_id, terminal_code, gate_code, tapped_at, user_id, journey_id, state, response, refusal_reason, refusal_message, created_at, refusal_detail, release_owed, offline, offline_amount
  FROM taps t WHERE user_id = :user_id::uuid AND tapped_at >= :since::timestamptz
   AND (state = 'done' OR EXISTS (SELECT 1 FROM journey_history j WHERE j.closing_tap_id = t.tap_id));
SELECT id, user_id, card_id, status, settlement, checkin_terminal_code, checkin_terminal_name, checkin_gate_code, checkin_time, checkout_terminal_code, checkout_terminal_name, checkout_gate_code, checkout_time, held_amount, fare_charged, journey_duration_minutes, pricing, close_reason, hold_reference, closing_tap_id, remaining_balance, metadata, created_at, closed_at
  FROM journey_history WHERE id = ANY(ARRAY[:jid::uuid, gen_random_uuid()]);
UPDATE journey_history SET closing_tap_id = NULL WHERE id = ANY(ARRAY[:jid::uuid]);
INSERT INTO journey_history (id, user_id, card_id, status, settlement, checkin_terminal_code, checkin_terminal_name, checkin_gate_code, checkin_time, checkout_terminal_code, checkout_terminal_name, checkout_gate_code, checkout_time, held_amount, fare_charged, pricing, close_reason, hold_reference, closing_tap_id, remaining_balance, metadata, created_at, closed_at)
VALUES (:jid::uuid, :user_id::uuid, :card_id::text, 'completed', 'pending', 'A', 'Terminal Utara', 'A-ENTRY-01', :t_in::timestamptz, 'E', 'Terminal Pusat', 'E-EXIT-01', :t_out::timestamptz, 12000, 12000, 'fare', NULL, 'journey-' || :jid::text, :tap_out::uuid, NULL, '{"reconciled": true}', now(), now())
ON CONFLICT (id) DO UPDATE SET user_id = EXCLUDED.user_id, card_id = EXCLUDED.card_id, status = EXCLUDED.status, settlement = EXCLUDED.settlement, checkin_terminal_code = EXCLUDED.checkin_terminal_code, checkin_terminal_name = EXCLUDED.checkin_terminal_name, checkin_gate_code = EXCLUDED.checkin_gate_code, checkin_time = EXCLUDED.checkin_time, checkout_terminal_code = EXCLUDED.checkout_terminal_code, checkout_terminal_name = EXCLUDED.checkout_terminal_name, checkout_gate_code = EXCLUDED.checkout_gate_code, checkout_time = EXCLUDED.checkout_time, held_amount = EXCLUDED.held_amount, fare_charged = EXCLUDED.fare_charged, pricing = EXCLUDED.pricing, close_reason = EXCLUDED.close_reason, hold_reference = EXCLUDED.hold_reference, closing_tap_id = EXCLUDED.closing_tap_id, remaining_balance = EXCLUDED.remaining_balance, metadata = EXCLUDED.metadata, closed_at = EXCLUDED.closed_at, updated_at = now()
RETURNING id, user_id, card_id, status, settlement, checkin_terminal_code, checkin_terminal_name, checkin_gate_code, checkin_time, checkout_terminal_code, checkout_terminal_name, checkout_gate_code, checkout_time, held_amount, fare_charged, journey_duration_minutes, pricing, close_reason, hold_reference, closing_tap_id, remaining_balance, metadata, created_at, closed_at;
INSERT INTO taps (tap_id, kind, card_id, terminal_code, gate_code, tapped_at, user_id, journey_id, state, response, refusal_reason, refusal_message, refusal_detail, release_owed, offline, offline_amount)
VALUES (:tap_out::uuid, 'checkout', :card_id::text, 'E', 'E-EXIT-01', :t_out::timestamptz, :user_id::uuid, :jid::uuid, 'done', decode(repeat('0a', 300), 'hex'), NULL, NULL, NULL, false, true, 12000)
ON CONFLICT (tap_id) DO UPDATE SET state = 'done', response = EXCLUDED.response, tapped_at = EXCLUDED.tapped_at, refusal_reason = NULL, refusal_message = NULL, refusal_detail = NULL, offline = true, offline_amount = EXCLUDED.offline_amount, updated_at = now()
 WHERE taps.state IN ('refused', 'expired') AND NOT taps.offline
RETURNING 1;
COMMIT;
-- step 4: the closing settled — CaptureHold finds no hold (user service), Charge, GetWallet
SELECT id, user_id, amount, final_amount, status, reference, reason, release_reason, expires_at, created_at, closed_at
  FROM holds WHERE reference = 'journey-' || :jid::text;
BEGIN;
SELECT id AS user_id, status, balance, held, updated_at FROM users WHERE id = :user_id::uuid FOR UPDATE;
SELECT id, user_id, kind, amount, balance_after, reference, idempotency_key, hold_id, description, created_at
  FROM ledger_entries WHERE user_id = :user_id::uuid AND kind = 'charge' AND idempotency_key = 'journey-' || :jid::text;
INSERT INTO ledger_entries (user_id, kind, amount, balance_after, reference, idempotency_key, hold_id, description)
VALUES (:user_id::uuid, 'charge', -12000, 0, 'journey-' || :jid::text, 'journey-' || :jid::text, NULL, 'Journey fare')
RETURNING id, user_id, kind, amount, balance_after, reference, idempotency_key, hold_id, description, created_at;
INSERT INTO outbox (event_id, event_type, body, traceparent)
VALUES (gen_random_uuid(), 'wallet.charged',
        jsonb_build_object('specversion', '1.0', 'type', 'wallet.charged', 'source', '/tiket/user',
                           'subject', :user_id::text,
                           'data', jsonb_build_object('userId', :user_id::text, 'reference', 'journey-' || :jid::text,
                                                      'amount', jsonb_build_object('units', '12000'))),
        '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01');
COMMIT;
SELECT id AS user_id, status, balance, held, updated_at FROM users WHERE id = :user_id::uuid;
-- the outcome, its event (store.settle)
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
SELECT id FROM settled;
