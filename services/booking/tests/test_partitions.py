"""Monthly partitions of the event store and the booking history (migration 0006): made for
this month and three ahead, kept ahead by the service, rows of this month in this month's
partition, and a database with events from before 0006 migrated without losing one."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from libs.db.database import open_pool
from libs.db.migrations import Track, migrate
from libs.events.tracks import EVENTS_TRACK
from services.booking import partitions
from services.booking.service import TRACK
from tests.support.databases import temporary_database

MONTH = datetime.now(UTC).strftime("%Y%m")


def partitions_of(url: str, table: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = %s::regclass ORDER BY c.relname""",
            (table,),
        ).fetchall()
    return [name for (name,) in rows]


def test_this_month_and_three_ahead_exist_with_a_default_for_the_rest() -> None:
    with temporary_database([EVENTS_TRACK, TRACK]) as url:
        for table in partitions.TABLES:
            made = partitions_of(url, table)
            assert f"{table}_default" in made
            months = sorted(name for name in made if not name.endswith("_default"))
            assert len(months) == 4 and months[0] == f"{table}_{MONTH}"


async def test_the_keeper_is_idempotent_and_safe_on_two_replicas_at_once() -> None:
    with temporary_database([EVENTS_TRACK, TRACK]) as url:
        pool = await open_pool(url, min_size=1, max_size=4)
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"DROP TABLE event_store_{MONTH}")  # as if a month were due
            made = await asyncio.gather(*(partitions.keep_ahead(pool) for _ in range(3)))
            assert sorted(made) == [0, 0, 1]
            assert await partitions.keep_ahead(pool) == 0
        finally:
            await pool.close()
        assert f"event_store_{MONTH}" in partitions_of(url, "event_store")


@pytest.fixture
def before_partitions(tmp_path: Path) -> Track:
    """The booking track as it was before 0006 (same files, same checksums)."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    for path in sorted(TRACK.folder.glob("*.sql"))[:5]:
        shutil.copy(path, folder / path.name)
    return Track(TRACK.name, folder)


def test_events_and_history_written_before_0006_are_all_kept(before_partitions: Track) -> None:
    with temporary_database([EVENTS_TRACK, before_partitions]) as url:
        aggregate = uuid.uuid4()
        with psycopg.connect(url, autocommit=True) as conn:
            for month in ("2026-01-15", "2026-02-15", datetime.now(UTC).date().isoformat()):
                conn.execute(
                    """INSERT INTO event_store (event_id, aggregate_id, aggregate_type,
                                                event_type, payload, created_at)
                       VALUES (%s, %s, 'booking', 'BookingCreated', %s, %s)""",
                    (uuid.uuid4(), aggregate, Jsonb({"month": month}), month),
                )
            before = conn.execute(
                "SELECT seq, event_id, payload FROM event_store ORDER BY seq"
            ).fetchall()
        migrate(url, [EVENTS_TRACK, TRACK])
        with psycopg.connect(url, autocommit=True) as conn:
            after = conn.execute(
                "SELECT seq, event_id, payload FROM event_store ORDER BY seq"
            ).fetchall()
            assert after == before
            placed = conn.execute(
                "SELECT tableoid::regclass::text FROM event_store ORDER BY seq"
            ).fetchall()
            assert [p for (p,) in placed] == [
                "event_store_default", "event_store_default", f"event_store_{MONTH}"
            ]  # fmt: skip
            new_seq = conn.execute(
                """INSERT INTO event_store (event_id, aggregate_id, aggregate_type, event_type,
                                            payload)
                   VALUES (%s, %s, 'booking', 'BookingPaid', '{}') RETURNING seq""",
                (uuid.uuid4(), aggregate),
            ).fetchone()
            assert new_seq is not None and new_seq[0] > before[-1][0]
