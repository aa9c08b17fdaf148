"""Units of work on a real PostgreSQL database (libs/db): what in_statement and
in_transaction commit, retry and roll back, and that no connection is left in pipeline
mode for the next unit of work."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from libs.db.database import open_pool
from libs.db.transaction import after_commit, in_statement, in_transaction
from libs.errors import Aborted
from tests.support.databases import temporary_database


@pytest.fixture
async def pool() -> AsyncIterator[AsyncConnectionPool]:
    with temporary_database() as url:
        pool = await open_pool(url, min_size=1, max_size=1)
        async with pool.connection() as conn:
            await conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
        yield pool
        await pool.close()


async def stored(pool: AsyncConnectionPool) -> list[int]:
    async with pool.connection() as conn:
        rows = await (await conn.execute("SELECT id FROM items ORDER BY id")).fetchall()
    return [row[0] for row in rows]


async def test_a_lone_statement_commits_on_its_own_and_runs_after_commit_callbacks(
    pool: AsyncConnectionPool,
) -> None:
    woken: list[str] = []

    async def work(conn: psycopg.AsyncConnection) -> None:
        await conn.execute("INSERT INTO items VALUES (1)")
        after_commit(lambda: woken.append("relay"))

    await in_statement(pool, work)
    assert await stored(pool) == [1]
    assert woken == ["relay"]


@pytest.mark.parametrize("pipeline", [True, False])
async def test_a_failed_transaction_leaves_nothing_and_calls_no_callback(
    pool: AsyncConnectionPool, pipeline: bool
) -> None:
    woken: list[str] = []

    async def work(conn: psycopg.AsyncConnection) -> None:
        await conn.execute("INSERT INTO items VALUES (1)")
        after_commit(lambda: woken.append("relay"))
        await conn.execute("INSERT INTO items VALUES (1)")  # duplicate key

    with pytest.raises(psycopg.errors.UniqueViolation):
        await in_transaction(pool, work, pipeline=pipeline)
    assert await stored(pool) == []
    assert woken == []


async def test_a_lost_race_is_retried_then_answered_aborted(pool: AsyncConnectionPool) -> None:
    calls = 0

    async def losing(conn: psycopg.AsyncConnection) -> None:
        nonlocal calls
        calls += 1
        await conn.execute("INSERT INTO items VALUES (%s)", (calls,))
        raise psycopg.errors.SerializationFailure("could not serialize access")

    with pytest.raises(Aborted, match="lost a concurrent update race"):
        await in_transaction(pool, losing, attempts=3)
    assert calls == 3
    assert await stored(pool) == []


async def test_a_transaction_cancelled_mid_pipeline_leaves_no_connection_in_pipeline_mode(
    pool: AsyncConnectionPool,
) -> None:
    """psycopg can hand back a connection still in pipeline mode when the unit of work is
    cancelled inside conn.pipeline(); a later autocommit statement on it would be queued and
    never sent (the pool has a single connection here, so the next unit gets that one)."""

    async def slow(conn: psycopg.AsyncConnection) -> None:
        await conn.execute("INSERT INTO items VALUES (1)")
        await conn.execute("SELECT pg_sleep(0.01)")

    unit = asyncio.create_task(in_transaction(pool, slow))
    await asyncio.sleep(0)
    unit.cancel()
    with pytest.raises(asyncio.CancelledError):
        await unit

    async def insert(conn: psycopg.AsyncConnection) -> bool:
        await conn.execute("INSERT INTO items VALUES (7)")
        return bool(conn.pgconn.pipeline_status)

    in_pipeline = await asyncio.wait_for(in_statement(pool, insert), timeout=10)
    assert not in_pipeline
    assert await stored(pool) == [7]
