-- One benchmark op of bench/holds.py in plain SQL: the statements the user service sends
-- for PlaceHold and then CaptureHold (services/user/app.py, store.py, libs/events/outbox.py),
-- in the same two transactions and round trips, so pgbench gives the ceiling the service is
-- measured against. Run with -M prepared (the service's psycopg prepares repeated
-- statements too) and -D users=<rows in bench_users>, a table the benchmark fills with the
-- ids of its wallets: bench_users(n serial PRIMARY KEY, id uuid).
\set n random(1, :users)
\set ref random(1, 999999999999999)

-- PlaceHold
BEGIN;
SELECT id, user_id, amount, final_amount, status, reference, reason, release_reason,
       expires_at, created_at, closed_at
  FROM holds WHERE reference = 'pgb-' || :ref::text;
SELECT id AS user_id, status, balance, held, updated_at
  FROM users WHERE id = (SELECT id FROM bench_users WHERE n = :n) FOR UPDATE \gset
INSERT INTO holds (user_id, amount, reference, reason, expires_at)
VALUES (:user_id, 12000, 'pgb-' || :ref::text, 'Trip fare hold', now() + interval '1800 seconds')
ON CONFLICT (reference) DO NOTHING
RETURNING id AS hold_id, user_id, amount, final_amount, status, reference, reason,
          release_reason, expires_at, created_at, closed_at \gset h_
INSERT INTO outbox (event_id, event_type, body, traceparent)
SELECT e.id, 'wallet.hold_placed',
       jsonb_build_object(
           'specversion', '1.0', 'id', e.id, 'source', '/tiket/user',
           'type', 'wallet.hold_placed', 'time', now(), 'subject', :user_id::text,
           'datacontenttype', 'application/json',
           'data', jsonb_build_object(
               'userId', :user_id::text, 'holdId', :h_hold_id::text,
               'reference', 'pgb-' || :ref::text,
               'amount', jsonb_build_object('currencyCode', 'IDR', 'units', '12000'),
               'availableAfter', jsonb_build_object(
                   'currencyCode', 'IDR',
                   'units', (:balance::numeric - :held::numeric - 12000)::bigint::text),
               'expiresAt', :h_expires_at::timestamptz, 'reason', 'Trip fare hold')),
       '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
  FROM (SELECT gen_random_uuid() AS id) AS e;
COMMIT;

-- CaptureHold
BEGIN;
SELECT id, user_id, amount, final_amount, status, reference, reason, release_reason,
       expires_at, created_at, closed_at
  FROM holds WHERE reference = 'pgb-' || :ref::text FOR UPDATE;
SELECT now();
UPDATE holds SET status = 'captured', final_amount = 7000, closed_at = now()
 WHERE id = :h_hold_id
RETURNING id, user_id, amount, final_amount, status, reference, reason, release_reason,
          expires_at, created_at, closed_at;
INSERT INTO ledger_entries
       (user_id, kind, amount, balance_after, reference, idempotency_key, hold_id, description)
VALUES (:user_id, 'capture', -7000, 0, 'pgb-' || :ref::text, NULL, :h_hold_id, 'Trip fare hold')
RETURNING id, user_id, kind, amount, balance_after, reference, idempotency_key, hold_id,
          description, created_at;
SELECT id AS user_id, status, balance, held, updated_at FROM users WHERE id = :user_id \gset w_
INSERT INTO outbox (event_id, event_type, body, traceparent)
SELECT e.id, 'wallet.hold_captured',
       jsonb_build_object(
           'specversion', '1.0', 'id', e.id, 'source', '/tiket/user',
           'type', 'wallet.hold_captured', 'time', now(), 'subject', :user_id::text,
           'datacontenttype', 'application/json',
           'data', jsonb_build_object(
               'userId', :user_id::text, 'holdId', :h_hold_id::text,
               'reference', 'pgb-' || :ref::text,
               'amount', jsonb_build_object('currencyCode', 'IDR', 'units', '12000'),
               'finalAmount', jsonb_build_object('currencyCode', 'IDR', 'units', '7000'),
               'availableAfter', jsonb_build_object(
                   'currencyCode', 'IDR',
                   'units', (:w_balance::numeric - :w_held::numeric)::bigint::text),
               'expiresAt', :h_expires_at::timestamptz, 'reason', 'Trip fare hold')),
       '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
  FROM (SELECT gen_random_uuid() AS id) AS e;
COMMIT;
