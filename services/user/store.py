"""SQL of the user & wallet service (psycopg 3, parameters only). Every function runs on
the caller's connection, inside the caller's transaction or, like place_hold, as a statement
that is a transaction of its own (libs.db.transaction.in_statement)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import class_row, dict_row

from libs.db.database import enum_types
from libs.events.outbox import OUTBOX_COLUMNS
from services.user.domain import (
    Hold,
    HoldStatus,
    LedgerEntry,
    LedgerKind,
    Pet,
    User,
    UserSnapshot,
    UserStatus,
    Wallet,
)

USER_COLUMNS = (
    "id, card_id, full_name, email, phone, status, status_reason, registered_at, updated_at"
)
HOLD_FIELDS = (
    "id",
    "user_id",
    "amount",
    "final_amount",
    "status",
    "reference",
    "reason",
    "release_reason",
    "expires_at",
    "created_at",
    "closed_at",
)
HOLD_COLUMNS = ", ".join(HOLD_FIELDS)
WALLET_FIELDS = ("user_id", "status", "balance", "held", "updated_at")
LEDGER_COLUMNS = (
    "id, user_id, kind, amount, balance_after, reference, idempotency_key, hold_id, "
    "description, created_at"
)
PET_COLUMNS = "id, user_id, name, species, breed, birth_date, created_at"


# Maps the database enums onto the domain enums, once per pooled connection.
register_types = enum_types(
    {"user_status": UserStatus, "hold_status": HoldStatus, "ledger_kind": LedgerKind}
)


# --- users ---------------------------------------------------------------------------


async def insert_user(
    conn: AsyncConnection,
    card_id: str,
    full_name: str,
    email: str | None,
    phone: str | None,
    request_id: str | None,
) -> User:
    cur = conn.cursor(row_factory=class_row(User))
    await cur.execute(
        f"""INSERT INTO users (card_id, full_name, email, phone, create_request_id)
            VALUES (%s, %s, %s, %s, %s) RETURNING {USER_COLUMNS}""",
        (card_id, full_name, email, phone, request_id),
    )
    return _one(await cur.fetchone())


async def user_by(conn: AsyncConnection, column: str, value: object) -> User | None:
    assert column in {"id", "card_id", "create_request_id"}
    cur = conn.cursor(row_factory=class_row(User))
    await cur.execute(f"SELECT {USER_COLUMNS} FROM users WHERE {column} = %s", (value,))
    return await cur.fetchone()


async def list_users(
    conn: AsyncConnection,
    status: UserStatus | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[User]:
    conditions, params = [], []
    if status is not None:
        conditions.append("status = %s")
        params.append(status)
    if after is not None:
        conditions.append("(registered_at, id) > (%s, %s)")
        params.extend(after)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    cur = conn.cursor(row_factory=class_row(User))
    await cur.execute(
        f"SELECT {USER_COLUMNS} FROM users {where} ORDER BY registered_at, id LIMIT %s",
        (*params, limit),
    )
    return await cur.fetchall()


async def set_status(
    conn: AsyncConnection, user_id: uuid.UUID, status: UserStatus, reason: str | None
) -> User:
    cur = conn.cursor(row_factory=class_row(User))
    await cur.execute(
        f"""UPDATE users SET status = %s, status_reason = %s, updated_at = now()
            WHERE id = %s RETURNING {USER_COLUMNS}""",
        (status, reason, user_id),
    )
    return _one(await cur.fetchone())


async def lock_wallet(conn: AsyncConnection, user_id: uuid.UUID) -> Wallet | None:
    """The wallet (with its status reason), locked until the transaction ends: every change
    of a user's money and status is serialised on this row."""
    cur = conn.cursor(row_factory=class_row(Wallet))
    await cur.execute(
        """SELECT id AS user_id, status, balance, held, updated_at, status_reason
             FROM users WHERE id = %s FOR UPDATE""",
        (user_id,),
    )
    return await cur.fetchone()


async def wallet(conn: AsyncConnection, user_id: uuid.UUID) -> Wallet | None:
    cur = conn.cursor(row_factory=class_row(Wallet))
    await cur.execute(
        "SELECT id AS user_id, status, balance, held, updated_at FROM users WHERE id = %s",
        (user_id,),
    )
    return await cur.fetchone()


