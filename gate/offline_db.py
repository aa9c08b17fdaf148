"""The gate's SQLite file (seed 004 §4, adapted): one connection in one thread, so there is
exactly one writer and no SQLite call ever blocks the event loop. Work is queued to that
thread in short units (a tap, a page of a refresh), so a tap waits at most for one of them.

Adapted from the seed: no names, emails or phones in `users` (the gate needs none); cards
and terminals by their codes, which every message carries; money in integer minor units
(never float); times in milliseconds since the epoch, UTC."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

from gate.config import OfflineRules
from libs.config import ConfigError

T = TypeVar("T")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    card_id TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('active', 'blocked', 'suspended')),
    -- balance minus holds on the server: what the card may spend
    available_cents INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    -- local start of the export that brought this state
    exported_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_users_status ON users(status);

CREATE TABLE IF NOT EXISTS terminals (
    id INTEGER PRIMARY KEY,
    code TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    location TEXT,
    latitude REAL,
    longitude REAL,
    is_active INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE IF NOT EXISTS fares (
    id INTEGER PRIMARY KEY,
    origin_code TEXT NOT NULL,
    destination_code TEXT NOT NULL,
    price_cents INTEGER NOT NULL,
    is_active INTEGER NOT NULL DEFAULT 1,
    effective_from_ms INTEGER NOT NULL,
    effective_until_ms INTEGER,
    CHECK (price_cents >= 0),
    CHECK (origin_code != destination_code)
);
CREATE INDEX IF NOT EXISTS idx_fares_route ON fares(origin_code, destination_code);
CREATE INDEX IF NOT EXISTS idx_fares_destination ON fares(destination_code);
CREATE INDEX IF NOT EXISTS idx_fares_active ON fares(is_active) WHERE is_active = 1;

-- taps decided offline, waiting for SyncOfflineTaps; deleted once the server answered
CREATE TABLE IF NOT EXISTS offline_tasks (
    id TEXT PRIMARY KEY,  -- the tap_id
    task_type TEXT NOT NULL,
    card_id TEXT NOT NULL,
    terminal_code TEXT NOT NULL,
    gate_code TEXT NOT NULL,
    estimated_fare_cents INTEGER NOT NULL,  -- OfflineTap.offline_amount
    timestamp_ms INTEGER NOT NULL,  -- tapped_at
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    CHECK (task_type IN ('checkin', 'checkout')),
    CHECK (status IN ('pending', 'processing', 'processed', 'failed'))
);
CREATE INDEX IF NOT EXISTS idx_offline_tasks_status ON offline_tasks(status);
CREATE INDEX IF NOT EXISTS idx_offline_tasks_timestamp ON offline_tasks(timestamp_ms);
CREATE INDEX IF NOT EXISTS idx_offline_tasks_card ON offline_tasks(card_id, status);

CREATE TABLE IF NOT EXISTS system_config (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

-- every tap that opened the gate, online or offline: the audit trail, the card's last tap
-- (anti-passback, active trip) and what the gate spent that the snapshot does not show
CREATE TABLE IF NOT EXISTS local_transactions (
    id INTEGER PRIMARY KEY,
    card_id TEXT NOT NULL,
    terminal_code TEXT NOT NULL,
    gate_code TEXT NOT NULL,
    action_type TEXT NOT NULL CHECK (action_type IN ('checkin', 'checkout')),
    mode TEXT NOT NULL CHECK (mode IN ('online', 'offline')),
    amount_cents INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    reference_id TEXT NOT NULL UNIQUE,  -- the tap_id
    synced INTEGER NOT NULL DEFAULT 0,  -- 1 = the server has it
    synced_at_ms INTEGER,
    outcome TEXT,  -- ONLINE, or the SyncOfflineTaps outcome
    result_reason TEXT,
    price_change_cents INTEGER
);
CREATE INDEX IF NOT EXISTS idx_local_transactions_synced ON local_transactions(synced);
CREATE INDEX IF NOT EXISTS idx_local_transactions_card
    ON local_transactions(card_id, timestamp_ms);
"""

