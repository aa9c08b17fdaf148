-- One benchmark op of bench/holds.py in plain SQL: the statements the user service sends
-- for PlaceHold and then CaptureHold (services/user/app.py, store.py, libs/events/outbox.py).
-- Each is sent as the service sends it on an autocommit connection: PlaceHold one statement
-- (store.PLACE_HOLD), CaptureHold a read of the hold and one statement (store.CAPTURE_HOLD),
-- so pgbench gives the ceiling the service is measured against.
-- Run with -M prepared and -D users=<rows in bench_users>, a table the benchmark fills with
-- the ids of its wallets: bench_users(n serial PRIMARY KEY, id uuid).
\set n random(1, :users)
\set ref random(1, 999999999999999)

-- PlaceHold: lock the wallet, look for the reference, place the hold and write its event,
-- whose availableAfter the statement fills in; the service builds the rest of the event.
WITH wallet AS (
    SELECT id, status, balance, held, updated_at FROM users
     WHERE id = (SELECT id FROM bench_users WHERE n = :n) FOR UPDATE
), existing AS (
    SELECT id, user_id, amount, final_amount, status, reference, reason, release_reason,
           expires_at, created_at, closed_at
      FROM holds WHERE reference = 'pgb-' || :ref::text
), placed AS (
    INSERT INTO holds (id, user_id, amount, reference, reason, expires_at, created_at)
    SELECT gen_random_uuid(), id, 12000, 'pgb-' || :ref::text, 'Trip fare hold',
           now() + interval '1800 seconds', now()
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
                       'reference', 'pgb-' || :ref::text,
                       'amount', jsonb_build_object('currencyCode', 'IDR', 'units', '12000'),
                       'reason', 'Trip fare hold')),
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

-- CaptureHold: the hold read (unlocked), then one statement (store.CAPTURE_HOLD) that locks
-- the hold and its wallet, captures, debits and writes the event.
SELECT id AS hold_id, user_id AS hold_user, amount, status, reference, reason, expires_at,
       created_at
  FROM holds WHERE reference = 'pgb-' || :ref::text \gset
WITH hold AS (
    SELECT id, user_id, amount, reference, reason FROM holds
     WHERE id = :hold_id::uuid AND status = 'held' AND expires_at > now() FOR UPDATE
), wallet AS (
    SELECT id, status, balance, held FROM users
     WHERE id = (SELECT user_id FROM hold) FOR UPDATE
), captured AS (
    UPDATE holds SET status = 'captured', final_amount = 7000, closed_at = now()
      FROM wallet
     WHERE holds.id = (SELECT id FROM hold)
    RETURNING holds.id, holds.user_id, holds.amount, holds.reference, holds.reason,
              holds.closed_at
), debited AS (
    INSERT INTO ledger_entries (user_id, kind, amount, balance_after, reference, hold_id,
                                description)
    SELECT user_id, 'capture', -7000, 0, reference, id, reason
      FROM captured
     WHERE 7000 > 0
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
                       'finalAmount', jsonb_build_object('currencyCode', 'IDR', 'units', '7000'),
                       'reason', c.reason)),
               '{data,availableAfter}', money_json(w.balance - 7000 - (w.held - c.amount))),
           '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
      FROM captured c, wallet w, (SELECT gen_random_uuid() AS id) AS e
)
SELECT c.closed_at AS captured_at, w.id AS w_user_id, w.status AS w_status,
       w.balance - 7000 AS w_balance, w.held - c.amount AS w_held,
       now() AS w_updated_at, d.*
  FROM captured c JOIN wallet w ON true LEFT JOIN debited d ON true;
