"""The fare cache against the real Redis (a key prefix per test) and through the
fault-injection redis_proxy: hits, retirement by a change, the load-versus-change race, Redis
cut or stalled, and the process's memory in front of Redis. The Redis tests run without that
memory (it would answer before Redis is asked), the change and race tests with and without."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis.asyncio as redis

from libs.cache import Cache
from services.fare.cache import FareCache, decode, encode
from services.fare.domain import FareVersion
from tests.support.cleanup import delete_redis_prefix
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(30)
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
KEY = "fare:A:B"
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def versions(price: int) -> list[FareVersion]:
    return [FareVersion(1, "A", "B", Decimal(price), T0, None, "api", T0)]


class Source:
    """A load() returning what "the database" holds now, counting its calls."""

    def __init__(self, price: int) -> None:
        self.price = price
        self.calls = 0

    async def __call__(self) -> list[FareVersion]:
        self.calls += 1
        return versions(self.price)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def open_cache(
    url: str, prefix: str, memory_seconds: float = 0.0, clock: Clock | None = None
) -> tuple[Cache, FareCache]:
    cache = Cache(url, prefix)
    fares = FareCache(
        cache, retry_interval=0.05, memory_seconds=memory_seconds, clock=clock or Clock()
    )
    await fares.start()
    return cache, fares


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    prefix = f"test-fare-cache-{uuid.uuid4().hex[:10]}:"
    yield prefix
    await delete_redis_prefix(f"redis://{REDIS_HOST}:{REDIS_PORT}/0", prefix)


URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture
async def fares(prefix: str) -> AsyncIterator[FareCache]:
    cache, fares = await open_cache(URL, prefix)
    yield fares
    await fares.stop()
    await cache.close()


@pytest.fixture(params=[0.0, 60.0], ids=["redis", "memory"])
async def either(prefix: str, request: pytest.FixtureRequest) -> AsyncIterator[FareCache]:
    """The cache without and with a memory that outlives the test (so only a change, never
    time, empties it)."""
    cache, fares = await open_cache(URL, prefix, memory_seconds=request.param)
    yield fares
    await fares.stop()
    await cache.close()


@pytest.fixture
async def proxied(prefix: str, redis_proxy: TcpProxy) -> AsyncIterator[FareCache]:
    cache, fares = await open_cache(f"redis://127.0.0.1:{redis_proxy.port}/0", prefix)
    yield fares
    await fares.stop()
    await cache.close()


def test_versions_survive_encoding():
    both = [*versions(5000), FareVersion(2, "A", "B", Decimal("5.5"), T0, T0, "gtfs", T0)]
    assert decode(encode(both)) == both


async def test_a_hit_does_not_load_and_a_change_retires_every_entry(either):
    fares = either
    source = Source(5000)
    assert await fares.versions(KEY, source) == versions(5000)
    assert await fares.versions(KEY, source) == versions(5000)
    assert source.calls == 1
    other = Source(7000)
    await fares.versions("fare:max:A", other)
    source.price = other.price = 5500
    await fares.changed()
    assert await fares.versions(KEY, source) == versions(5500)
    assert await fares.versions("fare:max:A", other) == versions(5500)
    assert (source.calls, other.calls) == (2, 2)


async def test_a_load_that_raced_a_change_is_never_served_afterwards(either):
    """The lookup read the generation, loaded the old fare, then the change committed and
    renewed the generation, and only then did the lookup try to store what it loaded."""
    fares = either
    source = Source(5000)

    async def load_then_change_commits():
        loaded = await source()
        source.price = 6000
        await fares.changed()
        return loaded

    assert await fares.versions(KEY, load_then_change_commits) == versions(5000)
    assert await fares.versions(KEY, source) == versions(6000)
    assert await fares.versions(KEY, source) == versions(6000)
    assert source.calls == 2


async def test_redis_cut_serves_the_source_and_no_stale_entry_after_it_returns(
    proxied, redis_proxy
):
    source = Source(5000)
    assert await proxied.versions(KEY, source) == versions(5000)  # cached through the redis_proxy
    redis_proxy.cut()
    assert await proxied.versions(KEY, source) == versions(5000)
    assert not proxied.usable
    source.price = 6000
    await proxied.changed()  # a change while Redis is unreachable: the renewal is owed
    assert await proxied.versions(KEY, source) == versions(6000)
    redis_proxy.restore()
    # Never the entry cached before the cut, whether the renewal happened yet or not.
    assert await proxied.versions(KEY, source) == versions(6000)
    deadline = time.monotonic() + 5
    while not proxied.usable:
        assert time.monotonic() < deadline, "the owed renewal never happened"
        assert await proxied.versions(KEY, source) == versions(6000)
        await asyncio.sleep(0.02)
    calls = source.calls
    assert await proxied.versions(KEY, source) == versions(6000)
    assert await proxied.versions(KEY, source) == versions(6000)
    assert source.calls == calls + 1  # cached again


async def test_a_stalled_redis_costs_one_short_timeout(proxied, redis_proxy):
    source = Source(5000)
    await proxied.versions(KEY, source)
    redis_proxy.stall()
    started = time.monotonic()
    for _ in range(20):
        assert await proxied.versions(KEY, source) == versions(5000)
    assert time.monotonic() - started < 1.0
    redis_proxy.restore()


async def test_an_unreadable_entry_is_reloaded(fares, prefix):
    """An entry in another format (say, written by an older release) is a miss, not an error."""
    source = Source(5000)
    await fares.versions(KEY, source)
    client = redis.Redis.from_url(f"redis://{REDIS_HOST}:{REDIS_PORT}/0")
    await client.hset(prefix + KEY, "versions", b'{"price": "5000.00"}')
    await client.aclose()
    assert await fares.versions(KEY, source) == versions(5000)
    assert source.calls == 2


async def test_memory_answers_without_redis_until_it_expires(prefix):
    """Another process's change (a cache without memory of its own) reaches this process's
    answers once its memory of the pair has expired, never later."""
    clock = Clock()
    cache, fares = await open_cache(URL, prefix, memory_seconds=1.0, clock=clock)
    other_cache, other = await open_cache(URL, prefix)
    try:
        source = Source(5000)
        assert await fares.versions(KEY, source) == versions(5000)
        source.price = 6000
        await other.changed()
        clock.now += 0.99
        assert await fares.versions(KEY, source) == versions(5000)  # remembered
        assert source.calls == 1
        clock.now += 0.02
        assert await fares.versions(KEY, source) == versions(6000)
        assert await fares.versions(KEY, source) == versions(6000)
        assert source.calls == 2
    finally:
        for each, client in ((fares, cache), (other, other_cache)):
            await each.stop()
            await client.close()


async def test_a_hit_read_across_this_process_change_is_not_remembered(prefix):
    """The lookup's Redis read is in flight when this process changes a fare: what it read
    may be the retired entry, so it is answered once and not remembered."""
    cache, fares = await open_cache(URL, prefix, memory_seconds=60.0)
    other_cache, other = await open_cache(URL, prefix)
    try:
        source = Source(5000)
        await other.versions(KEY, source)  # in Redis, not in this process's memory
        source.price = 6000
        await asyncio.gather(fares.versions(KEY, source), fares.changed())
        assert await fares.versions(KEY, source) == versions(6000)
        assert await fares.versions(KEY, source) == versions(6000)
    finally:
        for each, client in ((fares, cache), (other, other_cache)):
            await each.stop()
            await client.close()