# --- pets ----------------------------------------------------------------------------


async def insert_pet(
    conn: AsyncConnection,
    user_id: uuid.UUID,
    name: str,
    species: str,
    breed: str | None,
    birth_date: date | None,
    request_id: str | None,
) -> Pet | None:
    """The new pet, or None when `request_id` was used before."""
    cur = conn.cursor(row_factory=class_row(Pet))
    await cur.execute(
        f"""INSERT INTO pets (user_id, name, species, breed, birth_date, request_id)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (request_id) DO NOTHING RETURNING {PET_COLUMNS}""",
        (user_id, name, species, breed, birth_date, request_id),
    )
    return await cur.fetchone()


async def pet_by_request(conn: AsyncConnection, request_id: str) -> Pet | None:
    cur = conn.cursor(row_factory=class_row(Pet))
    await cur.execute(f"SELECT {PET_COLUMNS} FROM pets WHERE request_id = %s", (request_id,))
    return await cur.fetchone()


async def list_pets(conn: AsyncConnection, user_id: uuid.UUID) -> list[Pet]:
    cur = conn.cursor(row_factory=class_row(Pet))
    await cur.execute(
        f"SELECT {PET_COLUMNS} FROM pets WHERE user_id = %s ORDER BY created_at, id", (user_id,)
    )
    return await cur.fetchall()


# --- ledger --------------------------------------------------------------------------


async def insert_entry(
    conn: AsyncConnection,
    user_id: uuid.UUID,
    kind: LedgerKind,
    amount: Decimal,
    *,
    reference: str | None = None,
    idempotency_key: str | None = None,
    hold_id: uuid.UUID | None = None,
    description: str | None = None,
) -> LedgerEntry:
    """Append a ledger row; its trigger moves the balance and fills balance_after."""
    cur = await _send_entry(
        conn, user_id, kind, amount, reference, idempotency_key, hold_id, description
    )
    return _one(await cur.fetchone())


async def _send_entry(
    conn: AsyncConnection,
    user_id: uuid.UUID,
    kind: LedgerKind,
    amount: Decimal,
    reference: str | None,
    idempotency_key: str | None,
    hold_id: uuid.UUID | None,
    description: str | None,
) -> AsyncCursor[LedgerEntry]:
    """Send the INSERT; the caller reads the row when it needs it (pipeline mode)."""
    cur = conn.cursor(row_factory=class_row(LedgerEntry))
    await cur.execute(
        f"""INSERT INTO ledger_entries
                (user_id, kind, amount, balance_after, reference, idempotency_key, hold_id,
                 description)
            VALUES (%s, %s, %s, 0, %s, %s, %s, %s) RETURNING {LEDGER_COLUMNS}""",
        (user_id, kind, amount, reference, idempotency_key, hold_id, description),
    )
    return cur


async def entry_by_key(
    conn: AsyncConnection, user_id: uuid.UUID, kind: LedgerKind, key: str
) -> LedgerEntry | None:
    cur = conn.cursor(row_factory=class_row(LedgerEntry))
    await cur.execute(
        f"""SELECT {LEDGER_COLUMNS} FROM ledger_entries
            WHERE user_id = %s AND kind = %s AND idempotency_key = %s""",
        (user_id, kind, key),
    )
    return await cur.fetchone()


async def entry_of_hold(conn: AsyncConnection, hold_id: uuid.UUID) -> LedgerEntry | None:
    cur = conn.cursor(row_factory=class_row(LedgerEntry))
    await cur.execute(f"SELECT {LEDGER_COLUMNS} FROM ledger_entries WHERE hold_id = %s", (hold_id,))
    return await cur.fetchone()


async def list_entries(
    conn: AsyncConnection, user_id: uuid.UUID, before_id: int | None, limit: int
) -> list[LedgerEntry]:
    cur = conn.cursor(row_factory=class_row(LedgerEntry))
    await cur.execute(
        f"""SELECT {LEDGER_COLUMNS} FROM ledger_entries
            WHERE user_id = %s AND (%s::bigint IS NULL OR id < %s)
            ORDER BY id DESC LIMIT %s""",
        (user_id, before_id, before_id, limit),
    )
    return await cur.fetchall()


