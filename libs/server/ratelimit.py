"""Rate limits on user-facing RPCs (seed 001 §5.4): so many calls a minute per caller and per
client address, counted in Redis.

- Algorithm: a moving window (`limits`' MovingWindowRateLimiter). A key is a Redis list of
  its last `limit` call times; one Lua script (one EVALSHA round trip, atomic) admits a call
  only when the oldest of them is over a minute old. Exact: no burst at window edges.
- A refused call adds nothing to the window that refused it. The caller's own limit is
  checked first, so a rider it refuses spends nothing of their address's budget (others
  behind the same NAT keep theirs).
- A refusal is remembered here until its window frees (it cannot free sooner), so a caller
  who keeps knocking costs Redis nothing meanwhile.
- Redis down or slow: fail open. The call goes through unchecked (the caller counts it) and
  the limiter stays out of the way for `cooldown` seconds, so a dead or stalled Redis costs
  one short timeout per cool-down, never one per call.

Keys (the layout of `limits`): `{redis_prefix}ratelimit:user/{role}/{subject}/{limit}/1/minute`
and `{redis_prefix}ratelimit:address/{ip}/{limit}/1/minute`; each expires a minute after its
last call. Call times are the replicas' wall clocks (NTP keeps them close enough).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from urllib.parse import unquote

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from libs.config import Settings
from libs.errors import ResourceExhausted

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Redis answers in well under a millisecond; a call waits at most this long per command for
# a sick one, and only once per cool-down.
TIMEOUT_SECONDS = 0.25
COOLDOWN_SECONDS = 3.0
# A window with room again by the time it is read: retry (almost) at once.
MIN_RETRY_SECONDS = 0.001
# Refusals remembered locally (one per refused caller until their window frees).
MAX_REMEMBERED = 10_000


class Scope(StrEnum):
    USER = "user"
    ADDRESS = "address"


class RateLimited(ResourceExhausted):
    def __init__(self, scope: Scope, limit: int, who: str, retry_after: float) -> None:
        super().__init__(
            f"rate limit exceeded: {limit} requests per minute per {scope}; "
            f"retry in {math.ceil(retry_after)} s",
            retry_after_seconds=retry_after,
            subject=f"{scope}:{who}",
        )
        self.scope = scope


class RateLimiter:
    def __init__(
        self,
        redis_url: str,
        prefix: str = "",
        *,
        per_user: int,
        per_address: int,
        exempt_roles: Iterable[str] = (),
        trusted_proxies: Sequence[Network] = (),
        timeout: float = TIMEOUT_SECONDS,
        cooldown: float = COOLDOWN_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        # No retries: a retry is one more timeout a waiting caller pays.
        self._pool = ConnectionPool.from_url(
            redis_url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,
            retry=Retry(NoBackoff(), 0),
        )
        storage = RedisStorage(
            redis_url,
            implementation="redispy",
            key_prefix=f"{prefix}ratelimit",
            connection_pool=self._pool,
        )
        self._window = MovingWindowRateLimiter(storage)
        self._user = RateLimitItemPerMinute(per_user, namespace=Scope.USER) if per_user else None
        self._address = (
            RateLimitItemPerMinute(per_address, namespace=Scope.ADDRESS) if per_address else None
        )
        self.exempt_roles = frozenset(exempt_roles)
        self.trusted_proxies = tuple(trusted_proxies)
        # Two hits and a window read, each bounded by the socket timeouts; this bounds the sum.
        self._deadline = 3 * timeout
        self._cooldown = cooldown
        self._monotonic = monotonic
        self._down_until: float | None = None
        self._refused: dict[str, float] = {}  # key -> wall-clock time its window frees

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter | None:
        """The limiter `settings` ask for; None when both limits are off."""
        if not (settings.rate_limit_user_per_minute or settings.rate_limit_address_per_minute):
            return None
        return cls(
            settings.redis_url,
            settings.redis_prefix,
            per_user=settings.rate_limit_user_per_minute,
            per_address=settings.rate_limit_address_per_minute,
            exempt_roles=settings.rate_limit_exempt_roles,
            trusted_proxies=settings.trusted_proxies,
            timeout=TIMEOUT_SECONDS,
            cooldown=COOLDOWN_SECONDS,
        )

    def applies_to(self, role: str) -> bool:
        return role not in self.exempt_roles

    def address_of(self, peer: str | None, forwarded_for: Sequence[str] = ()) -> str | None:
        """The client's address as the limit key (see client_address)."""
        address = client_address(peer, forwarded_for, self.trusted_proxies)
        return None if address is None else str(address)

    async def check(self, role: str, subject: str, address: str | None) -> bool:
        """True: the call is within its limits. False: Redis failed, the call goes through
        unchecked. RateLimited: refused."""
        if self._down_until is not None and self._monotonic() < self._down_until:
            return False
        try:
            async with asyncio.timeout(self._deadline):
                if self._user is not None:
                    await self._hit(Scope.USER, self._user, role, subject)
                if self._address is not None and address is not None:
                    await self._hit(Scope.ADDRESS, self._address, address)
        except (RedisError, OSError, TimeoutError) as exc:
            if self._down_until is None:
                log.warning(
                    "rate limits not enforced: Redis unavailable (%s); trying again in %g s",
                    exc or type(exc).__name__,
                    self._cooldown,
                )
            self._down_until = self._monotonic() + self._cooldown
            return False
        if self._down_until is not None:
            log.info("rate limits enforced again: Redis answers")
            self._down_until = None
        return True

    async def close(self) -> None:
        await self._pool.aclose()

    async def _hit(self, scope: Scope, item: RateLimitItem, *who: str) -> None:
        """Count a call of `who` (the key's identifiers; the last one is shown to the caller)
        in `item`'s window, or raise RateLimited."""
        key = item.key_for(*who)
        frees = self._refused.get(key)
        if frees is not None:
            now = time.time()
            if now < frees:
                raise RateLimited(scope, item.amount, who[-1], frees - now)
            del self._refused[key]
        if await self._window.hit(item, *who):
            return
        # Refused: when does the oldest call leave the window? A second round trip, on
        # refusals only, and only on the first one per window thanks to _remember.
        window = float(item.get_expiry())
        try:
            stats = await self._window.get_window_stats(item, *who)
            frees = stats.reset_time if stats.remaining <= 0 else 0.0
        except (RedisError, OSError):
            frees = time.time() + window
        now = time.time()
        retry_after = min(max(frees - now, MIN_RETRY_SECONDS), window)
        self._remember(key, now + retry_after)
        raise RateLimited(scope, item.amount, who[-1], retry_after)

    def _remember(self, key: str, frees: float) -> None:
        if len(self._refused) >= MAX_REMEMBERED:
            now = time.time()
            self._refused = {k: t for k, t in self._refused.items() if t > now}
            if len(self._refused) >= MAX_REMEMBERED:
                self._refused.clear()
        self._refused[key] = frees


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted_proxies: Sequence[Network]
) -> IPAddress | None:
    """The address a call came from: the peer's (gRPC `context.peer()`, e.g.
    'ipv4:10.0.0.5:5555' or 'ipv6:[::1]:5555'). When the peer is a trusted proxy, the
    right-most address in x-forwarded-for that is not itself a trusted proxy instead (the
    ones left of it are whatever the client wrote); the left-most when all are trusted; the
    peer's when that entry is no address. None when the peer has no IP address (unix socket)."""
    address = _peer_ip(peer)
    if address is None or not forwarded_for or not _trusted(address, trusted_proxies):
        return address
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        hop_address = _ip(hop)
        if hop_address is None:
            return address
        if not _trusted(hop_address, trusted_proxies):
            return hop_address
    return _ip(hops[0]) if hops else address


def _peer_ip(peer: str | None) -> IPAddress | None:
    if not peer:
        return None
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return _ip(rest.rpartition(":")[0])
    if kind == "ipv6":
        return _ip(unquote(rest.rpartition("]")[0].removeprefix("[")))
    return None


def _ip(text: str) -> IPAddress | None:
    """`text` as an address ('[v6]:port' and 'v4:port' too); IPv4-mapped IPv6 as IPv4."""
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, networks: Sequence[Network]) -> bool:
    return any(address in network for network in networks)
