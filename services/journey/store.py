"""SQL of the journeys (psycopg 3, parameters only; the taps are in tap_store.py). Every
function runs on the caller's connection and inside the caller's transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from libs.db.database import enum_types
from libs.events.outbox import EVENT_VALUES, OUTBOX_COLUMNS
from services.journey.domain import (
    Closing,
    Journey,
    JourneyStatus,
    Settlement,
    TapAnswer,
    TapKind,
    TapState,
)

JOURNEY_COLUMNS = ", ".join(f.name for f in fields(Journey))
# The advisory lock space (first key) of lock_rider_exits.
EXIT_LOCKS = 4_005_001


# Maps the database enums onto the domain enums, once per pooled connection.
register_types = enum_types(
    {
        "journey_status_enum": JourneyStatus,
        "settlement_status": Settlement,
        "tap_kind": TapKind,
        "tap_state": TapState,
    }
)


# --- journeys ----------------------------------------------------------------------------


async def journey(conn: AsyncConnection, journey_id: uuid.UUID) -> Journey | None:
    cur = conn.cursor(row_factory=class_row(Journey))
    await cur.execute(f"SELECT {JOURNEY_COLUMNS} FROM journey_history WHERE id = %s", (journey_id,))
    return await cur.fetchone()


async def active_journey(
    conn: AsyncConnection, user_id: uuid.UUID, *, lock: bool = False
) -> Journey | None:
    cur = conn.cursor(row_factory=class_row(Journey))
    await cur.execute(
        f"""SELECT {JOURNEY_COLUMNS} FROM journey_history
             WHERE user_id = %s AND status = 'active' {"FOR UPDATE" if lock else ""}""",
        (user_id,),
    )
    return await cur.fetchone()


async def journey_closed_by(conn: AsyncConnection, tap_id: uuid.UUID) -> Journey | None:
    """The journey a check-out tap closed (claimed), if any."""
    cur = conn.cursor(row_factory=class_row(Journey))
    await cur.execute(
        f"SELECT {JOURNEY_COLUMNS} FROM journey_history WHERE closing_tap_id = %s", (tap_id,)
    )
    return await cur.fetchone()


async def nearest_exit(
    conn: AsyncConnection, user_id: uuid.UUID, terminal_code: str, at: datetime, within: timedelta
) -> Journey | None:
    """The rider's journey ended by a check-out at `terminal_code` nearest to `at`, less than
    `within` away (the check-out a new exit tap there may repeat: passback.repeats_exit)."""
    cur = conn.cursor(row_factory=class_row(Journey))
    await cur.execute(
        f"""SELECT {JOURNEY_COLUMNS} FROM journey_history
             WHERE user_id = %(user_id)s AND checkout_terminal_code = %(terminal)s
               AND status IN ('completed', 'incomplete')
               AND checkout_time > %(at)s - %(within)s AND checkout_time < %(at)s + %(within)s
             ORDER BY abs(extract(epoch FROM checkout_time - %(at)s)) LIMIT 1""",
        {"user_id": user_id, "terminal": terminal_code, "at": at, "within": within},
    )
    return await cur.fetchone()


async def lock_rider_exits(conn: AsyncConnection, user_id: uuid.UUID) -> None:
    """Serialize, until the transaction ends, the exits of a rider without an active
    journey: a second exit tap then sees the incomplete journey the first one made."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (EXIT_LOCKS, str(user_id)))


INSERT_COLUMNS = """id, user_id, card_id, status, settlement,
    checkin_terminal_code, checkin_terminal_name, checkin_gate_code, checkin_time,
    checkout_terminal_code, checkout_terminal_name, checkout_gate_code, checkout_time,
    held_amount, fare_charged, pricing, close_reason, hold_reference, closing_tap_id,
    metadata, closed_at"""
INSERT_VALUES = """%(id)s, %(user_id)s, %(card_id)s, %(status)s, %(settlement)s,
    %(checkin_terminal_code)s, %(checkin_terminal_name)s, %(checkin_gate_code)s,
    %(checkin_time)s, %(checkout_terminal_code)s, %(checkout_terminal_name)s,
    %(checkout_gate_code)s, %(checkout_time)s, %(held_amount)s, %(fare_charged)s,
    %(pricing)s, %(close_reason)s, %(hold_reference)s, %(closing_tap_id)s,
    %(metadata)s, CASE WHEN %(closed)s THEN now() END"""


def _journey_values(j: Journey) -> dict[str, Any]:
    values = {f.name: getattr(j, f.name) for f in fields(Journey)}
    values.update(metadata=Jsonb(j.metadata), closed=j.status is not JourneyStatus.ACTIVE)
    return values


