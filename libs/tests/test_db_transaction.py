"""Units of work on a real PostgreSQL database (libs/db): what in_statement and
in_transaction commit, retry and roll back, and that the pool never hands out a connection
left in pipeline mode."""

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


async def test_a_failed_transaction_leaves_nothing_and_calls_no_callback(
    pool: AsyncConnectionPool,
) -> None:
    woken: list[str] = []

    async def work(conn: psycopg.AsyncConnection) -> None:
        await conn.execute("INSERT INTO items VALUES (1)")
        after_commit(lambda: woken.append("relay"))
        await conn.execute("INSERT INTO items VALUES (1)")  # duplicate key

    with pytest.raises(psycopg.errors.UniqueViolation):
        await in_transaction(pool, work)
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


async def test_a_connection_left_in_pipeline_mode_is_discarded_not_reused(
    pool: AsyncConnectionPool,
) -> None:
    """A unit of work cancelled inside conn.pipeline() may return its connection still in
    pipeline mode; a later autocommit statement on it would be queued and never sent."""
    async with pool.connection() as conn:
        conn.pgconn.enter_pipeline_mode()
        left = conn

    async def insert(conn: psycopg.AsyncConnection) -> bool:
        await conn.execute("INSERT INTO items VALUES (7)")
        return conn is left

    reused = await asyncio.wait_for(in_statement(pool, insert), timeout=10)
    assert not reused
    assert await stored(pool) == [7]
