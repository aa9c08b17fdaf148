"""Run a unit of work in one transaction, retrying the races PostgreSQL reports as
retryable (deadlock, serialization failure) before answering ABORTED."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from libs.errors import Aborted, Unavailable

T = TypeVar("T")
RETRYABLE = (errors.SerializationFailure, errors.DeadlockDetected)


async def in_transaction(
    pool: AsyncConnectionPool,
    work: Callable[[AsyncConnection], Awaitable[T]],
    *,
    attempts: int = 3,
) -> T:
    for attempt in range(1, attempts + 1):
        try:
            async with pool.connection() as conn, conn.transaction():
                return await work(conn)
        except RETRYABLE as exc:
            if attempt == attempts:
                raise Aborted(
                    f"lost a concurrent update race, retry: {exc.diag.message_primary}"
                ) from exc
            await asyncio.sleep(random.uniform(0.005, 0.02) * attempt)
        except PoolTimeout as exc:
            raise Unavailable("database is busy or unreachable; retry shortly") from exc
        except errors.OperationalError as exc:
            # Connection lost: a cut-off COMMIT has an unknown outcome, but every mutating RPC
            # is idempotent by key, so the caller may simply retry.
            raise Unavailable(f"database connection failed: {exc}") from exc
    raise AssertionError("unreachable")
