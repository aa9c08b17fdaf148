"""libs.cache against the real Redis (a unique key prefix per test, removed afterwards), and
with Redis unreachable through the fault-injection redis_proxy."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from libs.cache import Cache, LocalCache
from tests.support.cleanup import delete_redis_prefix
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(30)

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


class Loader:
    """A load() that counts its calls and returns the current value of the source."""

    def __init__(self, value: str | None = "v1") -> None:
        self.value = value
        self.calls = 0

    async def __call__(self) -> str | None:
        self.calls += 1
        return self.value


def encode(value: str) -> bytes:
    return value.encode()


def decode(raw: bytes) -> str:
    return raw.decode()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    prefix = f"test-cache-{uuid.uuid4().hex[:10]}:"
    yield prefix
    await delete_redis_prefix(REDIS_URL, prefix)


@pytest.fixture
async def raw() -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def cache(prefix: str) -> AsyncIterator[Cache]:
    cache = Cache(REDIS_URL, prefix)
    yield cache
    await cache.close()


async def get(cache: Cache, load: Loader, key: str = "k", ttl: int = 60) -> str | None:
    return await cache.get_or_load(key, ttl, load, encode, decode)


async def test_loads_once_then_hits(cache: Cache, raw: redis.Redis, prefix: str) -> None:
    load = Loader("v1")

    assert await get(cache, load) == "v1"
    load.value = "v2"  # the source changes, but the cache is not told
    assert [await get(cache, load) for _ in range(5)] == ["v1"] * 5

    assert load.calls == 1
    assert (cache.misses, cache.hits) == (1, 5)
    assert await raw.get(f"{prefix}k") == b"0|v1"  # loaded under the first generation


async def test_keys_carry_the_prefix_and_ttl(cache: Cache, raw: redis.Redis, prefix: str) -> None:
    await get(cache, Loader("x"), key="user:1", ttl=120)

    ttl = await raw.ttl(f"{prefix}user:1")
    assert 110 <= ttl <= 120
    assert [key async for key in raw.scan_iter(match=f"{prefix}*")] == [f"{prefix}user:1".encode()]


async def test_entries_expire(cache: Cache) -> None:
    load = Loader("v1")
    await get(cache, load, ttl=1)
    load.value = "v2"
    await asyncio.sleep(1.2)
    assert await get(cache, load) == "v2"
    assert load.calls == 2


async def test_invalidate_forces_a_reload(cache: Cache) -> None:
    load_a, load_b = Loader("a1"), Loader("b1")
    await get(cache, load_a, key="a")
    await get(cache, load_b, key="b")
    load_a.value, load_b.value = "a2", "b2"

    await cache.invalidate("a", "b")

    assert await get(cache, load_a, key="a") == "a2"
    assert await get(cache, load_b, key="b") == "b2"
    assert (load_a.calls, load_b.calls) == (2, 2)
    # Never the old value again, whether the new one is cached yet or not.
    assert [await get(cache, load_a, key="a") for _ in range(3)] == ["a2"] * 3
    await cache.invalidate()  # no keys: nothing to do, no error


async def test_a_load_racing_an_invalidation_does_not_store_the_old_value(cache: Cache) -> None:
    """A reader loads the old value, the data changes and is invalidated, then the reader
    stores what it loaded: the stale value must not be served afterwards."""
    loaded, release = asyncio.Event(), asyncio.Event()
    source = {"value": "old"}

    async def slow_load() -> str:
        value = source["value"]  # read before the change commits
        loaded.set()
        await release.wait()
        return value

    reader = asyncio.create_task(cache.get_or_load("k", 60, slow_load, encode, decode))
    await loaded.wait()
    source["value"] = "new"
    await cache.invalidate("k")
    release.set()
    assert await reader == "old"  # that reader started before the change

    assert await get(cache, Loader("new")) == "new"


async def test_a_load_begun_after_an_invalidation_is_cached_at_once(cache: Cache) -> None:
    """A key invalidated often (a slot day under a burst of reservations) is still served
    from the cache between changes: the first load after an invalidation is stored."""
    loader = Loader("v1")
    await get(cache, loader)
    for value in ("v2", "v3"):
        loader.value = value
        await cache.invalidate("k")
        assert await get(cache, loader) == value  # loaded, and stored
        calls = loader.calls
        assert await get(cache, loader) == value
        assert loader.calls == calls, "the load after the invalidation was not cached"


async def test_none_is_not_cached(cache: Cache, raw: redis.Redis, prefix: str) -> None:
    load = Loader(None)
    assert await get(cache, load) is None
    assert await get(cache, load) is None
    assert load.calls == 2
    assert await raw.exists(f"{prefix}k") == 0

    load.value = "now it exists"
    assert await get(cache, load) == "now it exists"
    assert await get(cache, load) == "now it exists"
    assert load.calls == 3


async def test_prefixes_keep_caches_apart(prefix: str) -> None:
    one, two = Cache(REDIS_URL, prefix + "one:"), Cache(REDIS_URL, prefix + "two:")
    try:
        assert await get(one, Loader("from one")) == "from one"
        assert await get(two, Loader("from two")) == "from two"
    finally:
        await one.close()
        await two.close()


class RedisCalls:
    """Counts the Redis commands a cache sends (each a network round trip)."""

    def __init__(self, cache: Cache) -> None:
        self.count = 0
        original = cache.client.mget

        async def mget(*args, **kwargs):
            self.count += 1
            return await original(*args, **kwargs)

        cache.client.mget = mget


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_redis_unreachable_falls_through_to_the_source() -> None:
    cache = Cache(f"redis://127.0.0.1:{closed_port()}/0", "x:", timeout=0.1, cooldown=60)
    calls = RedisCalls(cache)
    load = Loader("from db")
    try:
        values = [await get(cache, load) for _ in range(20)]
        await cache.invalidate("k")  # no error either
    finally:
        await cache.close()

    assert values == ["from db"] * 20
    assert load.calls == 20
    assert calls.count == 1  # one failure, then the cool-down keeps the cache out of the way
    assert not cache.available


@pytest.mark.parametrize("fault", ["cut", "stall"])
async def test_redis_down_costs_one_timeout_then_recovers(
    prefix: str, redis_proxy: TcpProxy, fault: str
) -> None:
    cooldown = 2.0
    cache = Cache(f"redis://127.0.0.1:{redis_proxy.port}/0", prefix, timeout=0.1, cooldown=cooldown)
    load = Loader("v1")
    try:
        assert await get(cache, load) == "v1"
        assert await get(cache, load) == "v1"
        assert (load.calls, cache.hits) == (1, 1)

        getattr(redis_proxy, fault)()
        calls = RedisCalls(cache)
        values = [await get(cache, load) for _ in range(20)]

        assert values == ["v1"] * 20
        assert load.calls == 21  # every call read the source
        # One timeout: without the cool-down a stalled Redis would cost 20 x 0.1 s.
        assert calls.count == 1
        assert not cache.available

        redis_proxy.restore()
        await asyncio.sleep(cooldown + 0.1)
        assert cache.available
        hits = cache.hits
        assert await get(cache, load) == "v1"
        assert await get(cache, load) == "v1"
        # Redis serves again: the entry stored before the fault is still there.
        assert cache.hits == hits + 2
        assert load.calls == 21
    finally:
        await cache.close()


async def test_invalidation_lost_while_redis_was_unreachable_does_not_serve_stale_data(
    prefix: str, redis_proxy: TcpProxy
) -> None:
    """The data changes (e.g. a card is blocked) while this process cannot reach Redis, so
    its invalidate() is dropped. Once Redis is reachable again, the cache must not keep
    serving the old value for the rest of its TTL (ARCHITECTURE.md: with Redis down every
    RPC still answers correctly)."""
    cooldown = 0.3
    cache = Cache(f"redis://127.0.0.1:{redis_proxy.port}/0", prefix, timeout=0.1, cooldown=cooldown)
    load = Loader("active")
    try:
        assert await get(cache, load, key="user:1", ttl=3600) == "active"

        redis_proxy.cut()
        load.value = "blocked"
        await cache.invalidate("user:1")
        assert await get(cache, load, key="user:1", ttl=3600) == "blocked"

        redis_proxy.restore()
        await asyncio.sleep(cooldown + 0.1)
        assert await get(cache, load, key="user:1", ttl=3600) == "blocked"
    finally:
        await cache.close()


async def test_past_the_bound_of_lost_invalidations_the_generation_is_renewed(
    prefix: str, redis_proxy: TcpProxy
) -> None:
    """More invalidations are lost during an outage than a process keeps: it cannot tell
    which entries went stale, so once Redis is back every entry stored before retires (for
    every process on that Redis), and each is loaded again on its next read."""
    cooldown = 0.3
    url = f"redis://127.0.0.1:{redis_proxy.port}/0"
    cache = Cache(url, prefix, timeout=0.1, cooldown=cooldown, max_lost_invalidations=3)
    other = Cache(REDIS_URL, prefix)  # another process, which never lost Redis
    loads = {key: Loader(f"{key}1") for key in "abcde"}
    try:
        for key, load in loads.items():
            assert await get(cache, load, key=key) == f"{key}1"

        redis_proxy.cut()
        for key, load in loads.items():
            load.value = f"{key}2"
            await cache.invalidate(key)
        assert cache.lost_invalidations <= 3  # bounded: the backlog became one renewal

        redis_proxy.restore()
        await asyncio.sleep(cooldown + 0.1)
        fresh = [f"{key}2" for key in "abcde"]
        assert [await get(cache, loads[key], key=key) for key in "abcde"] == fresh
        assert all(load.calls == 2 for load in loads.values())
        # The other process is served what was stored under the new generation.
        assert [await get(other, Loader("never"), key=key) for key in "abcde"] == fresh
    finally:
        await cache.close()
        await other.close()


async def test_entries_of_an_old_generation_are_reloaded_and_stored_again(
    cache: Cache, raw: redis.Redis, prefix: str
) -> None:
    load = Loader("v1")
    assert await get(cache, load) == "v1"
    await raw.set(f"{prefix}cache:generation", "renewed")  # another process renewed it
    load.value = "v2"
    assert await get(cache, load) == "v2"
    assert await get(cache, load) == "v2"
    assert load.calls == 2
    assert await raw.get(f"{prefix}k") == b"renewed|v2"


# --- LocalCache: in-process ------------------------------------------------------------------


async def test_local_cache_drops_the_least_recently_used_entry_when_full() -> None:
    """Full, it makes room for one entry by dropping one — the least recently used — not by
    emptying itself (which, in front of a remote service, would send every key's next
    request there at once)."""
    local: LocalCache[str, str] = LocalCache(ttl=60, max_entries=3)
    for key in "abc":
        await local.get(key, Loader(key))
    await local.get("a", Loader("never"))  # used again: now the most recent
    await local.get("d", Loader("d"))
    assert ("a" in local, "b" in local, "c" in local, "d" in local) == (True, False, True, True)
    assert len(local) == 3


async def test_local_cache_shares_one_load_and_keeps_no_failure() -> None:
    local: LocalCache[str, str] = LocalCache(ttl=60)
    started, release = asyncio.Event(), asyncio.Event()
    calls = 0

    async def slow() -> str:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return "v"

    waiting = [asyncio.create_task(local.get("k", slow)) for _ in range(5)]
    await started.wait()
    release.set()
    assert await asyncio.gather(*waiting) == ["v"] * 5
    assert calls == 1

    async def failing() -> str:
        raise RuntimeError("down")

    with pytest.raises(RuntimeError):
        await local.get("x", failing)
    assert "x" not in local
    assert await local.get("x", Loader("back")) == "back"


async def test_local_cache_reloads_what_is_not_usable() -> None:
    local: LocalCache[str, str] = LocalCache(ttl=60)
    await local.get("k", Loader("old"))
    assert await local.get("k", Loader("new"), usable=lambda v: v != "old") == "new"
    assert await local.get("k", Loader("never")) == "new"
