"""Redis as a cache only: get-or-load with a TTL, invalidation, and Redis down = read the
source. After a Redis failure the cache stays out of the way for a short cool-down, so a dead
or stalled Redis costs one short timeout, not one per request.

Stale entries are never served after an invalidation:
- invalidate() leaves a short-lived tombstone instead of deleting, and loads are stored only
  where no key exists (SET NX). A reader that loaded the old value just before the change
  committed therefore cannot store it after the invalidation (the delete-then-stale-set race);
- invalidations that could not reach Redis are kept and applied before the cache is used
  again, so an entry made stale during an outage is not served after it."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import redis.asyncio as redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
T = TypeVar("T")
TOMBSTONE = b"\x00tiket:invalidated"
# Longer than any load can take between reading the database and storing the result.
TOMBSTONE_SECONDS = 10


class Cache:
    def __init__(
        self,
        url: str,
        prefix: str = "",
        *,
        timeout: float = 0.1,
        cooldown: float = 2.0,
    ) -> None:
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
        )
        self.prefix = prefix
        self.cooldown = cooldown
        self._down_until = 0.0
        self._lost_invalidations: set[str] = set()
        self.hits = 0
        self.misses = 0

    def key(self, key: str) -> str:
        return self.prefix + key

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
        cached = await self._call(self.client.get, self.key(key))
        if cached is not None and cached != TOMBSTONE:
            self.hits += 1
            return decode(cached)
        self.misses += 1
        value = await load()
        if value is not None and cached is None:
            await self._call(self.client.set, self.key(key), encode(value), ex=ttl_seconds, nx=True)
        return value

    async def invalidate(self, *keys: str) -> None:
        if not keys:
            return
        full = [self.key(k) for k in keys]
        if await self._call(self._tombstone, full) is None:
            self._lost_invalidations.update(full)

    async def _tombstone(self, keys: Iterable[str]) -> bool:
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.set(key, TOMBSTONE, ex=TOMBSTONE_SECONDS)
            await pipe.execute()
        return True

    async def close(self) -> None:
        await self.client.aclose()

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    async def _call(self, command: Callable[..., Awaitable[T]], *args, **kwargs) -> T | None:
        if not self.available:
            return None
        try:
            if self._lost_invalidations:
                await self._tombstone(self._lost_invalidations)
                self._lost_invalidations.clear()
            return await command(*args, **kwargs)
        except (RedisError, OSError) as exc:
            if self._down_until == 0.0 or self.available:
                log.warning("redis unavailable, serving from the database: %s", exc)
            self._down_until = time.monotonic() + self.cooldown
            return None
