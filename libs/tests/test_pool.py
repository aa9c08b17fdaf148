"""The database pool: sized by TIKET_DB_POOL_MIN/MAX, and its gauges (tiket_db_pool_*)
following it as connections are taken, held and waited for."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from prometheus_client import REGISTRY

from libs.config import ConfigError
from libs.db.database import open_pool
from libs.server.metrics import pool_gauges
from tests.support.databases import temporary_database
from tests.support.settings import isolated_settings
from tests.support.waiting import wait_until

SERVICE = "pool-metrics-test"


def gauges() -> tuple[float | None, ...]:
    return tuple(
        REGISTRY.get_sample_value(f"tiket_db_pool_{name}", {"service": SERVICE})
        for name in ("in_use", "size", "max", "waiting")
    )


async def take_one(pool) -> None:
    async with pool.connection():
        pass


async def test_the_pool_gauges_move_as_connections_are_taken_and_waited_for():
    with temporary_database() as url:
        pool = await open_pool(url, min_size=1, max_size=2)
        job = pool_gauges(SERVICE, pool, interval=0.05)
        await job.start()
        try:
            await wait_until(lambda: gauges() == (0, 1, 2, 0), "an idle pool")
            async with contextlib.AsyncExitStack() as held:
                for _ in range(2):
                    await held.enter_async_context(pool.connection())
                await wait_until(lambda: gauges() == (2, 2, 2, 0), "both connections in use")
                waiter = asyncio.create_task(take_one(pool))
                await wait_until(lambda: gauges() == (2, 2, 2, 1), "a request waiting")
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
            await wait_until(lambda: gauges()[0] == 0, "every connection back")
        finally:
            await job.stop()
            await pool.close()


def test_a_pool_minimum_above_its_maximum_is_a_configuration_error_naming_both():
    with pytest.raises(ConfigError, match=r"TIKET_DB_POOL_MIN=20 .* TIKET_DB_POOL_MAX=10"):
        isolated_settings(TIKET_DB_POOL_MIN="20", TIKET_DB_POOL_MAX="10")
