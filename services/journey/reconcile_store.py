"""SQL of reconciliation (reconcile.py): a card's timeline read, its journeys rewritten, the
adjustments and the offline taps recorded (psycopg 3, parameters only; every function runs
in the caller's transaction)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from services.journey import store
from services.journey.domain import Journey, Tap
from services.journey.tap_store import TAP_COLUMNS

# The advisory lock space (first key) of a card's timeline.
TIMELINE_LOCKS = 4_005_016
WRITTEN = [f.name for f in fields(Journey) if f.name != "journey_duration_minutes"]


@dataclass(frozen=True)
class Adjustment:
    """A re-pricing of a journey already paid, to move on the wallet (adjustments.py)."""

    id: uuid.UUID
    journey_id: uuid.UUID
    user_id: uuid.UUID
    amount: Decimal  # > 0 charged to the rider, < 0 refunded
    reason: str


async def lock_timeline(conn: AsyncConnection, user_id: uuid.UUID) -> None:
    """Serialize, until the transaction ends, the reconciliations of one card."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (TIMELINE_LOCKS, str(user_id))
    )


async def taps(conn: AsyncConnection, tap_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Tap]:
    cur = conn.cursor(row_factory=class_row(Tap))
    await cur.execute(f"SELECT {TAP_COLUMNS} FROM taps WHERE tap_id = ANY(%s)", (list(tap_ids),))
    return {t.tap_id: t for t in await cur.fetchall()}


async def replay_start(conn: AsyncConnection, user_id: uuid.UUID, earliest: datetime) -> datetime:
    """Where the card's replay starts (timeline.py rule 1): its last check-in before
    `earliest` that started a journey, else `earliest`."""
    cur = await conn.execute(
        """SELECT max(checkin_time) FROM journey_history
            WHERE user_id = %s AND checkin_time < %s AND status <> 'cancelled'""",
        (user_id, earliest),
    )
    row = await cur.fetchone()
    return row[0] if row and row[0] is not None else earliest


async def facts(conn: AsyncConnection, user_id: uuid.UUID, since: datetime) -> list[Tap]:
    """The card's taps since `since` that opened a gate: answered OK (online or offline),
    or the check-out that closed a journey (closed unpaid: the gate stayed shut, the
    journey stays closed)."""
    cur = conn.cursor(row_factory=class_row(Tap))
    await cur.execute(
        f"""SELECT {TAP_COLUMNS} FROM taps t
             WHERE user_id = %(user_id)s AND tapped_at >= %(since)s
               AND (state = 'done' OR EXISTS (SELECT 1 FROM journey_history j
                                               WHERE j.closing_tap_id = t.tap_id))""",
        {"user_id": user_id, "since": since},
    )
    return await cur.fetchall()


async def journeys(conn: AsyncConnection, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Journey]:
    cur = conn.cursor(row_factory=class_row(Journey))
    await cur.execute(
        f"SELECT {store.JOURNEY_COLUMNS} FROM journey_history WHERE id = ANY(%s)", (list(ids),)
    )
    return {j.id: j for j in await cur.fetchall()}


async def unsettled(conn: AsyncConnection, user_id: uuid.UUID) -> list[Journey]:
    """The card's closings whose money is not confirmed yet."""
    cur = conn.cursor(row_factory=class_row(Journey))
    await cur.execute(
        f"""SELECT {store.JOURNEY_COLUMNS} FROM journey_history
             WHERE user_id = %s AND settlement = 'pending'""",
        (user_id,),
    )
    return await cur.fetchall()


