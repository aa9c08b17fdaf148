"""SQL of the terminal & fare service (psycopg 3, parameters only). Every function runs on
the caller's connection and inside the caller's transaction."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from psycopg import AsyncConnection
from psycopg.rows import class_row

from libs.db.database import enum_types
from services.fare.domain import (
    FareVersion,
    Gate,
    GateStatus,
    GateType,
    Terminal,
    TerminalFields,
)

TERMINAL_COLUMNS = (
    "id, code, name, location, latitude, longitude, is_active, created_at, updated_at"
)
# %(stale)s: the heartbeat age after which an online gate counts as offline.
GATE_SELECT = """
    SELECT g.id, t.code AS terminal_code, g.gate_code, g.gate_type,
           g.status AS reported_status, g.last_heartbeat, g.created_at, g.updated_at,
           g.last_heartbeat < now() - %(stale)s AS stale
      FROM gates g JOIN terminals t ON t.id = g.terminal_id"""
FARE_SELECT = """
    SELECT f.id, o.code AS origin, d.code AS destination, f.price, f.effective_from,
           f.effective_until, f.source, f.created_at, f.is_active
      FROM fares f
      JOIN terminals o ON o.id = f.origin_terminal_id
      JOIN terminals d ON d.id = f.destination_terminal_id"""


T = TypeVar("T")


# Maps the database enums onto the domain enums, once per pooled connection.
register_types = enum_types({"gate_type": GateType, "gate_status": GateStatus})


# --- terminals -----------------------------------------------------------------------------


async def insert_terminal(conn: AsyncConnection, code: str, f: TerminalFields) -> Terminal | None:
    """The new terminal, or None when `code` is taken."""
    cur = conn.cursor(row_factory=class_row(Terminal))
    await cur.execute(
        f"""INSERT INTO terminals (code, name, location, latitude, longitude, is_active)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (code) DO NOTHING RETURNING {TERMINAL_COLUMNS}""",
        (code, f.name, f.location, f.latitude, f.longitude, f.is_active),
    )
    return await cur.fetchone()


async def terminal(conn: AsyncConnection, code: str, *, lock: bool = False) -> Terminal | None:
    cur = conn.cursor(row_factory=class_row(Terminal))
    suffix = " FOR UPDATE" if lock else ""
    await cur.execute(f"SELECT {TERMINAL_COLUMNS} FROM terminals WHERE code = %s{suffix}", (code,))
    return await cur.fetchone()


async def terminals(conn: AsyncConnection, codes: Sequence[str] | None = None) -> list[Terminal]:
    """The terminals named by `codes` (every terminal when None), by code."""
    cur = conn.cursor(row_factory=class_row(Terminal))
    await cur.execute(
        f"""SELECT {TERMINAL_COLUMNS} FROM terminals
            WHERE %(codes)s::text[] IS NULL OR code = ANY(%(codes)s) ORDER BY code""",
        {"codes": list(codes) if codes is not None else None},
    )
    return await cur.fetchall()


async def list_terminals(
    conn: AsyncConnection, active_only: bool, after_code: str | None, limit: int
) -> list[Terminal]:
    cur = conn.cursor(row_factory=class_row(Terminal))
    await cur.execute(
        f"""SELECT {TERMINAL_COLUMNS} FROM terminals
            WHERE (NOT %(active)s OR is_active) AND (%(after)s::text IS NULL OR code > %(after)s)
            ORDER BY code LIMIT %(limit)s""",
        {"active": active_only, "after": after_code, "limit": limit},
    )
    return await cur.fetchall()


async def update_terminal(conn: AsyncConnection, code: str, f: TerminalFields) -> Terminal:
    cur = conn.cursor(row_factory=class_row(Terminal))
    await cur.execute(
        f"""UPDATE terminals SET name = %s, location = %s, latitude = %s, longitude = %s,
                   is_active = %s, updated_at = now()
            WHERE code = %s RETURNING {TERMINAL_COLUMNS}""",
        (f.name, f.location, f.latitude, f.longitude, f.is_active, code),
    )
    return _one(await cur.fetchone())


# --- gates ---------------------------------------------------------------------------------


async def insert_gate(
    conn: AsyncConnection, terminal_id: int, gate_code: str, gate_type: GateType
) -> bool:
    """False when the terminal already has a gate with this code."""
    cur = await conn.execute(
        """INSERT INTO gates (terminal_id, gate_code, gate_type) VALUES (%s, %s, %s)
           ON CONFLICT (terminal_id, gate_code) DO NOTHING RETURNING id""",
        (terminal_id, gate_code, gate_type),
    )
    return await cur.fetchone() is not None


async def gate(
    conn: AsyncConnection,
    terminal_code: str,
    gate_code: str,
    stale_after: timedelta,
    *,
    lock: bool = False,
) -> Gate | None:
    cur = conn.cursor(row_factory=class_row(Gate))
    suffix = " FOR UPDATE OF g" if lock else ""
    await cur.execute(
        f"{GATE_SELECT} WHERE t.code = %(terminal)s AND g.gate_code = %(gate)s{suffix}",
        {"stale": stale_after, "terminal": terminal_code, "gate": gate_code},
    )
    return await cur.fetchone()


async def list_gates(
    conn: AsyncConnection,
    terminal_code: str | None,
    status: GateStatus | None,
    after: tuple[str, str] | None,
    limit: int,
    stale_after: timedelta,
) -> list[Gate]:
    """Gates by (terminal code, gate code); `status` filters on the believed status."""
    conditions, params = ["true"], {"stale": stale_after, "limit": limit}
    if terminal_code is not None:
        conditions.append("terminal_code = %(terminal)s")
        params["terminal"] = terminal_code
    if status is not None:
        conditions.append(
            "CASE WHEN stale AND reported_status = 'online' THEN 'offline'::gate_status"
            " ELSE reported_status END = %(status)s"
        )
        params["status"] = status
    if after is not None:
        conditions.append("(terminal_code, gate_code) > (%(a_terminal)s, %(a_gate)s)")
        params.update(a_terminal=after[0], a_gate=after[1])
    cur = conn.cursor(row_factory=class_row(Gate))
    await cur.execute(
        f"""SELECT * FROM ({GATE_SELECT}) AS g WHERE {" AND ".join(conditions)}
            ORDER BY terminal_code, gate_code LIMIT %(limit)s""",
        params,
    )
    return await cur.fetchall()


async def set_gate_status(
    conn: AsyncConnection, gate_id: int, status: GateStatus, *, heartbeat: bool
) -> tuple[datetime, datetime]:
    """(last_heartbeat, updated_at) after the change."""
    cur = await conn.execute(
        """UPDATE gates SET status = %s, updated_at = now(),
                  last_heartbeat = CASE WHEN %s THEN now() ELSE last_heartbeat END
            WHERE id = %s RETURNING last_heartbeat, updated_at""",
        (status, heartbeat, gate_id),
    )
    last_heartbeat, updated_at = _one(await cur.fetchone())
    return last_heartbeat, updated_at


async def mark_silent_gates_offline(
    conn: AsyncConnection, stale_after: timedelta, limit: int
) -> list[Gate]:
    """Set `offline` on up to `limit` online gates whose heartbeat stopped; return them as
    they were. SKIP LOCKED: replicas sweeping together take different gates."""
    cur = conn.cursor(row_factory=class_row(Gate))
    await cur.execute(
        """WITH silent AS (
               SELECT id FROM gates
                WHERE status = 'online' AND last_heartbeat < now() - %(stale)s
                ORDER BY last_heartbeat LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
           UPDATE gates g SET status = 'offline', updated_at = now()
             FROM silent, terminals t
            WHERE g.id = silent.id AND t.id = g.terminal_id
        RETURNING g.id, t.code AS terminal_code, g.gate_code, g.gate_type,
                  'online'::gate_status AS reported_status, g.last_heartbeat, g.created_at,
                  g.updated_at, true AS stale""",
        {"stale": stale_after, "limit": limit},
    )
    return await cur.fetchall()


# --- fares ---------------------------------------------------------------------------------


async def pair_versions(conn: AsyncConnection, origin: str, destination: str) -> list[FareVersion]:
    """The active versions of one pair, in time order (what GetFare caches)."""
    cur = conn.cursor(row_factory=class_row(FareVersion))
    await cur.execute(
        f"""{FARE_SELECT}
            WHERE o.code = %s AND d.code = %s AND f.is_active ORDER BY f.effective_from""",
        (origin, destination),
    )
    return await cur.fetchall()


async def origin_versions(conn: AsyncConnection, origin: str) -> list[FareVersion]:
    """The active versions of every pair from `origin` (what GetMaxFare caches)."""
    cur = conn.cursor(row_factory=class_row(FareVersion))
    await cur.execute(
        f"{FARE_SELECT} WHERE o.code = %s AND f.is_active ORDER BY d.code, f.effective_from",
        (origin,),
    )
    return await cur.fetchall()


async def versions_from(
    conn: AsyncConnection, origins: Sequence[str]
) -> dict[tuple[str, str], list[FareVersion]]:
    """The active versions of every pair from `origins`, by (origin, destination), in time
    order: what pair_versions reads for one pair, read for a whole import at once."""
    cur = conn.cursor(row_factory=class_row(FareVersion))
    await cur.execute(
        f"{FARE_SELECT} WHERE o.code = ANY(%s) AND f.is_active ORDER BY f.effective_from",
        (list(origins),),
    )
    by_pair: dict[tuple[str, str], list[FareVersion]] = defaultdict(list)
    for version in await cur.fetchall():
        by_pair[version.origin, version.destination].append(version)
    return by_pair


# Advisory lock class of fare changes ("fare"); the object id is the origin terminal id.
FARE_LOCK_CLASS = 0x66617265


async def lock_origin(conn: AsyncConnection, origin_id: int) -> datetime:
    """Serialise the fare changes from one origin until the transaction ends (changes are
    rare, so per origin rather than per pair: an import of a whole matrix then takes one lock
    per terminal). Return the clock read once the lock is held, so "now" never runs backwards
    between two changes of a pair."""
    cur = await conn.execute(
        "SELECT clock_timestamp() FROM (SELECT pg_advisory_xact_lock(%s, %s)) AS locked",
        (FARE_LOCK_CLASS, origin_id),
    )
    return _one(await cur.fetchone())[0]


async def fare(conn: AsyncConnection, column: str, value: object) -> FareVersion | None:
    assert column in {"id", "request_id"}
    cur = conn.cursor(row_factory=class_row(FareVersion))
    await cur.execute(f"{FARE_SELECT} WHERE f.{column} = %s", (value,))
    return await cur.fetchone()


async def replaced_by(conn: AsyncConnection, fare_id: int) -> FareVersion | None:
    """The version that `fare_id` closed or replaced when it was set."""
    cur = conn.cursor(row_factory=class_row(FareVersion))
    await cur.execute(
        f"{FARE_SELECT} WHERE f.id = (SELECT replaces_id FROM fares WHERE id = %s)", (fare_id,)
    )
    return await cur.fetchone()


async def close_version(conn: AsyncConnection, fare_id: int, until: datetime) -> None:
    await conn.execute(
        "UPDATE fares SET effective_until = %s, updated_at = now() WHERE id = %s",
        (until, fare_id),
    )


async def retire_version(conn: AsyncConnection, fare_id: int) -> None:
    """A scheduled version replaced before it came into force: kept, but no longer counts."""
    await conn.execute(
        "UPDATE fares SET is_active = false, updated_at = now() WHERE id = %s", (fare_id,)
    )


async def insert_version(
    conn: AsyncConnection,
    origin_id: int,
    destination_id: int,
    price: Decimal,
    effective_from: datetime,
    effective_until: datetime | None,
    *,
    replaces_id: int | None,
    source: str,
    request_id: str | None,
    created_by: str | None,
) -> tuple[int, datetime]:
    """(id, created_at) of the new version."""
    cur = await conn.execute(
        """INSERT INTO fares (origin_terminal_id, destination_terminal_id, price, effective_from,
                              effective_until, replaces_id, source, request_id, created_by)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id, created_at""",
        (
            origin_id,
            destination_id,
            price,
            effective_from,
            effective_until,
            replaces_id,
            source,
            request_id,
            created_by,
        ),
    )
    fare_id, created_at = _one(await cur.fetchone())
    return fare_id, created_at


async def list_fares(
    conn: AsyncConnection,
    origin: str | None,
    destination: str | None,
    in_force_at: datetime | None,
    include_inactive: bool,
    after: tuple[str, str, datetime, int] | None,
    limit: int,
) -> list[FareVersion]:
    conditions, params = ["true"], {"limit": limit}
    if origin is not None:
        conditions.append("o.code = %(origin)s")
        params["origin"] = origin
    if destination is not None:
        conditions.append("d.code = %(destination)s")
        params["destination"] = destination
    if in_force_at is not None:
        conditions.append("f.effective @> %(at)s::timestamptz")
        params["at"] = in_force_at
    if not include_inactive:
        conditions.append("f.is_active")
    if after is not None:
        conditions.append(
            "(o.code, d.code, f.effective_from, f.id) > (%(a0)s, %(a1)s, %(a2)s, %(a3)s)"
        )
        params.update(a0=after[0], a1=after[1], a2=after[2], a3=after[3])
    cur = conn.cursor(row_factory=class_row(FareVersion))
    await cur.execute(
        f"""{FARE_SELECT} WHERE {" AND ".join(conditions)}
            ORDER BY o.code, d.code, f.effective_from, f.id LIMIT %(limit)s""",
        params,
    )
    return await cur.fetchall()


async def current_and_scheduled(
    conn: AsyncConnection, terminal_code: str | None
) -> list[FareVersion]:
    """The active versions in force now or later, optionally only from or to one terminal."""
    cur = conn.cursor(row_factory=class_row(FareVersion))
    await cur.execute(
        f"""{FARE_SELECT}
            WHERE f.is_active AND (f.effective_until IS NULL OR f.effective_until > now())
              AND (%(t)s::text IS NULL OR o.code = %(t)s OR d.code = %(t)s)
            ORDER BY o.code, d.code, f.effective_from""",
        {"t": terminal_code},
    )
    return await cur.fetchall()


async def now(conn: AsyncConnection) -> datetime:
    cur = await conn.execute("SELECT now()")
    return _one(await cur.fetchone())[0]


def _one(row):
    assert row is not None, "the statement returns one row"
    return row
