"""A real analytics service (in this process) on its own database, exchange and queues,
listening before the test publishes; everything is removed after the test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import psycopg
import pytest

from libs.db.database import drop_database
from libs.events.consumer import Consumer, StartsWhenReachable
from libs.server.runtime import Resources, ServiceRuntime, Wiring
from services.analytics.service import DEFINITION, build
from services.analytics.tests.helpers import (
    TEST_CONFIG,
    Caller,
    Publisher,
    caller_for,
    consumer_listening,
)
from tests.support.cleanup import remove_run
from tests.support.settings import isolated_settings


@pytest.fixture
async def running() -> AsyncIterator[tuple[ServiceRuntime, Consumer]]:
    """The service and its consumer (whose counters tell what became of each delivery)."""
    consumers: list[Consumer] = []

    async def build_for_tests(resources: Resources) -> Wiring:
        wiring = await build(resources, analytics_config=TEST_CONFIG)
        consumers.extend(
            b.consumer for b in wiring.background if isinstance(b, StartsWhenReachable)
        )
        return wiring

    runtime = ServiceRuntime(replace(DEFINITION, build=build_for_tests), isolated_settings())
    await runtime.start()
    try:
        await consumer_listening(runtime.settings)
        yield runtime, consumers[0]
    finally:
        await runtime.stop()
        await asyncio.to_thread(drop_database, runtime.settings.database_url("analytics"))
        await remove_run(runtime.settings, [])


@pytest.fixture
def analytics_service(running: tuple[ServiceRuntime, Consumer]) -> ServiceRuntime:
    return running[0]


@pytest.fixture
def consumer(running: tuple[ServiceRuntime, Consumer]) -> Consumer:
    return running[1]


@pytest.fixture
async def analytics(analytics_service: ServiceRuntime) -> AsyncIterator[Caller]:
    caller = caller_for(analytics_service)
    yield caller
    await caller.channel.close()


@pytest.fixture
async def db(analytics_service: ServiceRuntime) -> AsyncIterator[psycopg.AsyncConnection]:
    """A direct connection to the service's database, for assertions."""
    url = analytics_service.settings.database_url("analytics")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        yield conn


@pytest.fixture
async def publish(analytics_service: ServiceRuntime) -> AsyncIterator[Publisher]:
    publisher = Publisher(analytics_service.settings)
    await publisher.open()
    yield publisher
    await publisher.close()