async def charged_and_refunded(
    conn: AsyncConnection, user_id: uuid.UUID, reference: str
) -> tuple[Decimal, Decimal]:
    """(total debited by charges and captures, total refunded) for one reference."""
    cur = await conn.execute(
        """SELECT coalesce(-sum(amount) FILTER (WHERE kind IN ('charge', 'capture')), 0),
                  coalesce(sum(amount) FILTER (WHERE kind = 'refund'), 0)
             FROM ledger_entries WHERE user_id = %s AND reference = %s""",
        (user_id, reference),
    )
    charged, refunded = _one(await cur.fetchone())
    return charged, refunded


# --- holds ---------------------------------------------------------------------------


def _prefixed(alias: str) -> str:
    return ", ".join(f"{alias}.{c} AS h_{c}" for c in HOLD_FIELDS)


def _hold_from(row: dict) -> Hold | None:
    if row["h_id"] is None:
        return None
    return Hold(**{c: row[f"h_{c}"] for c in HOLD_FIELDS})


# PlaceHold in one statement: lock the wallet (FOR UPDATE gives its latest values once the
# lock is ours), look for a hold already placed under the reference (as of the statement's
# snapshot, taken before any wait for the lock), place the new one when the wallet may pay
# for it — the conditions mirror domain.require_active and domain.require_available, whose
# errors the caller raises when nothing was placed — and write its event, with the available
# balance after the hold, only when the hold was placed.
PLACE_HOLD = f"""
WITH wallet AS (
    SELECT id, status, balance, held, updated_at FROM users WHERE id = %(user_id)s FOR UPDATE
), existing AS (
    SELECT {HOLD_COLUMNS} FROM holds WHERE reference = %(reference)s
), placed AS (
    INSERT INTO holds (id, user_id, amount, reference, reason, expires_at, created_at)
    SELECT %(id)s, id, %(amount)s, %(reference)s, %(reason)s, %(expires_at)s, %(created_at)s
      FROM wallet
     WHERE status = 'active' AND balance - held >= %(amount)s
       AND NOT EXISTS (SELECT FROM existing)
        ON CONFLICT (reference) DO NOTHING
    RETURNING amount
), announced AS (
    INSERT INTO outbox ({OUTBOX_COLUMNS})
    SELECT %(event_id)s, %(event_type)s,
           jsonb_set(%(event_body)s, '{{data,availableAfter}}',
                     money_json(w.balance - w.held - p.amount)),
           %(event_traceparent)s
      FROM wallet w, placed p
)
SELECT w.id AS user_id, w.status, w.balance, w.held, w.updated_at,
       EXISTS (SELECT FROM placed) AS placed, {_prefixed("e")}
  FROM wallet w LEFT JOIN existing e ON true"""


