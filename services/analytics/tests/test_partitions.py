"""The monthly partitions of analytics_events on the hot path: a month is checked in SQL
once per process, remembered only once its transaction committed, and concurrent creators
of one month never fail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from libs.db.database import drop_database, open_pool
from libs.db.transaction import in_transaction
from libs.server.runtime import prepare_database
from services.analytics import domain, store
from services.analytics.app import AnalyticsApp
from services.analytics.domain import MonthPartition
from services.analytics.service import DEFINITION
from services.analytics.tests.helpers import TEST_CONFIG, checked_in, raw_event, scalar
from tests.support.settings import isolated_settings

pytestmark = pytest.mark.timeout(60)
NOW = datetime.now(UTC)


@pytest.fixture
async def pool() -> AsyncIterator[AsyncConnectionPool]:
    """The service's database alone (migrated, no server, no consumer), removed after."""
    settings = isolated_settings()
    url = settings.database_url("analytics")
    await asyncio.to_thread(prepare_database, DEFINITION, settings)
    pool = await open_pool(url, min_size=1, max_size=8)
    try:
        yield pool
    finally:
        await pool.close()
        await asyncio.to_thread(drop_database, url)


@pytest.fixture
async def db(pool: AsyncConnectionPool) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(pool.conninfo, autocommit=True) as conn:
        yield conn


async def test_a_month_is_checked_once_and_remembered_only_after_commit(pool, db, monkeypatch):
    app = AnalyticsApp(pool, TEST_CONFIG)
    checks: list[MonthPartition] = []
    ensure = store.ensure_partition

    async def counted(conn: psycopg.AsyncConnection, month: MonthPartition) -> bool:
        checks.append(month)
        return await ensure(conn, month)

    monkeypatch.setattr(store, "ensure_partition", counted)
    march = MonthPartition(2033, 3)
    first = checked_in("A", None, datetime(2033, 3, 10, 2, tzinfo=UTC))

    async def record_then_fail(conn: psycopg.AsyncConnection) -> None:
        await app.record(first, conn)
        raise RuntimeError("a later step failed")

    with pytest.raises(RuntimeError):
        await in_transaction(pool, record_then_fail)
    assert march not in app.known_partitions
    assert await scalar(db, "SELECT to_regclass(%s)", march.name) is None

    for when in (datetime(2033, 3, 10, 2, tzinfo=UTC), datetime(2033, 3, 31, 23, tzinfo=UTC)):
        event = checked_in("A", None, when)
        await in_transaction(pool, lambda conn, event=event: app.record(event, conn))
    assert checks == [march, march]  # the failed attempt and the first committed one
    assert march in app.known_partitions
    assert await scalar(db, "SELECT count(*) FROM analytics_events") == 2


async def test_the_partition_job_renews_the_known_months(pool):
    app = AnalyticsApp(pool, TEST_CONFIG)
    app.known_partitions.add(MonthPartition(2019, 1))
    await app.create_partitions_ahead()
    ahead = domain.partitions_ahead(datetime.now(UTC), TEST_CONFIG.partition_months_ahead)
    assert app.known_partitions == set(ahead)


async def test_concurrent_creators_of_one_month_all_succeed(pool, db):
    month = MonthPartition(2034, 1)
    made = await asyncio.gather(
        *(in_transaction(pool, lambda conn: store.ensure_partition(conn, month)) for _ in range(8))
    )
    assert sorted(made) == [False] * 7 + [True]  # one creates, the others find it
    assert await scalar(db, "SELECT to_regclass(%s)::text", month.name) == month.name
    assert await in_transaction(pool, lambda conn: store.ensure_partition(conn, month)) is False


async def test_an_unknown_event_with_an_out_of_range_time_is_stored_on_arrival(pool, db):
    app = AnalyticsApp(pool, TEST_CONFIG)
    event = replace(raw_event("gate.opened", NOW, {}), time="0001-01-01T00:00:00+01:00")
    await in_transaction(pool, lambda conn: app.record(event, conn))
    assert await scalar(db, "SELECT count(*) FROM analytics_events") == 1
