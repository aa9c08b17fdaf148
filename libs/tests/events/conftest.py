"""Fixtures of the event tests: every test has its own database, exchange and queues, and
removes them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack

import pytest
from psycopg_pool import AsyncConnectionPool
from yarl import URL

from libs.db.database import open_pool
from libs.events import bus
from libs.events.tracks import EVENTS_TRACK
from libs.tests.events.support import AMQP_URL, EFFECTS_TRACK, Broker
from tests.support.databases import temporary_database
from tests.support.tcp_proxy import TcpProxy


@pytest.fixture
def database_url() -> Iterator[str]:
    with temporary_database([EVENTS_TRACK, EFFECTS_TRACK]) as url:
        yield url


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    pool = await open_pool(database_url, min_size=1, max_size=10)
    yield pool
    await pool.close()


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    connection = await bus.connect(AMQP_URL, robust=False)
    broker = Broker(connection)
    yield broker
    await broker.cleanup()
    await connection.close()


@pytest.fixture
async def running() -> AsyncIterator[AsyncExitStack]:
    """Relays and consumers registered here are stopped at the end, even on failure."""
    async with AsyncExitStack() as stack:
        yield stack


@pytest.fixture
async def rabbit_proxy() -> AsyncIterator[TcpProxy]:
    url = URL(AMQP_URL)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5672)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def postgres_proxy(database_url: str) -> AsyncIterator[TcpProxy]:
    url = URL(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    yield proxy
    await proxy.stop()
