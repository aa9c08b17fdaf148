-- One benchmark op of bench/holds.py in plain SQL: the statements the user service sends
-- for PlaceHold and then CaptureHold (services/user/app.py, store.py, libs/events/outbox.py),
-- in the same two transactions, with the writes that the service pipelines (psycopg pipeline
-- mode) pipelined here too, so pgbench gives the ceiling the service is measured against.
-- Run with -M prepared and -D users=<rows in bench_users>, a table the benchmark fills with
-- the ids of its wallets: bench_users(n serial PRIMARY KEY, id uuid).
\set n random(1, :users)
\set ref random(1, 999999999999999)

-- PlaceHold: lock the wallet and look for the reference in one statement, then write.
BEGIN;
SELECT u.id AS user_id, u.status, u.balance, u.held, u.updated_at, now() AS now,
       h.id AS h_id
  FROM users u LEFT JOIN holds h ON h.reference = 'pgb-' || :ref::text
 WHERE u.id = (SELECT id FROM bench_users WHERE n = :n)
   FOR UPDATE OF u \gset
\startpipeline
INSERT INTO holds (id, user_id, amount, reference, reason, expires_at, created_at)
VALUES (gen_random_uuid(), :user_id::uuid, 12000, 'pgb-' || :ref::text, 'Trip fare hold',
        :now::timestamptz + interval '1800 seconds', :now::timestamptz);
INSERT INTO outbox (event_id, event_type, body, traceparent)
SELECT e.id, 'wallet.hold_placed',
       jsonb_build_object(
           'specversion', '1.0', 'id', e.id, 'source', '/tiket/user',
           'type', 'wallet.hold_placed', 'time', now(), 'subject', :user_id::text,
           'datacontenttype', 'application/json',
           'data', jsonb_build_object(
               'userId', :user_id::text, 'reference', 'pgb-' || :ref::text,
               'amount', jsonb_build_object('currencyCode', 'IDR', 'units', '12000'),
               'availableAfter', jsonb_build_object(
                   'currencyCode', 'IDR',
                   'units', (:balance::numeric - :held::numeric - 12000)::bigint::text),
               'reason', 'Trip fare hold')),
       '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
  FROM (SELECT gen_random_uuid() AS id) AS e;
COMMIT;
\endpipeline

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
