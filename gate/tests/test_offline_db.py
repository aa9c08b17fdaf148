"""The gate's SQLite file: schema and pragmas, the offline decision recorded in one
transaction, what counts as spent, and the upload bookkeeping."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from gate import local_taps
from gate.config import OfflineRules
from gate.decide import Direction
from gate.local_taps import Result, Tap
from gate.offline_db import OfflineDb, now, read_rules, to_ms
from gate.snapshot import store_fares, store_users

TABLES = {"users", "fares", "offline_tasks", "system_config", "terminals", "local_transactions"}


@pytest.fixture
async def db(tmp_path) -> AsyncIterator[OfflineDb]:
    database = OfflineDb(tmp_path / "gate.sqlite3")
    await database.open(OfflineRules())
    yield database
    await database.close()


async def load_snapshot(db: OfflineDb, cards: dict[str, tuple[str, int]], at: datetime) -> None:
    """Cards (status, available IDR) as an export started at `at`; A's fares to and from B."""
    rows = [(c, s, a * 100, to_ms(at), to_ms(at)) for c, (s, a) in cards.items()]
    await db.run(store_users, rows, at, at, True)
    ever = to_ms(at - timedelta(days=1))
    fares = [(1, "A", "B", 500_000, 1, ever, None), (2, "B", "A", 500_000, 1, ever, None)]
    fares += [(3, "A", "E", 1_200_000, 1, ever, None)]
    await db.run(store_fares, [], fares, at)


def tap(card: str, direction: Direction = Direction.CHECK_IN, at: datetime | None = None) -> Tap:
    return Tap(str(uuid.uuid4()), card, direction, at or now(), "A", "A-ENTRY-01")


def rows(db_path, sql: str) -> list[tuple]:
    with sqlite3.connect(db_path) as conn:
        return conn.execute(sql).fetchall()


async def test_the_schema_is_seed_4s_in_wal_mode_with_its_indexes(db):
    names = rows(db.path, "SELECT type, name FROM sqlite_master")
    assert {n for t, n in names if t == "table"} >= TABLES
    indexes = {n for t, n in names if t == "index"}
    assert {
        "idx_users_status",
        "idx_fares_route",
        "idx_fares_active",
        "idx_offline_tasks_status",
        "idx_offline_tasks_timestamp",
        "idx_local_transactions_synced",
    } <= indexes
    assert rows(db.path, "PRAGMA journal_mode") == [("wal",)]
    # no personal data in the snapshot
    columns = {r[1] for r in rows(db.path, "PRAGMA table_info(users)")}
    assert columns.isdisjoint({"full_name", "email", "phone"})
    assert await db.run(read_rules) == OfflineRules()


async def test_a_decision_is_on_disk_before_the_gate_opens(db):
    """synchronous=FULL on the agent's connection: in WAL mode NORMAL keeps the last
    commits only in the OS's cache until a checkpoint, and a power cut loses them."""
    (level,) = await db.run(lambda conn: conn.execute("PRAGMA synchronous").fetchone())
    assert level == 2  # FULL


async def test_an_offline_entry_writes_its_task_and_transaction_together(db):
    await load_snapshot(db, {"CARD0001": ("active", 50_000)}, now())
    entry = tap("CARD0001")
    verdict = await db.run(local_taps.decide_offline, entry)
    assert verdict.open and verdict.offline_amount == Decimal(12_000)
    assert rows(
        db.path, "SELECT id, task_type, estimated_fare_cents, status FROM offline_tasks"
    ) == [(entry.tap_id, "checkin", 1_200_000, "pending")]
    assert rows(
        db.path, "SELECT reference_id, mode, amount_cents, synced FROM local_transactions"
    ) == [(entry.tap_id, "offline", 1_200_000, 0)]


async def test_a_refused_tap_writes_nothing(db):
    await load_snapshot(db, {"CARD0002": ("blocked", 50_000)}, now())
    for card in ("CARD0002", "CARD9999"):
        verdict = await db.run(local_taps.decide_offline, tap(card))
        assert not verdict.open
    assert rows(db.path, "SELECT count(*) FROM offline_tasks") == [(0,)]
    assert rows(db.path, "SELECT count(*) FROM local_transactions") == [(0,)]


async def test_offline_spending_counts_until_a_refresh_after_the_upload_shows_it(db):
    exported = now() - timedelta(seconds=1)
    await load_snapshot(db, {"CARD0003": ("active", 20_000)}, exported)
    first = tap("CARD0003", at=now() - timedelta(minutes=5))
    assert (await db.run(local_taps.decide_offline, first)).open
    await db.run(local_taps.decide_offline, tap("CARD0003", Direction.CHECK_OUT))
    # 20,000 - 12,000 held offline leaves too little for a second entry
    second = await db.run(local_taps.decide_offline, tap("CARD0003"))
    assert second.reason == "INSUFFICIENT_BALANCE"

    batch = await db.run(local_taps.pending_batch, 500)
    assert [t.direction for t in batch] == [Direction.CHECK_IN, Direction.CHECK_OUT]
    results = [Result(t.tap_id, "APPLIED", "", None) for t in batch]
    uploaded = now()
    await db.run(local_taps.store_results, results, uploaded)
    assert await db.run(local_taps.pending_count) == 0
    assert rows(db.path, "SELECT count(*) FROM local_transactions WHERE synced = 1") == [(2,)]
    # uploaded, but the snapshot is older than the upload: still counted
    assert (await db.run(local_taps.decide_offline, tap("CARD0003"))).reason == (
        "INSUFFICIENT_BALANCE"
    )
    # a refresh started after the upload brings the server's balance (20,000 - 5,000 fare);
    # one started in the upload's own millisecond may not have seen it (and would not count)
    after_upload = uploaded + timedelta(milliseconds=1)
    await load_snapshot(db, {"CARD0003": ("active", 15_000)}, after_upload)
    assert (await db.run(local_taps.decide_offline, tap("CARD0003"))).open


async def test_an_upload_that_failed_keeps_the_tasks_and_counts_the_attempt(db):
    await load_snapshot(db, {"CARD0004": ("active", 50_000)}, now())
    entry = tap("CARD0004")
    await db.run(local_taps.decide_offline, entry)
    await db.run(local_taps.note_failed_upload, [entry.tap_id], "UNIMPLEMENTED: not yet")
    assert rows(db.path, "SELECT status, attempts, last_error FROM offline_tasks") == [
        ("pending", 1, "UNIMPLEMENTED: not yet")
    ]


async def test_a_full_reload_drops_cards_the_server_no_longer_sends(db):
    await load_snapshot(db, {"CARD0005": ("active", 1), "CARD0006": ("active", 1)}, now())
    await load_snapshot(db, {"CARD0006": ("suspended", 1)}, now() + timedelta(seconds=1))
    assert rows(db.path, "SELECT card_id, status FROM users") == [("CARD0006", "suspended")]