async def insert_journey(conn: AsyncConnection, j: Journey) -> Journey | None:
    """Insert `j`; None when a journey with its id exists (a retry of the same tap). Raises
    UniqueViolation when `j` is active and its user already has an active journey."""
    cur = conn.cursor(row_factory=class_row(Journey))
    await cur.execute(
        f"""INSERT INTO journey_history ({INSERT_COLUMNS}) VALUES ({INSERT_VALUES})
            ON CONFLICT (id) DO NOTHING RETURNING {JOURNEY_COLUMNS}""",
        _journey_values(j),
    )
    return await cur.fetchone()


async def start_journey(
    conn: AsyncConnection, j: Journey, tap_id: uuid.UUID, answer: bytes, event: dict[str, Any]
) -> Journey | None:
    """Store the check-in tap's answer, insert the journey it starts and its event, in one
    statement — only while the tap is pending: None when another attempt answered it first
    (or the sweeper expired it), and nothing is written then. Raises UniqueViolation when the
    rider already has another active journey."""
    cur = conn.cursor(row_factory=class_row(Journey))
    await cur.execute(
        f"""WITH answered AS (
                UPDATE taps SET state = 'done', response = %(answer)s, journey_id = %(id)s,
                       updated_at = now()
                 WHERE tap_id = %(tap_id)s AND state = 'pending'
             RETURNING 1),
            started AS (
                INSERT INTO journey_history ({INSERT_COLUMNS})
                SELECT {INSERT_VALUES} FROM answered
             RETURNING {JOURNEY_COLUMNS}),
            announced AS (
                INSERT INTO outbox ({OUTBOX_COLUMNS}) SELECT {EVENT_VALUES} FROM started)
            SELECT {JOURNEY_COLUMNS} FROM started""",
        {**_journey_values(j), **event, "tap_id": tap_id, "answer": answer},
    )
    return await cur.fetchone()


CLOSING_SET = """status = %(c_status)s, settlement = 'pending', fare_charged = %(c_fare)s,
    pricing = %(c_pricing)s, close_reason = %(c_reason)s,
    checkout_terminal_code = %(c_exit_code)s, checkout_terminal_name = %(c_exit_name)s,
    checkout_gate_code = %(c_exit_gate)s, checkout_time = %(c_checkout_time)s,
    closing_tap_id = %(c_tap_id)s, metadata = metadata || %(c_metadata)s, closed_at = now(),
    updated_at = now()"""


def closing_values(c: Closing) -> dict[str, Any]:
    """The named parameters of CLOSING_SET."""
    code, name, gate = c.exit or (None, None, None)
    return {
        "c_status": c.status,
        "c_fare": c.fare,
        "c_pricing": c.pricing,
        "c_reason": c.reason,
        "c_exit_code": code,
        "c_exit_name": name,
        "c_exit_gate": gate,
        "c_checkout_time": c.checkout_time,
        "c_tap_id": c.closing_tap_id,
        "c_metadata": Jsonb(c.metadata),
    }


async def claim(conn: AsyncConnection, journey_id: uuid.UUID, c: Closing) -> Journey | None:
    """Close an active journey as `c` says, money still to settle; None when it is no
    longer active (another tap or the sweeper closed it first)."""
    cur = conn.cursor(row_factory=class_row(Journey))
    await cur.execute(
        f"""UPDATE journey_history SET {CLOSING_SET}
             WHERE id = %(id)s AND status = 'active' RETURNING {JOURNEY_COLUMNS}""",
        {**closing_values(c), "id": journey_id},
    )
    return await cur.fetchone()


async def claim_overdue(
    conn: AsyncConnection, older_than: timedelta, reason: str, limit: int
) -> list[Journey]:
    """Close as abandoned (charged the held fare, money still to settle) up to `limit`
    journeys active for longer than `older_than` that no other sweeper is closing."""
    cur = conn.cursor(row_factory=class_row(Journey))
    await cur.execute(
        f"""UPDATE journey_history
               SET status = 'abandoned', settlement = 'pending', fare_charged = held_amount,
                   pricing = 'abandoned', close_reason = %s, closed_at = now(),
                   updated_at = now()
             WHERE id IN (SELECT id FROM journey_history
                           WHERE status = 'active' AND created_at < now() - %s
                           ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED)
         RETURNING {JOURNEY_COLUMNS}""",
        (reason, older_than, limit),
    )
    return await cur.fetchall()


