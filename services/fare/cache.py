"""Fare lookups through Redis (seed 004: `fare:{origin}:{dest}`, 24 h) that never answer with
a fare superseded by a committed change.

An entry (a hash, as in seed 004, with the fields `versions` and `gen` rather than `price` and
`updated_at`) holds every active version of a pair (`fare:max:{origin}`: of every pair from
an origin) with its validity range, and the lookup picks the version in force at the instant
asked. So one entry answers for any instant, and a version scheduled for tomorrow is already
in it and takes over by itself when its time comes.

Entries are stamped with the fare generation, a random token under `fare:gen`. A fare change
draws a new token after it commits (the writer at once, then the fare.updated consumer
again), which retires every entry: fares change a few times a month, and reloading the matrix
costs milliseconds. A lookup uses an entry only when its stamp is the current token, and
stores one only if the token is still the one it read before loading from the database (one
Lua script each, so atomically). A load that raced a change therefore never becomes a live
entry: either the change committed before the token was read, and the load sees it, or the
new token was drawn after the read, and the store is refused or the entry is born retired.

Redis down: lookups read PostgreSQL. A process that met a Redis failure owes a new token: it
does not use the cache until it has drawn one (a background loop keeps trying), so an entry
that went stale while this process could not reach Redis is never served afterwards.

In front of Redis, each process remembers the version lists it read for `memory_seconds`
(1 s): a Redis round trip through redis-py cost about a quarter of a cached GetFare's CPU
(issue 18), and a fare read a thousand times a second needs it once. A change made by this
process forgets them at once (so its own caller reads the new fare), and a lookup that was
in flight across that change does not remember what it read; another process goes on
answering from its memory for at most `memory_seconds` after a change, as the journey
service's own fare memory does for its TTL (services/journey/lookups.py: a fare served a
moment past its change never overcharges, the hold is the maximum fare).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal

import cachetools
import orjson
from prometheus_client import Counter
from redis.exceptions import RedisError

from libs.cache import Cache
from libs.periodic import Periodic
from services.fare.domain import FareVersion

log = logging.getLogger(__name__)

FARE_TTL_SECONDS = 24 * 3600  # seed 004: fare:{origin}:{dest}, 24 h
GENERATION_KEY = "fare:gen"
MEMORY_SECONDS = 1.0
MEMORY_ENTRIES = 10_000  # pairs and origins; the least recently used are dropped past it
LOOKUPS = Counter("tiket_fare_cache_lookups", "Fare lookups by how the cache answered.", ["result"])
MEMORY, HIT, MISS, BYPASS = (
    LOOKUPS.labels(result) for result in ("memory", "hit", "miss", "bypass")
)

# KEYS: generation, entry. ARGV: a fresh token, used when there is no generation yet.
# Returns {generation, versions or nil}.
_READ = """
local gen = redis.call('GET', KEYS[1])
if not gen then
  gen = ARGV[1]
  redis.call('SET', KEYS[1], gen)
end
local entry = redis.call('HMGET', KEYS[2], 'gen', 'versions')
if entry[1] == gen then return {gen, entry[2]} end
return {gen, false}
"""
# KEYS: generation, entry. ARGV: the generation read before loading, versions, ttl.
_STORE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('HSET', KEYS[2], 'gen', ARGV[1], 'versions', ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
  return 1
end
return 0
"""

Load = Callable[[], Awaitable[list[FareVersion]]]


def pair_key(origin: str, destination: str) -> str:
    return f"fare:{origin}:{destination}"


def origin_key(origin: str) -> str:
    return f"fare:max:{origin}"


