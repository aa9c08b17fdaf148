-- One benchmark op of bench/holds.py in plain SQL: the statements the user service sends
-- for PlaceHold and then CaptureHold (services/user/app.py, store.py, libs/events/outbox.py).
-- PlaceHold is one statement on an autocommit connection (store.PLACE_HOLD, its own
-- transaction), CaptureHold one transaction whose writes the service pipelines (psycopg
-- pipeline mode) and are pipelined here too, so pgbench gives the ceiling the service is
-- measured against.
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

-- CaptureHold: lock the hold (and read the clock), then the writes and the wallet after.
BEGIN;
SELECT now() AS now, h.id AS hold_id, h.user_id AS hold_user
  FROM holds h WHERE h.reference = 'pgb-' || :ref::text FOR UPDATE \gset
\startpipeline
UPDATE holds SET status = 'captured', final_amount = 7000, closed_at = :now::timestamptz
 WHERE id = :hold_id::uuid;
INSERT INTO ledger_entries
       (user_id, kind, amount, balance_after, reference, idempotency_key, hold_id, description)
VALUES (:hold_user::uuid, 'capture', -7000, 0, 'pgb-' || :ref::text, NULL, :hold_id::uuid,
        'Trip fare hold')
RETURNING id, user_id, kind, amount, balance_after, reference, idempotency_key, hold_id,
          description, created_at;
SELECT id AS user_id, status, balance, held, updated_at FROM users WHERE id = :hold_user::uuid;
\endpipeline
\startpipeline
INSERT INTO outbox (event_id, event_type, body, traceparent)
SELECT e.id, 'wallet.hold_captured',
       jsonb_build_object(
           'specversion', '1.0', 'id', e.id, 'source', '/tiket/user',
           'type', 'wallet.hold_captured', 'time', now(), 'subject', :hold_user::text,
           'datacontenttype', 'application/json',
           'data', jsonb_build_object(
               'userId', :hold_user::text, 'holdId', :hold_id::text,
               'reference', 'pgb-' || :ref::text,
               'amount', jsonb_build_object('currencyCode', 'IDR', 'units', '12000'),
               'finalAmount', jsonb_build_object('currencyCode', 'IDR', 'units', '7000'),
               'reason', 'Trip fare hold')),
       '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
  FROM (SELECT gen_random_uuid() AS id) AS e;
COMMIT;
\endpipeline
