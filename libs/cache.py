"""Caches of what the database (or another service) can rebuild.

`Cache`: Redis as a cache only — get-or-load with a TTL, invalidation, and Redis down = read
the source. After a Redis failure the cache stays out of the way for a short cool-down, so a
dead or stalled Redis costs one short timeout, not one per request; `run` gives the same
guard to any other Redis command (a service's own keys).

Stale entries are never served after an invalidation:
- every key has a version (`{key}|v`), which invalidate() increments as it deletes the
  entry; a load is stored only if the version it read before loading is still the version
  (and no live entry is there). A reader that loaded the old value just before the change
  committed therefore cannot store it after the invalidation (the delete-then-stale-set
  race), while a load that began after it is stored at once — so a key invalidated often (a
  slot day under a burst of reservations) is still served from the cache between changes;
- invalidations that could not reach Redis are kept and applied before the cache is used
  again, so an entry made stale during an outage is not served after it. At most
  `max_lost_invalidations` are kept: past that, the whole cache generation is renewed
  instead (every entry stored so far retires at once, for every process), because an entry
  it no longer knows about may be stale.
Entries carry the generation they were loaded under (`{gen}|{value}`); the generation lives
under the key `cache:generation` ("0" until first renewed).

`LocalCache`: values kept in-process for a TTL, least recently used dropped first when full,
one load per key at a time."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Generic, TypeVar

import cachetools
import redis.asyncio as redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
VERSION_SUFFIX = "|v"
# A key's version outlives any load; it is renewed by every invalidation.
VERSION_SECONDS = 24 * 3600
GENERATION_KEY = "cache:generation"
FIRST_GENERATION = b"0"
MAX_LOST_INVALIDATIONS = 10_000
# KEYS: generation, entry, the entry's version. ARGV: the generation and the version read
# before loading ("" for none), the value, the TTL, the first generation. Stores the value
# unless the generation or the version changed meanwhile, or the key holds a live entry.
_STORE = """
local gen = redis.call('GET', KEYS[1]) or ARGV[5]
if gen ~= ARGV[1] then return 0 end
if (redis.call('GET', KEYS[3]) or '') ~= ARGV[2] then return 0 end
local current = redis.call('GET', KEYS[2])
if current and string.sub(current, 1, #gen + 1) == gen .. '|' then return 0 end
redis.call('SET', KEYS[2], gen .. '|' .. ARGV[3], 'EX', ARGV[4])
return 1
"""


class Cache:
    def __init__(
        self,
        url: str,
        prefix: str = "",
        *,
        timeout: float = 0.1,
        cooldown: float = 2.0,
        max_lost_invalidations: int = MAX_LOST_INVALIDATIONS,
    ) -> None:
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
        )
        self.prefix = prefix
        self.cooldown = cooldown
        self.max_lost_invalidations = max_lost_invalidations
        self._store = self.client.register_script(_STORE)
        self._down_until = 0.0
        self._lost_invalidations: set[str] = set()
        self._renewal_owed = False
        self.hits = 0
        self.misses = 0

    def key(self, key: str) -> str:
        return self.prefix + key

    @property
    def lost_invalidations(self) -> int:
        """Invalidations kept until Redis can be reached again."""
        return len(self._lost_invalidations)

    async def get_or_load(
        self,
        key: str,
        ttl_seconds: int,
        load: Callable[[], Awaitable[T | None]],
        encode: Callable[[T], bytes],
        decode: Callable[[bytes], T],
    ) -> T | None:
        """The cached value of `key`, else `load()` stored for `ttl_seconds`. None results
        are not cached (a miss stays a miss until the data exists)."""
        full = self.key(key)
        version_key = full + VERSION_SUFFIX
        found = await self.run(lambda c: c.mget(self.key(GENERATION_KEY), full, version_key))
        generation, cached, version = found or (None, None, None)
        generation = generation or FIRST_GENERATION
        if cached is not None and cached.startswith(generation + b"|"):
            self.hits += 1
            return decode(cached[len(generation) + 1 :])
        self.misses += 1
        value = await load()
        if value is not None and found is not None:
            keys = [self.key(GENERATION_KEY), full, version_key]
            args = [generation, version or b"", encode(value), ttl_seconds, FIRST_GENERATION]
            await self.run(lambda _: self._store(keys=keys, args=args))
        return value

    async def invalidate(self, *keys: str) -> None:
        if not keys:
            return
        full = [self.key(k) for k in keys]
        if await self.run(lambda c: self._retire(c, full)) is None:
            self._lose(full)

    async def close(self) -> None:
        await self.client.aclose()

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    async def run(self, command: Callable[[redis.Redis], Awaitable[T]]) -> T | None:
        """`command(client)`, or None when Redis failed now or does not answer since a
        recent failure (the caller then does without the cache). Invalidations lost
        meanwhile are applied first."""
        if not self.available:
            return None
        try:
            await self._catch_up()
            return await command(self.client)
        except (RedisError, OSError) as exc:
            if self._down_until == 0.0 or self.available:
                log.warning("redis unavailable, serving from the database: %s", exc)
            self._down_until = time.monotonic() + self.cooldown
            return None

    def _lose(self, keys: Iterable[str]) -> None:
        if self._renewal_owed:
            return
        self._lost_invalidations.update(keys)
        if len(self._lost_invalidations) > self.max_lost_invalidations:
            log.warning(
                "more than %d cache invalidations lost: the cache generation will be renewed",
                self.max_lost_invalidations,
            )
            self._lost_invalidations.clear()
            self._renewal_owed = True

    async def _catch_up(self) -> None:
        if self._renewal_owed:
            await self.client.set(self.key(GENERATION_KEY), uuid.uuid4().hex)
            self._renewal_owed = False
        if self._lost_invalidations:
            await self._retire(self.client, self._lost_invalidations)
            self._lost_invalidations.clear()

    @staticmethod
    async def _retire(client: redis.Redis, keys: Iterable[str]) -> bool:
        """A new version for each key, then its entry gone: a load that read the old
        version cannot store what it read."""
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                version = key + VERSION_SUFFIX
                pipe.incr(version)
                pipe.expire(version, VERSION_SECONDS)
                pipe.delete(key)
            await pipe.execute()
        return True


class LocalCache(Generic[K, V]):
    """Values kept in this process for `ttl` seconds, at most `max_entries` of them (the
    least recently used go first); concurrent misses of a key share one load, and a failed
    load is not kept."""

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self._entries: cachetools.TTLCache[K, tuple[V, float]] = cachetools.TTLCache(
            maxsize=max_entries, ttl=ttl, timer=time.monotonic
        )
        self._loading: dict[K, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: K) -> bool:
        return key in self._entries

    def age(self, key: K) -> float | None:
        """Seconds since `key` was loaded, None when not held."""
        entry = self._entries.get(key)
        return None if entry is None else time.monotonic() - entry[1]

    async def get(
        self, key: K, load: Callable[[], Awaitable[V]], usable: Callable[[V], bool] | None = None
    ) -> V:
        """The value of `key`, loaded when missing, expired or not `usable`."""
        entry = self._entries.get(key)
        if entry is not None and (usable is None or usable(entry[0])):
            return entry[0]
        loading = self._loading.get(key)
        if loading is None:
            loading = asyncio.ensure_future(load())
            self._loading[key] = loading
            loading.add_done_callback(lambda done: self._loaded(key, done))
        return await asyncio.shield(loading)

    def forget(self, key: K) -> None:
        self._entries.pop(key, None)

    def _loaded(self, key: K, done: asyncio.Future[V]) -> None:
        self._loading.pop(key, None)
        if done.cancelled() or done.exception() is not None:
            return
        self._entries[key] = (done.result(), time.monotonic())