async def write_journeys(conn: AsyncConnection, rows: Sequence[Journey]) -> list[Journey]:
    """Write each journey as given (insert or replace) and answer them as written, with the
    duration the database's trigger computed (their events carry it). Closing taps are let
    go first, so a tap may move from one journey to another; `rows` come closings first, so
    a rider never has two open journeys at once."""
    if not rows:
        return []
    await conn.execute(
        "UPDATE journey_history SET closing_tap_id = NULL WHERE id = ANY(%s)",
        ([j.id for j in rows],),
    )
    columns = ", ".join(WRITTEN)
    values = ", ".join(f"%({c})s" for c in WRITTEN)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in WRITTEN if c not in ("id", "created_at"))
    async with conn.cursor(row_factory=class_row(Journey)) as cur:
        await cur.executemany(
            f"""INSERT INTO journey_history ({columns}) VALUES ({values})
                ON CONFLICT (id) DO UPDATE SET {updates}, updated_at = now()
                RETURNING {store.JOURNEY_COLUMNS}""",
            [_values(j) for j in rows],
            returning=True,
        )
        return [row async for result in cur.results() for row in await result.fetchall()]


def _values(j: Journey) -> dict[str, Any]:
    values = {c: getattr(j, c) for c in WRITTEN}
    values["metadata"] = Jsonb(j.metadata)
    return values


async def insert_adjustments(conn: AsyncConnection, rows: Sequence[Adjustment]) -> None:
    if not rows:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            """INSERT INTO journey_adjustments (id, journey_id, user_id, amount, reason)
               VALUES (%s, %s, %s, %s, %s)""",
            [(a.id, a.journey_id, a.user_id, a.amount, a.reason[:255]) for a in rows],
        )


async def pending_adjustments(
    conn: AsyncConnection, user_id: uuid.UUID | None, older_than: timedelta, limit: int
) -> list[Adjustment]:
    """Adjustments not yet moved on the wallet (of one card, or of all), oldest first."""
    cur = conn.cursor(row_factory=class_row(Adjustment))
    await cur.execute(
        """SELECT id, journey_id, user_id, amount, reason FROM journey_adjustments
            WHERE state = 'pending' AND (%(user)s::uuid IS NULL OR user_id = %(user)s)
              AND updated_at <= now() - %(older)s
            ORDER BY updated_at LIMIT %(limit)s""",
        {"user": user_id, "older": older_than, "limit": limit},
    )
    return await cur.fetchall()


async def adjustment_moved(conn: AsyncConnection, adjustment_id: uuid.UUID) -> None:
    """The adjustment is moved ('done'). ('unpaid', a charge the wallet refused, is only in
    rows written before charges were taken into debt: see wallet.py.)"""
    await conn.execute(
        """UPDATE journey_adjustments SET state = 'done', updated_at = now()
            WHERE id = %s AND state = 'pending'""",
        (adjustment_id,),
    )


async def link_taps(conn: AsyncConnection, links: Sequence[tuple[uuid.UUID, uuid.UUID]]) -> None:
    """Point check-out taps (tap_id, journey_id) at the journey they now close or repeat."""
    if not links:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            """UPDATE taps SET journey_id = %(journey)s, updated_at = now()
                WHERE tap_id = %(tap)s AND kind = 'checkout'
                  AND journey_id IS DISTINCT FROM %(journey)s""",
            [{"tap": t, "journey": j} for t, j in links],
        )


async def record_offline(conn: AsyncConnection, recorded: Sequence[tuple[Tap, bytes]]) -> int:
    """Record offline taps with their answers — a new one inserted, one the gate first tried
    online and that ended without opening the gate taken over (offline.adoptable). How many
    were written (fewer: another attempt got to one first)."""
    written = 0
    for tap, answer in recorded:
        cur = await conn.execute(
            f"""INSERT INTO taps ({", ".join(INSERTED)})
                VALUES ({", ".join(["%s"] * len(INSERTED))})
                ON CONFLICT (tap_id) DO UPDATE
                   SET state = 'done', response = EXCLUDED.response,
                       tapped_at = EXCLUDED.tapped_at, refusal_reason = NULL,
                       refusal_message = NULL, refusal_detail = NULL, offline = true,
                       offline_amount = EXCLUDED.offline_amount, updated_at = now()
                 WHERE taps.state IN ('refused', 'expired') AND NOT taps.offline
                RETURNING 1""",
            [answer if name == "response" else getattr(tap, name) for name in INSERTED],
        )
        written += await cur.fetchone() is not None
    return written


# Every column of a tap but its creation time (the database's clock).
INSERTED = [f.name for f in fields(Tap) if f.name != "created_at"]
