"""Keeping the offline snapshot fresh while online: the users (card, status, available) by
ExportUsers deltas from the last watermark, reloaded whole when the watermark is older than
the snapshot's maximum age; the fares and terminals of this terminal by ExportFareSnapshot
(the versions in force and those scheduled, so a tap after midnight is priced by the version
in force then). Rows are written a page per SQLite transaction, so taps interleave."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

from tiket.fare.v1 import fare_pb2
from tiket.user.v1 import user_pb2

from gate.mesh import Mesh
from gate.offline_db import (
    FARES_REFRESHED,
    USERS_FULL,
    USERS_REFRESHED,
    USERS_WATERMARK,
    OfflineDb,
    get_time,
    now,
    read_rules,
    set_time,
    to_cents,
    to_ms,
    transaction,
)
from libs.money import from_money
from libs.timestamps import to_timestamp

PAGE = 500
STREAM_TIMEOUT = 120.0
STATUSES = {
    user_pb2.USER_STATUS_ACTIVE: "active",
    user_pb2.USER_STATUS_BLOCKED: "blocked",
    user_pb2.USER_STATUS_SUSPENDED: "suspended",
}


@dataclass(frozen=True)
class UsersRefresh:
    full: bool
    cards: int


async def refresh_users(db: OfflineDb, mesh: Mesh) -> UsersRefresh:
    """One export: a delta from the watermark, or everyone when there is none or it is older
    than the snapshot's maximum age (then cards the export did not bring are dropped)."""
    started = now()
    watermark, rules = await db.run(_watermark_and_rules)
    full = watermark is None or started - watermark > rules.snapshot_max_age
    request = user_pb2.ExportUsersRequest()
    if not full:
        assert watermark is not None
        request.since.CopyFrom(to_timestamp(watermark))
    page: list[tuple] = []
    cards = 0
    next_since: datetime | None = None
    stream = mesh.users.ExportUsers(request, timeout=STREAM_TIMEOUT, metadata=mesh.metadata())
    async for item in stream:
        if item.HasField("next_since"):
            next_since = item.next_since.ToDatetime(UTC)
            continue
        page.append(_user_row(item.user, started))
        if len(page) >= PAGE:
            cards += len(page)
            await db.run(_upsert_users, page)
            page = []
    if next_since is None:
        raise RuntimeError("ExportUsers ended without its watermark (next_since)")
    cards += len(page)
    await db.run(store_users, page, started, next_since, full)
    return UsersRefresh(full, cards)


async def refresh_fares(db: OfflineDb, mesh: Mesh, terminal_code: str) -> int:
    """Terminals and this terminal's fares replaced by one consistent snapshot; the number of
    fare versions."""
    terminals, fares = [], []
    generated_at: datetime | None = None
    stream = mesh.fares.ExportFareSnapshot(
        fare_pb2.ExportFareSnapshotRequest(terminal_code=terminal_code),
        timeout=STREAM_TIMEOUT,
        metadata=mesh.metadata(),
    )
    async for item in stream:
        kind = item.WhichOneof("item")
        if kind == "terminal":
            terminals.append(_terminal_row(item.terminal))
        elif kind == "fare":
            fares.append(_fare_row(item.fare))
        elif kind == "end":
            generated_at = item.end.generated_at.ToDatetime(UTC)
    if generated_at is None:
        raise RuntimeError("ExportFareSnapshot ended without its SnapshotEnd")
    await db.run(store_fares, terminals, fares, generated_at)
    return len(fares)


def _watermark_and_rules(conn: sqlite3.Connection):
    return get_time(conn, USERS_WATERMARK), read_rules(conn)


def _user_row(user: user_pb2.UserSnapshot, started: datetime) -> tuple:
    return (
        user.card_id,
        STATUSES.get(user.status, "blocked"),  # a status the gate does not know opens nothing
        to_cents(from_money(user.available)),
        to_ms(user.updated_at.ToDatetime(UTC)),
        to_ms(started),
    )


def _upsert_users(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    with transaction(conn):
        _write_users(conn, rows)


def _write_users(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    # Messages come in order, a later one for a card being its newer state.
    conn.executemany(
        """INSERT INTO users (card_id, status, available_cents, updated_at_ms, exported_at_ms)
           VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (card_id) DO UPDATE
              SET status = excluded.status, available_cents = excluded.available_cents,
                  updated_at_ms = excluded.updated_at_ms,
                  exported_at_ms = excluded.exported_at_ms""",
        rows,
    )


def store_users(
    conn: sqlite3.Connection,
    rows: list[tuple],
    started: datetime,
    next_since: datetime,
    full: bool,
) -> None:
    with transaction(conn):
        _write_users(conn, rows)
        if full:
            conn.execute("DELETE FROM users WHERE exported_at_ms < ?", (to_ms(started),))
            set_time(conn, USERS_FULL, started)
        set_time(conn, USERS_WATERMARK, next_since)
        set_time(conn, USERS_REFRESHED, started)


def _terminal_row(t: fare_pb2.Terminal) -> tuple:
    has_place = t.HasField("coordinates")
    return (
        t.id,
        t.code,
        t.name,
        t.location,
        t.coordinates.latitude if has_place else None,
        t.coordinates.longitude if has_place else None,
        int(t.active),
    )


def _fare_row(f: fare_pb2.Fare) -> tuple:
    until = to_ms(f.effective_until.ToDatetime(UTC)) if f.HasField("effective_until") else None
    return (
        f.id,
        f.origin_code,
        f.destination_code,
        to_cents(from_money(f.price)),
        int(f.active),
        to_ms(f.effective_from.ToDatetime(UTC)),
        until,
    )


def store_fares(
    conn: sqlite3.Connection, terminals: list[tuple], fares: list[tuple], generated_at: datetime
) -> None:
    with transaction(conn):
        conn.execute("DELETE FROM terminals")
        conn.execute("DELETE FROM fares")
        conn.executemany(
            """INSERT INTO terminals (id, code, name, location, latitude, longitude, is_active)
               VALUES (?, ?, ?, ?, ?, ?, ?)""",
            terminals,
        )
        conn.executemany(
            """INSERT INTO fares (id, origin_code, destination_code, price_cents, is_active,
                                  effective_from_ms, effective_until_ms)
               VALUES (?, ?, ?, ?, ?, ?, ?)""",
            fares,
        )
        set_time(conn, FARES_REFRESHED, generated_at)