async def settle(
    conn: AsyncConnection,
    settled: Journey,
    event: dict[str, Any] | None,
    answer: TapAnswer | None,
) -> Journey | None:
    """Record the outcome of a pending closing (`settled`: the journey as it becomes), its
    event (when it has one) and — `answer` — the answer of the check-out tap that closed it,
    in one statement; None when another attempt settled it first, and nothing is written
    then."""
    tap = answer or TapAnswer(TapState.DONE, None, None, None)
    announced = (
        f"announced AS (INSERT INTO outbox ({OUTBOX_COLUMNS}) SELECT {EVENT_VALUES} FROM settled),"
        if event is not None
        else ""
    )
    cur = conn.cursor(row_factory=class_row(Journey))
    await cur.execute(
        f"""WITH settled AS (
                UPDATE journey_history
                   SET settlement = %(settlement)s, remaining_balance = %(remaining)s,
                       metadata = metadata || %(metadata)s, updated_at = now()
                 WHERE id = %(id)s AND settlement = 'pending' RETURNING {JOURNEY_COLUMNS}),
            {announced}
            answered AS (
                UPDATE taps SET state = %(tap_state)s, response = %(tap_response)s,
                       refusal_reason = %(tap_reason)s, refusal_message = %(tap_message)s,
                       journey_id = %(id)s, updated_at = now()
                 WHERE tap_id = %(tap_id)s AND state = 'pending'
                   AND EXISTS (SELECT 1 FROM settled))
            SELECT {JOURNEY_COLUMNS} FROM settled""",
        {
            **(event or {}),
            "id": settled.id,
            "settlement": settled.settlement,
            "remaining": settled.remaining_balance,
            "metadata": Jsonb(settled.metadata),
            "tap_id": settled.closing_tap_id if answer else None,
            "tap_state": tap.state,
            "tap_response": tap.response,
            "tap_reason": tap.reason,
            "tap_message": tap.message,
        },
    )
    return await cur.fetchone()


async def undo_closing(conn: AsyncConnection, j: Journey) -> bool:
    """Put a journey whose check-out the wallet refused back as it was: active again, or
    gone when it was the incomplete journey the tap made. False when already settled."""
    if j.status is JourneyStatus.INCOMPLETE:
        return await changed(
            conn,
            "DELETE FROM journey_history WHERE id = %s AND settlement = 'pending' RETURNING 1",
            (j.id,),
        )
    return await changed(
        conn,
        """UPDATE journey_history
              SET status = 'active', settlement = 'none', fare_charged = NULL, pricing = NULL,
                  close_reason = NULL, checkout_terminal_code = NULL,
                  checkout_terminal_name = NULL, checkout_gate_code = NULL,
                  checkout_time = NULL, closing_tap_id = NULL, closed_at = NULL,
                  updated_at = now()
            WHERE id = %s AND settlement = 'pending' RETURNING 1""",
        (j.id,),
    )


async def unsettled(conn: AsyncConnection, older_than: timedelta, limit: int) -> list[Journey]:
    """Closed journeys whose money is still unconfirmed after `older_than`."""
    cur = conn.cursor(row_factory=class_row(Journey))
    await cur.execute(
        f"""SELECT {JOURNEY_COLUMNS} FROM journey_history
             WHERE settlement = 'pending' AND updated_at < now() - %s
             ORDER BY updated_at LIMIT %s""",
        (older_than, limit),
    )
    return await cur.fetchall()


@dataclass(frozen=True)
class JourneyFilter:
    user_id: uuid.UUID | None = None
    terminal_code: str | None = None
    started_from: datetime | None = None
    started_before: datetime | None = None
    status: JourneyStatus | None = None


async def list_journeys(
    conn: AsyncConnection,
    f: JourneyFilter,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Journey]:
    """Newest first, keyset-paged on (started_at, id)."""
    conditions: list[str] = []
    params: list[Any] = []
    for sql, value in (
        ("user_id = %s", f.user_id),
        ("started_at >= %s", f.started_from),
        ("started_at < %s", f.started_before),
        ("status = %s", f.status),
    ):
        if value is not None:
            conditions.append(sql)
            params.append(value)
    if f.terminal_code is not None:
        conditions.append("(checkin_terminal_code = %s OR checkout_terminal_code = %s)")
        params += [f.terminal_code, f.terminal_code]
    if after is not None:
        conditions.append("(started_at, id) < (%s, %s)")
        params += list(after)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    cur = conn.cursor(row_factory=class_row(Journey))
    await cur.execute(
        f"""SELECT {JOURNEY_COLUMNS} FROM journey_history {where}
             ORDER BY started_at DESC, id DESC LIMIT %s""",
        (*params, limit),
    )
    return await cur.fetchall()


async def changed(conn: AsyncConnection, statement: str, params: tuple) -> bool:
    """Whether a conditional UPDATE/DELETE … RETURNING hit its row (rowcount is unknown
    until a pipeline syncs; fetching the row forces the sync)."""
    cur = await conn.execute(statement, params)
    return await cur.fetchone() is not None