async def place_hold(
    conn: AsyncConnection, hold: Hold, event: dict[str, Any]
) -> tuple[Wallet, Hold | None, bool] | None:
    """PLACE_HOLD for `hold` and its staged `event` (events.hold_placed). Returns the wallet
    as locked, before the hold; the hold already under the reference when the statement's
    snapshot shows one; and whether `hold` was placed. None when the user does not exist."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        PLACE_HOLD,
        {
            "id": hold.id,
            "user_id": hold.user_id,
            "amount": hold.amount,
            "reference": hold.reference,
            "reason": hold.reason,
            "expires_at": hold.expires_at,
            "created_at": hold.created_at,
            **event,
        },
    )
    row = await cur.fetchone()
    if row is None:
        return None
    wallet = Wallet(row["user_id"], row["status"], row["balance"], row["held"], row["updated_at"])
    return wallet, _hold_from(row), row["placed"]


async def hold_by(conn: AsyncConnection, column: str, value: object) -> Hold | None:
    assert column in {"id", "reference"}
    cur = conn.cursor(row_factory=class_row(Hold))
    await cur.execute(f"SELECT {HOLD_COLUMNS} FROM holds WHERE {column} = %s", (value,))
    return await cur.fetchone()


async def lock_hold(
    conn: AsyncConnection, column: str, value: object
) -> tuple[Hold, datetime] | None:
    """The hold, locked (before its wallet, as every path locks them), and the clock."""
    assert column in {"id", "reference"}
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"SELECT now() AS now, {_prefixed('h')} FROM holds h WHERE h.{column} = %s FOR UPDATE",
        (value,),
    )
    row = await cur.fetchone()
    hold = None if row is None else _hold_from(row)
    return None if hold is None else (hold, row["now"])


async def apply_capture(conn: AsyncConnection, captured: Hold) -> tuple[LedgerEntry | None, Wallet]:
    """Write a capture decided by the caller: the hold's new state, the debit of its final
    amount (none when zero) and the wallet after both — sent together, read once."""
    await conn.execute(
        "UPDATE holds SET status = 'captured', final_amount = %s, closed_at = %s WHERE id = %s",
        (captured.final_amount, captured.closed_at, captured.id),
    )
    entry = None
    if captured.final_amount:
        entry = await _send_entry(
            conn,
            captured.user_id,
            LedgerKind.CAPTURE,
            -captured.final_amount,
            captured.reference,
            None,
            captured.id,
            captured.reason,
        )
    wallet_cur = conn.cursor(row_factory=class_row(Wallet))
    await wallet_cur.execute(
        "SELECT id AS user_id, status, balance, held, updated_at FROM users WHERE id = %s",
        (captured.user_id,),
    )
    return (
        None if entry is None else _one(await entry.fetchone()),
        _one(await wallet_cur.fetchone()),
    )


# CaptureHold of a hold the caller saw held, in one statement. It locks the hold if it is
# still held and unexpired by the database's clock, then its wallet (in the order every path
# locks them; FOR UPDATE gives the wallet's latest values, read before anything in this
# statement changes the row), then captures the hold (its trigger lowers `held`), debits the
# final amount and writes the event with the available balance after both. Each step reads
# the one before, which fixes their order. No row: the hold was not held any more; the
# caller then decides under a lock (apply_capture).
CAPTURE_HOLD = f"""
WITH hold AS (
    SELECT id, user_id, amount, reference, reason FROM holds
     WHERE id = %(id)s AND status = 'held' AND expires_at > now() FOR UPDATE
), wallet AS (
    SELECT id, status, balance, held FROM users
     WHERE id = (SELECT user_id FROM hold) FOR UPDATE
), captured AS (
    UPDATE holds SET status = 'captured', final_amount = %(final_amount)s, closed_at = now()
      FROM wallet
     WHERE holds.id = (SELECT id FROM hold)
    RETURNING holds.id, holds.user_id, holds.amount, holds.reference, holds.reason,
              holds.closed_at
), debited AS (
    INSERT INTO ledger_entries (user_id, kind, amount, balance_after, reference, hold_id,
                                description)
    SELECT user_id, 'capture', -%(final_amount)s, 0, reference, id, reason
      FROM captured
     WHERE %(final_amount)s > 0
    RETURNING {LEDGER_COLUMNS}
), announced AS (
    INSERT INTO outbox ({OUTBOX_COLUMNS})
    SELECT %(event_id)s, %(event_type)s,
           jsonb_set(%(event_body)s, '{{data,availableAfter}}',
                     money_json(w.balance - %(final_amount)s - (w.held - c.amount))),
           %(event_traceparent)s
      FROM captured c, wallet w
)
SELECT c.closed_at AS captured_at, w.id AS w_user_id, w.status AS w_status,
       w.balance - %(final_amount)s AS w_balance, w.held - c.amount AS w_held,
       now() AS w_updated_at, d.*
  FROM captured c JOIN wallet w ON true LEFT JOIN debited d ON true"""


async def capture_hold(
    conn: AsyncConnection, hold: Hold, final_amount: Decimal, event: dict[str, Any]
) -> tuple[datetime, LedgerEntry | None, Wallet] | None:
    """CAPTURE_HOLD for `hold` and its staged `event` (events.hold_captured): when it was
    captured, the debit (none when the final amount is zero) and the wallet after. None when
    the hold was not held, or had expired, by the time the statement ran."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(CAPTURE_HOLD, {"id": hold.id, "final_amount": final_amount, **event})
    row = await cur.fetchone()
    if row is None:
        return None
    wallet = Wallet(*(row.pop(f"w_{field}") for field in WALLET_FIELDS))
    captured_at = row.pop("captured_at")
    entry = None if row["id"] is None else LedgerEntry(**row)
    return captured_at, entry, wallet


