"""SQL of the taps: each gate tap recorded once, with the first answer it got (psycopg 3,
parameters only; every function runs in the caller's transaction)."""

from __future__ import annotations

import uuid
from dataclasses import fields
from datetime import timedelta

from psycopg import AsyncConnection
from psycopg.rows import class_row

from services.journey import store
from services.journey.domain import Tap, TapRequest, TapState

TAP_COLUMNS = ", ".join(f.name for f in fields(Tap))


async def tap(conn: AsyncConnection, tap_id: uuid.UUID) -> Tap | None:
    cur = conn.cursor(row_factory=class_row(Tap))
    await cur.execute(f"SELECT {TAP_COLUMNS} FROM taps WHERE tap_id = %s", (tap_id,))
    return await cur.fetchone()


RECORD_TAP = f"""
    WITH inserted AS (
        INSERT INTO taps (tap_id, kind, card_id, terminal_code, gate_code, tapped_at, user_id,
                          journey_id)
        VALUES (%(tap_id)s, %(kind)s, %(card_id)s, %(terminal_code)s, %(gate_code)s,
                coalesce(%(tapped_at)s, now()), %(user_id)s, %(journey_id)s)
        ON CONFLICT (tap_id) DO NOTHING RETURNING {TAP_COLUMNS}),
    recorded AS (
        SELECT {TAP_COLUMNS} FROM inserted
        UNION ALL
        SELECT {TAP_COLUMNS} FROM taps
         WHERE tap_id = %(tap_id)s AND NOT EXISTS (SELECT 1 FROM inserted))
    SELECT {TAP_COLUMNS},
           CASE WHEN %(with_active)s THEN (SELECT id FROM journey_history
                                            WHERE user_id = %(user_id)s AND status = 'active')
           END
      FROM recorded"""


async def record_tap(
    conn: AsyncConnection,
    request: TapRequest,
    user_id: uuid.UUID,
    journey_id: uuid.UUID | None,
    *,
    with_active: bool = False,
) -> store.Read[tuple[Tap, uuid.UUID | None] | None]:
    """Record the tap as pending unless it exists, in one statement. The reader gives the
    tap as recorded — by this attempt or a first one (whose clock wins when the gate sent
    no tapped_at) — and, `with_active`, the id of the rider's active journey. None when a
    concurrent first attempt was recording it just then (the statement waited for it, but
    its snapshot cannot see it): ask again."""
    cur = await conn.execute(
        RECORD_TAP,
        {
            "tap_id": request.tap_id,
            "kind": request.kind,
            "card_id": request.card_id,
            "terminal_code": request.terminal_code,
            "gate_code": request.gate_code,
            "tapped_at": request.tapped_at,
            "user_id": user_id,
            "journey_id": journey_id,
            "with_active": with_active,
        },
    )

    async def read() -> tuple[Tap, uuid.UUID | None] | None:
        row = await cur.fetchone()
        return None if row is None else (Tap(*row[:-1]), row[-1])

    return read


async def finish_tap(
    conn: AsyncConnection, tap_id: uuid.UUID, response: bytes, journey_id: uuid.UUID
) -> store.Read[bool]:
    """Store the answer of a pending tap. The reader says whether this did it (False when
    another attempt finished the tap first)."""
    cur = await conn.execute(
        """UPDATE taps SET state = 'done', response = %s, journey_id = %s, updated_at = now()
            WHERE tap_id = %s AND state = 'pending' RETURNING 1""",
        (response, journey_id, tap_id),
    )

    async def read() -> bool:
        return await cur.fetchone() is not None

    return read


async def refuse_tap(
    conn: AsyncConnection, tap_id: uuid.UUID, state: TapState, reason: str, message: str
) -> bool:
    return await store.changed(
        conn,
        """UPDATE taps SET state = %s, refusal_reason = %s, refusal_message = %s,
                  updated_at = now()
            WHERE tap_id = %s AND state = 'pending' RETURNING 1""",
        (state, reason, message, tap_id),
    )


async def link_tap(conn: AsyncConnection, tap_id: uuid.UUID, journey_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE taps SET journey_id = %s, updated_at = now() WHERE tap_id = %s",
        (journey_id, tap_id),
    )


async def stale_taps(conn: AsyncConnection, older_than: timedelta, limit: int) -> list[Tap]:
    """Taps still pending after `older_than`: attempts that crashed or were given up."""
    cur = conn.cursor(row_factory=class_row(Tap))
    await cur.execute(
        f"""SELECT {TAP_COLUMNS} FROM taps
             WHERE state = 'pending' AND created_at < now() - %s
             ORDER BY created_at LIMIT %s""",
        (older_than, limit),
    )
    return await cur.fetchall()
