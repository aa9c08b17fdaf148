"""active_trip:{user_id} in Redis (seed 004 "Active Trip Lookup": a hash of card_id,
checkin_terminal, checkin_time, expected_fare — plus journey_id; TTL 2 h). A hint only: a
check-out uses it to price the trip before it locks anything, and the database then confirms
the journey. A missing, stale or unreachable entry costs a database read, never a wrong
answer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from libs.cache import Cache
from services.journey.domain import Entry, Journey

TTL_SECONDS = 7200  # seed 004
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def key(user_id: uuid.UUID) -> str:
    return f"active_trip:{user_id}"


def epoch(at: datetime) -> str:
    """UNIX seconds as in seed 004 ("1736985600"), to the microsecond, exactly."""
    delta = at - EPOCH
    return f"{delta.days * 86_400 + delta.seconds}.{delta.microseconds:06d}"


def from_epoch(text: str) -> datetime:
    seconds, _, micros = text.partition(".")
    return EPOCH + timedelta(seconds=int(seconds), microseconds=int(micros.ljust(6, "0")[:6]))


class ActiveTrips:
    def __init__(self, cache: Cache, *, enabled: bool = True) -> None:
        self.cache = cache
        self.enabled = enabled

    async def take(self, user_id: uuid.UUID) -> Entry | None:
        """The entry of the rider's active journey as last written (None when unknown),
        cleared in the same round trip: for a check-out, which ends the trip it names
        (seed 004: 'clear user trip status') whatever comes of it — a check-out refused
        later leaves the database to answer the next one."""
        full = self.cache.key(key(user_id))

        async def read_and_delete(client) -> dict[bytes, bytes]:
            async with client.pipeline(transaction=False) as pipe:
                pipe.hgetall(full)
                pipe.delete(full)
                raw, _ = await pipe.execute()
            return raw

        return _entry(await self._run(read_and_delete))

    async def started(self, journey: Journey) -> None:
        assert journey.checkin_time is not None
        mapping = {
            "journey_id": str(journey.id),
            "card_id": journey.card_id,
            "checkin_terminal": journey.checkin_terminal_code or "",
            "checkin_time": epoch(journey.checkin_time),
            "expected_fare": str(journey.held_amount),
        }
        full = self.cache.key(key(journey.user_id))

        async def write(client) -> None:
            # Every field is written each time, so no DEL first; one round trip, no MULTI.
            async with client.pipeline(transaction=False) as pipe:
                pipe.hset(full, mapping=mapping)
                pipe.expire(full, TTL_SECONDS)
                await pipe.execute()

        await self._run(write)

    async def ended(self, user_id: uuid.UUID) -> None:
        """Seed 004 fail-safe: 'clear user trip status'."""
        await self._run(lambda c: c.delete(self.cache.key(key(user_id))))

    async def _run(self, command):
        """`command(redis)` unless disabled; None when Redis fails or cools down after a
        failure (libs.cache.Cache.run): the database answers instead."""
        return await self.cache.run(command) if self.enabled else None


def _entry(raw: dict[bytes, bytes] | None) -> Entry | None:
    if not raw:
        return None
    try:
        return Entry(
            journey_id=uuid.UUID(raw[b"journey_id"].decode()),
            terminal_code=raw[b"checkin_terminal"].decode(),
            time=from_epoch(raw[b"checkin_time"].decode()),
            held=Decimal(raw[b"expected_fare"].decode()),
        )
    except (KeyError, ValueError, ArithmeticError):
        return None  # written by something else: ignore, the database decides
