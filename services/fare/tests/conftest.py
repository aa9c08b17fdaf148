"""A real fare service (in this process) on its own database, exchange, queues and cache
prefix. After every test the fare timeline invariants are checked against the database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import psycopg
import pytest

from libs.config import load
from libs.db.database import drop_database
from libs.server.runtime import ServiceRuntime
from services.fare.service import DEFINITION
from services.fare.tests.helpers import (
    Caller,
    caller_for,
    timeline_violations,
)
from tests.support.cleanup import remove_run
from tests.support.settings import isolated_settings

StartFare = Callable[..., Awaitable[ServiceRuntime]]


@pytest.fixture
async def start_fare() -> AsyncIterator[StartFare]:
    """Start a fare service with TIKET_* overrides (e.g. TIKET_REDIS_URL); all are stopped,
    checked and removed after the test."""
    started: list[ServiceRuntime] = []

    async def start(**overrides: str) -> ServiceRuntime:
        runtime = ServiceRuntime(DEFINITION, isolated_settings(**overrides))
        await runtime.start()
        started.append(runtime)
        return runtime

    yield start
    problems = []
    real = load()  # the real servers, also when a test reached one through a proxy or not at all
    for runtime in started:
        settings = runtime.settings
        await runtime.stop()
        url = settings.database_url("fare")
        async with await psycopg.AsyncConnection.connect(url) as conn:
            problems += await timeline_violations(conn)
        drop_database(url)
        await remove_run(replace(settings, amqp_url=real.amqp_url, redis_url=real.redis_url), [])
    assert problems == [], f"fare timeline invariants broken: {problems}"


@pytest.fixture
async def fare_service(start_fare: StartFare) -> ServiceRuntime:
    return await start_fare()


@pytest.fixture
async def fares(fare_service: ServiceRuntime) -> AsyncIterator[Caller]:
    caller = caller_for(fare_service)
    yield caller
    await caller.channel.close()


@pytest.fixture
async def db(fare_service: ServiceRuntime) -> AsyncIterator[psycopg.AsyncConnection]:
    """A direct connection to the service's database, for assertions."""
    url = fare_service.settings.database_url("fare")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        yield conn