async def release_holds(conn: AsyncConnection, hold_ids: list[uuid.UUID], why: str) -> list[Hold]:
    cur = conn.cursor(row_factory=class_row(Hold))
    await cur.execute(
        f"""UPDATE holds SET status = 'released', release_reason = %s, closed_at = now()
            WHERE id = ANY(%s) AND status = 'held' RETURNING {HOLD_COLUMNS}""",
        (why, hold_ids),
    )
    return await cur.fetchall()


async def lock_expired_holds(conn: AsyncConnection, limit: int) -> list[uuid.UUID]:
    """Ids of expired holds no other sweeper is working on, locked."""
    cur = await conn.execute(
        """SELECT id FROM holds WHERE status = 'held' AND expires_at <= now()
            ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED""",
        (limit,),
    )
    return [row[0] for row in await cur.fetchall()]


async def available_of(
    conn: AsyncConnection, user_ids: list[uuid.UUID]
) -> dict[uuid.UUID, Decimal]:
    cur = await conn.execute("SELECT id, balance - held FROM users WHERE id = ANY(%s)", (user_ids,))
    return dict(await cur.fetchall())


# --- export --------------------------------------------------------------------------


async def export_watermark(conn: AsyncConnection) -> datetime:
    """An instant no uncommitted change can be older than: the start of the oldest open
    transaction in this database (ours included). A change committed after this statement
    ran carries an updated_at >= it (updated_at is its transaction's now()), so an export
    from it misses nothing."""
    cur = await conn.execute(
        """SELECT least(now(), min(xact_start)) FROM pg_stat_activity
            WHERE datname = current_database() AND xact_start IS NOT NULL"""
    )
    return _one(await cur.fetchone())[0]


# Sorts before every id gen_random_uuid() makes (a version 4 UUID is never all zeros).
NIL_UUID = uuid.UUID(int=0)


async def snapshots_page(
    conn: AsyncConnection,
    since: datetime | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[UserSnapshot]:
    """Up to `limit` users changed at or after `since`, in (updated_at, id) order, from just
    past `after` (the last row of the previous page). One row comparison, so the scan of
    idx_users_updated_at_id starts where the previous page ended."""
    start, last_id = after if after is not None else (since, NIL_UUID)
    cur = conn.cursor(row_factory=class_row(UserSnapshot))
    await cur.execute(
        """SELECT id AS user_id, card_id, status, balance - held AS available, updated_at
             FROM users
            WHERE (updated_at, id) > (coalesce(%s::timestamptz, '-infinity'), %s::uuid)
            ORDER BY updated_at, id LIMIT %s""",
        (start, last_id, limit),
    )
    return await cur.fetchall()


def _one(row):
    if row is None:
        raise LookupError("statement returned no row")
    return row


# --- audit ---------------------------------------------------------------------------


async def invariant_violations(conn: AsyncConnection) -> list[str]:
    """Users whose wallet disagrees with its ledger or holds, or an active card in debt
    (domain.debt_change); empty when the money is right. The triggers and CHECKs make these
    impossible; this is the independent check."""
    cur = await conn.execute(
        """SELECT u.card_id, u.balance, coalesce(l.total, 0), u.held, coalesce(h.total, 0)
             FROM users u
             LEFT JOIN (SELECT user_id, sum(amount) AS total FROM ledger_entries
                         GROUP BY user_id) l ON l.user_id = u.id
             LEFT JOIN (SELECT user_id, sum(amount) AS total FROM holds WHERE status = 'held'
                         GROUP BY user_id) h ON h.user_id = u.id
            WHERE u.balance <> coalesce(l.total, 0)
               OR u.held <> coalesce(h.total, 0)
               OR (u.balance - u.held < 0 AND u.status = 'active')"""
    )
    return [
        f"{card}: balance {balance} vs ledger {ledger}, held {held} vs holds {holds}"
        for card, balance, ledger, held, holds in await cur.fetchall()
    ]