# system_config keys: the offline rules, then what the agent keeps track of.
RULE_KEYS = {
    "offline_floor_cents": lambda r: to_cents(r.floor),
    "max_offline_taps_per_card": lambda r: r.max_offline_taps,
    "snapshot_max_age_seconds": lambda r: int(r.snapshot_max_age.total_seconds()),
    "anti_passback_seconds": lambda r: int(r.anti_passback.total_seconds()),
    "max_trip_seconds": lambda r: int(r.max_trip.total_seconds()),
}
USERS_WATERMARK = "users_watermark_ms"  # ExportUsers next_since
USERS_REFRESHED = "users_refreshed_at_ms"  # start of the last complete users export
USERS_FULL = "users_full_at_ms"  # start of the last full one
FARES_REFRESHED = "fares_generated_at_ms"  # SnapshotEnd.generated_at
LAST_SYNC = "last_sync_at_ms"  # the last SyncOfflineTaps answered
LAST_ONLINE = "last_online_at_ms"  # the journey service last answered
MODE = "mode"  # online / offline, as the agent last saw it
DIRECTION = "direction"  # entry / exit / both, as the fare service's registry last said
CLOCK_SKEW = "clock_skew_ms"  # this clock minus the fare service's, at the last heartbeat


class OfflineDb:
    """The SQLite file behind one thread. `run(fn, *args)` calls fn(connection, *args) in
    that thread; fn runs its own transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gate-sqlite")
        self._conn: sqlite3.Connection | None = None

    async def open(self, rules: OfflineRules | None = None) -> None:
        """Create the file and schema when missing; with `rules`, store them. ConfigError
        when the file cannot be one (not a database, a folder, not writable)."""
        try:
            await self.run_raw(self._connect)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise ConfigError(
                f"cannot open the gate's SQLite file {self.path}: {exc}; point TIKET_GATE_DB "
                "(--db) at a file the agent may write, or move this one aside (its pending "
                "offline taps are in it)"
            ) from None
        if rules is not None:
            await self.run(write_rules, rules)

    async def close(self) -> None:
        if self._conn is not None:
            await self.run_raw(self._disconnect)
        self._executor.shutdown(wait=True)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._call, fn, args
        )

    async def run_raw(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _call(self, fn: Callable[..., T], args: tuple[object, ...]) -> T:
        assert self._conn is not None, "OfflineDb.open() first"
        return fn(self._conn, *args)

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: every unit of work says BEGIN IMMEDIATE itself (transaction()).
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: each commit reaches the disk before the gate opens. With NORMAL a power
            # cut (a gate's everyday fault) could take back the last offline taps after
            # their riders went through: rides never charged.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=5000")  # `tiket gate status` may read meanwhile
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(SCHEMA)
        except sqlite3.Error:
            conn.close()
            raise
        self._conn = conn

    def _disconnect(self) -> None:
        assert self._conn is not None
        self._conn.close()
        self._conn = None


class transaction:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on an exception): the write lock from the start."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, kind: object, *_: object) -> None:
        self.conn.execute("ROLLBACK" if kind is not None else "COMMIT")


def write_rules(conn: sqlite3.Connection, rules: OfflineRules) -> None:
    with transaction(conn):
        for key, value in RULE_KEYS.items():
            set_value(conn, key, str(value(rules)))


def read_rules(conn: sqlite3.Connection) -> OfflineRules:
    d = OfflineRules()
    values = dict(conn.execute("SELECT key, value FROM system_config").fetchall())

    def number(key: str, default: int) -> int:
        return int(values.get(key, default))

    return OfflineRules(
        floor=from_cents(number("offline_floor_cents", to_cents(d.floor))),
        max_offline_taps=number("max_offline_taps_per_card", d.max_offline_taps),
        snapshot_max_age=_seconds(number, "snapshot_max_age_seconds", d.snapshot_max_age),
        anti_passback=_seconds(number, "anti_passback_seconds", d.anti_passback),
        max_trip=_seconds(number, "max_trip_seconds", d.max_trip),
    )


def _seconds(number: Callable[[str, int], int], key: str, default: timedelta) -> timedelta:
    return timedelta(seconds=number(key, int(default.total_seconds())))


def set_value(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        """INSERT INTO system_config (key, value, updated_at) VALUES (?, ?, ?)
           ON CONFLICT (key) DO UPDATE SET value = excluded.value,
                                           updated_at = excluded.updated_at""",
        (key, value, to_ms(now())),
    )


def get_value(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM system_config WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def get_time(conn: sqlite3.Connection, key: str) -> datetime | None:
    value = get_value(conn, key)
    return None if value is None else from_ms(int(value))


def set_time(conn: sqlite3.Connection, key: str, value: datetime) -> None:
    set_value(conn, key, str(to_ms(value)))


def now() -> datetime:
    return datetime.now(UTC)


def to_ms(value: datetime) -> int:
    return (value - EPOCH) // timedelta(milliseconds=1)


def from_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


def to_cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())


def from_cents(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(Decimal("0.01"))
