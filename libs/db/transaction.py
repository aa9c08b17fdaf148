"""Units of work on the database. in_transaction runs one transaction and in_statement one
statement (its own transaction: a CTE may chain several writes), both retrying the races
PostgreSQL reports as retryable (deadlock, serialization failure) before answering ABORTED,
and running the work's after-commit callbacks once it is durable; read runs a query on a
pooled connection. All answer UNAVAILABLE, never INTERNAL, when the database cannot be
reached.

Prefer in_statement on hot paths: measured on this project's 2-core machine with 64
concurrent callers, a statement on an autocommit connection costs 0.14-0.18 ms of client CPU
and 0.12 ms of server CPU, a pipelined BEGIN + statement + COMMIT 0.5 ms and 0.27 ms."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from libs.errors import Aborted, Unavailable

T = TypeVar("T")
RETRYABLE = (errors.SerializationFailure, errors.DeadlockDetected)

_after_commit: contextvars.ContextVar[dict[Callable[[], None], None] | None] = (
    contextvars.ContextVar("after_commit", default=None)
)


def after_commit(callback: Callable[[], None]) -> None:
    """Call `callback` after the surrounding in_transaction() or in_statement() commits
    (once, however often it is registered); never when it rolls back. Outside them nothing
    happens:
    callers use this for things that only make work faster (waking the outbox relay)."""
    callbacks = _after_commit.get()
    if callbacks is not None:
        callbacks[callback] = None


def in_unit_of_work() -> bool:
    """Whether the caller runs inside in_transaction() or in_statement()."""
    return _after_commit.get() is not None


@contextlib.contextmanager
def database_unavailable() -> Iterator[None]:
    """Turn 'cannot reach the database' into Unavailable for the code inside. A connection
    lost during COMMIT leaves the outcome unknown, but every mutating RPC is idempotent by
    key, so the caller may simply retry."""
    try:
        yield
    except RETRYABLE:
        raise  # a lost race, not an outage: in_transaction retries it
    except PoolTimeout as exc:
        raise Unavailable("database is busy or unreachable; retry shortly") from exc
    except errors.OperationalError as exc:
        raise Unavailable(f"database connection failed: {exc}") from exc


async def read(pool: AsyncConnectionPool, query: Callable[..., Awaitable[T]], *args: object) -> T:
    """`query(conn, *args)` on a pooled connection, outside any explicit transaction."""
    with database_unavailable():
        async with pool.connection() as conn:
            return await query(conn, *args)


async def in_transaction(
    pool: AsyncConnectionPool,
    work: Callable[[AsyncConnection], Awaitable[T]],
    *,
    attempts: int = 3,
    pipeline: bool = True,
) -> T:
    """`work(conn)` in one transaction, by default in pipeline mode: statements whose results
    are not read yet travel together, so the writes at the end of a unit of work and its
    COMMIT cost one round trip. Work that reads the result of nearly every statement gains
    nothing from that and pays psycopg's pipeline bookkeeping: pass `pipeline=False`."""

    async def transaction() -> T:
        async with pool.connection() as conn:
            try:
                if not pipeline:
                    async with conn.transaction():
                        return await work(conn)
                async with conn.pipeline(), conn.transaction():
                    return await work(conn)
            finally:
                if conn.pgconn.pipeline_status:
                    # Cancelled inside the pipeline, psycopg can leave the connection in
                    # pipeline mode, where a later lone statement would be queued and never
                    # sent: close it, and the pool replaces it.
                    await conn.close()

    return await _retried(transaction, attempts)


async def in_statement(
    pool: AsyncConnectionPool,
    work: Callable[[AsyncConnection], Awaitable[T]],
    *,
    attempts: int = 3,
) -> T:
    """`work(conn)` on an autocommit connection: each statement is its own transaction, with
    no BEGIN, COMMIT or pipeline around it. For work that writes with one statement (reads
    after it, when the write found nothing to do, are fine)."""

    async def statement() -> T:
        async with pool.connection() as conn:
            return await work(conn)

    return await _retried(statement, attempts)


async def _retried(unit: Callable[[], Awaitable[T]], attempts: int) -> T:
    for attempt in range(1, attempts + 1):
        callbacks: dict[Callable[[], None], None] = {}
        token = _after_commit.set(callbacks)
        try:
            with database_unavailable():
                result = await unit()
        except RETRYABLE as exc:
            if attempt == attempts:
                raise Aborted(
                    f"lost a concurrent update race, retry: {exc.diag.message_primary}"
                ) from exc
            await asyncio.sleep(random.uniform(0.005, 0.02) * attempt)
            continue
        finally:
            _after_commit.reset(token)
        for callback in callbacks:
            callback()
        return result
    raise AssertionError("unreachable")