class FareCache:
    """Version lists of pairs and origins in Redis, remembered in-process for
    `memory_seconds` (0: not at all). `start()`/`stop()` run the loop that settles a
    generation owed after a Redis failure."""

    def __init__(
        self,
        cache: Cache,
        *,
        retry_interval: float = 0.5,
        memory_seconds: float = MEMORY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = cache.client
        self._key = cache.key
        self._read = self._redis.register_script(_READ)
        self._store = self._redis.register_script(_STORE)
        self._owed = False
        self._failures = 0
        self._settler = Periodic("fare-cache-settle", self._settle, retry_interval)
        self._memory: cachetools.TTLCache[str, list[FareVersion]] | None = None
        if memory_seconds > 0:
            self._memory = cachetools.TTLCache(MEMORY_ENTRIES, memory_seconds, timer=clock)
        self._changes = 0  # changes this process made: a lookup across one remembers nothing

    @property
    def usable(self) -> bool:
        """False while a new generation is owed: lookups then go to the database."""
        return not self._owed

    async def versions(self, key: str, load: Load) -> list[FareVersion]:
        """The cached versions under `key`, else `load()` (cached when still current)."""
        if self._owed:
            BYPASS.inc()
            return await load()
        if self._memory is not None and (remembered := self._memory.get(key)) is not None:
            MEMORY.inc()
            return remembered
        changes = self._changes
        keys = [self._key(GENERATION_KEY), self._key(key)]
        try:
            generation, cached = await self._read(keys=keys, args=[uuid.uuid4().hex])
        except (RedisError, OSError) as exc:
            self._owe(exc)
            BYPASS.inc()
            return await load()
        if cached is not None:
            try:
                found = decode(cached)
            except (ValueError, TypeError, IndexError, ArithmeticError):
                log.warning("unreadable fare cache entry %s: reloading it", key)
            else:
                HIT.inc()
                self._remember(key, found, changes)
                return found
        MISS.inc()
        versions = await load()
        try:
            stored = await self._store(
                keys=keys, args=[generation, encode(versions), FARE_TTL_SECONDS]
            )
        except (RedisError, OSError) as exc:
            self._owe(exc)
        else:
            if stored:
                self._remember(key, versions, changes)
        return versions

    async def changed(self) -> None:
        """Retire every entry: call after a fare change committed. Never raises; when Redis
        cannot be reached the generation is owed and settled later."""
        self._forget()
        failures = self._failures
        try:
            await self._redis.set(self._key(GENERATION_KEY), uuid.uuid4().hex)
        except (RedisError, OSError) as exc:
            self._owe(exc)
            return
        if self._failures == failures:  # no failure met meanwhile by a concurrent call
            self._owed = False

    async def start(self) -> None:
        await self._settler.start()

    async def stop(self) -> None:
        await self._settler.stop()

    def _remember(self, key: str, versions: list[FareVersion], changes: int) -> None:
        """Keep `versions` in memory unless this process changed fares since they were read."""
        if self._memory is not None and changes == self._changes:
            self._memory[key] = versions

    def _forget(self) -> None:
        self._changes += 1
        if self._memory is not None:
            self._memory.clear()

    def _owe(self, exc: BaseException) -> None:
        self._forget()
        if not self._owed:
            log.warning("redis unavailable, fares served from the database: %s", exc)
        self._owed = True
        self._failures += 1

    async def _settle(self) -> int:
        if self._owed:
            await self.changed()
            if not self._owed:
                log.info("redis reachable again: fare cache renewed")
        return 0


def encode(versions: list[FareVersion]) -> bytes:
    return orjson.dumps(
        [
            [
                v.id,
                v.origin,
                v.destination,
                str(v.price),
                v.effective_from.isoformat(),
                v.effective_until.isoformat() if v.effective_until else None,
                v.source,
                v.created_at.isoformat(),
            ]
            for v in versions
        ]
    )


def decode(raw: bytes) -> list[FareVersion]:
    return [
        FareVersion(
            id=row[0],
            origin=row[1],
            destination=row[2],
            price=Decimal(row[3]),
            effective_from=datetime.fromisoformat(row[4]),
            effective_until=datetime.fromisoformat(row[5]) if row[5] else None,
            source=row[6],
            created_at=datetime.fromisoformat(row[7]),
        )
        for row in orjson.loads(raw)
    ]
