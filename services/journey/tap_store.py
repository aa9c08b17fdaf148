"""SQL of the taps: each gate tap recorded once, with the first answer it got (psycopg 3,
parameters only; every function runs in the caller's transaction)."""

from __future__ import annotations

import uuid
from dataclasses import fields
from datetime import timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row

from services.journey import store
from services.journey.domain import Closing, Journey, Tap, TapRequest, TapState

TAP_COLUMNS = ", ".join(f.name for f in fields(Tap))
TAP_WIDTH = len(fields(Tap))


async def tap(conn: AsyncConnection, tap_id: uuid.UUID) -> Tap | None:
    cur = conn.cursor(row_factory=class_row(Tap))
    await cur.execute(f"SELECT {TAP_COLUMNS} FROM taps WHERE tap_id = %s", (tap_id,))
    return await cur.fetchone()


def _recording(journey_id: str) -> str:
    """The CTEs `inserted` — the tap, pending, unless it exists — and `recorded` — the tap as
    recorded, by this statement or a first attempt (whose clock wins when the gate sent no
    tapped_at). `journey_id` is the SQL of the journey it belongs to."""
    return f"""inserted AS (
        INSERT INTO taps (tap_id, kind, card_id, terminal_code, gate_code, tapped_at, user_id,
                          journey_id)
        VALUES (%(tap_id)s, %(kind)s, %(card_id)s, %(terminal_code)s, %(gate_code)s,
                coalesce(%(tapped_at)s, now()), %(user_id)s, {journey_id})
        ON CONFLICT (tap_id) DO NOTHING RETURNING {TAP_COLUMNS}),
    recorded AS (
        SELECT {TAP_COLUMNS} FROM inserted
        UNION ALL
        SELECT {TAP_COLUMNS} FROM taps
         WHERE tap_id = %(tap_id)s AND NOT EXISTS (SELECT 1 FROM inserted))"""


def _tap_values(request: TapRequest, user_id: uuid.UUID) -> dict[str, Any]:
    return {
        "tap_id": request.tap_id,
        "kind": request.kind,
        "card_id": request.card_id,
        "terminal_code": request.terminal_code,
        "gate_code": request.gate_code,
        "tapped_at": request.tapped_at,
        "user_id": user_id,
    }


async def record_tap(
    conn: AsyncConnection,
    request: TapRequest,
    user_id: uuid.UUID,
    journey_id: uuid.UUID | None,
    *,
    with_active: bool = False,
) -> tuple[Tap, uuid.UUID | None] | None:
    """Record the tap as pending unless it exists, in one statement: the tap as recorded
    and, `with_active`, the id of the rider's active journey. None when a concurrent first
    attempt was recording it just then (the statement waited for it, but its snapshot
    cannot see it): ask again."""
    cur = await conn.execute(
        f"""WITH {_recording("%(journey_id)s")}
            SELECT {TAP_COLUMNS},
                   CASE WHEN %(with_active)s THEN (SELECT id FROM journey_history
                                                    WHERE user_id = %(user_id)s
                                                      AND status = 'active')
                   END
              FROM recorded""",
        {**_tap_values(request, user_id), "journey_id": journey_id, "with_active": with_active},
    )
    row = await cur.fetchone()
    return None if row is None else (Tap(*row[:-1]), row[-1])


async def record_checkout(
    conn: AsyncConnection,
    request: TapRequest,
    user_id: uuid.UUID,
    journey_id: uuid.UUID,
    closing: Closing,
) -> tuple[Tap, Journey | None] | None:
    """Close `journey_id` as the check-out tap asks — when it is still the rider's active
    journey and the tap is new — and record the tap, linked to it, in one statement. The
    tap as recorded and the journey claimed (None when not); None when a concurrent attempt
    was recording the tap just then. The claim runs first (the tap's row names it)."""
    cur = await conn.execute(
        f"""WITH claimed AS (
                UPDATE journey_history SET {store.CLOSING_SET}
                 WHERE id = %(claim_id)s AND user_id = %(user_id)s AND status = 'active'
                   AND NOT EXISTS (SELECT 1 FROM taps WHERE tap_id = %(tap_id)s)
             RETURNING {store.JOURNEY_COLUMNS}),
            {_recording("(SELECT id FROM claimed)")}
            SELECT r.*, c.* FROM recorded r LEFT JOIN claimed c ON true""",
        {
            **_tap_values(request, user_id),
            **store.closing_values(closing),
            "claim_id": journey_id,
        },
    )
    row = await cur.fetchone()
    if row is None:
        return None
    tap = Tap(*row[:TAP_WIDTH])
    return tap, None if row[TAP_WIDTH] is None else Journey(*row[TAP_WIDTH:])


async def refuse_tap(
    conn: AsyncConnection,
    tap_id: uuid.UUID,
    state: TapState,
    reason: str,
    message: str,
    detail: bytes | None = None,
    *,
    release_owed: bool = False,
) -> bool:
    """Answer a pending tap with a refusal (or TAP_EXPIRED) — `release_owed`: its hold is
    still to release; False when it was answered already, and nothing is written then."""
    return await store.changed(
        conn,
        """UPDATE taps SET state = %s, refusal_reason = %s, refusal_message = %s,
                  refusal_detail = %s, release_owed = %s, updated_at = now()
            WHERE tap_id = %s AND state = 'pending' RETURNING 1""",
        (state, reason, message, detail, release_owed, tap_id),
    )


async def owe_release(conn: AsyncConnection, tap_id: uuid.UUID) -> bool:
    """Note that the hold of a check-in tap answered without its journey is still to
    release; False when the tap started its journey (the hold is that journey's)."""
    return await store.changed(
        conn,
        """UPDATE taps SET release_owed = true, updated_at = now()
            WHERE tap_id = %s AND kind = 'checkin' AND state IN ('refused', 'expired')
        RETURNING 1""",
        (tap_id,),
    )


async def released(conn: AsyncConnection, tap_id: uuid.UUID) -> None:
    """The owed release of the tap's hold is confirmed."""
    await conn.execute(
        "UPDATE taps SET release_owed = false, updated_at = now() WHERE tap_id = %s", (tap_id,)
    )


async def owed_releases(conn: AsyncConnection, limit: int) -> list[Tap]:
    """Check-in taps whose hold is still to release, oldest first."""
    cur = conn.cursor(row_factory=class_row(Tap))
    await cur.execute(
        f"""SELECT {TAP_COLUMNS} FROM taps WHERE release_owed
             ORDER BY updated_at LIMIT %s""",
        (limit,),
    )
    return await cur.fetchall()


async def link_tap(conn: AsyncConnection, tap_id: uuid.UUID, journey_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE taps SET journey_id = %s, updated_at = now() WHERE tap_id = %s",
        (journey_id, tap_id),
    )


async def stale_taps(conn: AsyncConnection, older_than: timedelta, limit: int) -> list[Tap]:
    """Taps still pending after `older_than`: attempts that crashed or were given up. A
    check-out tap's journey is the one it closed, whether or not the tap row names it."""
    columns = ", ".join(
        "coalesce(t.journey_id, j.id) AS journey_id" if f.name == "journey_id" else f"t.{f.name}"
        for f in fields(Tap)
    )
    cur = conn.cursor(row_factory=class_row(Tap))
    await cur.execute(
        f"""SELECT {columns} FROM taps t
              LEFT JOIN journey_history j ON j.closing_tap_id = t.tap_id
             WHERE t.state = 'pending' AND t.created_at < now() - %s
             ORDER BY t.created_at LIMIT %s""",
        (older_than, limit),
    )
    return await cur.fetchall()
