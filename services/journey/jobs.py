"""The journey service's fail-safe (seed 004: "find orphaned journeys, mark as expired, clear
user trip status"), run beside the server. Safe on every replica at once: claims use
SKIP LOCKED or conditional updates, and every wallet call is idempotent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import TypeVar

from psycopg import AsyncConnection

from libs.db.transaction import in_statement, in_transaction, read
from libs.errors import FailedPrecondition, TiketError
from libs.periodic import Periodic
from services.journey import domain, store, tap_store
from services.journey.app import JourneyApp
from services.journey.domain import Journey, Tap, TapKind, TapState
from services.journey.flow import release_hold_of

log = logging.getLogger(__name__)
BATCH = 200
PARALLEL = 8
T = TypeVar("T")


class Sweeper:
    def __init__(self, app: JourneyApp) -> None:
        self.app = app
        self.config = app.config

    async def sweep(self) -> int:
        """One round of every job; the number of journeys and taps it finished."""
        return (
            await self.close_overdue()
            + await self.settle_unfinished()
            + await self.expire_taps()
            + await self.release_owed()
            + await self.app.reconciler.finish()  # re-pricings of reconciled journeys
        )

    async def close_overdue(self) -> int:
        """Journeys active longer than the maximum trip time: abandoned, charged the held
        maximum fare, the rider's trip status cleared."""
        reason = f"no exit within {self.config.max_trip}"

        async def work(conn: AsyncConnection) -> list[Journey]:
            return await store.claim_overdue(conn, self.config.max_trip, reason, BATCH)

        claimed = await in_transaction(self.app.pool, work)
        return await _each(claimed, self.app.closings.settle)

    async def settle_unfinished(self) -> int:
        """Closings whose money was never confirmed (a crash, a dependency down)."""
        pending = await read(self.app.pool, store.unsettled, self.config.settle_after, BATCH)
        return await _each(pending, self.app.closings.settle)

    async def expire_taps(self) -> int:
        """Taps whose attempt never finished: answered TAP_EXPIRED, and a check-in's hold
        (if one was placed) released. A check-out that claimed its journey is finished by
        settle_unfinished instead."""
        stale = await read(self.app.pool, tap_store.stale_taps, self.config.orphan_after, BATCH)
        orphans = [t for t in stale if t.kind is TapKind.CHECKIN or t.journey_id is None]
        return await _each(orphans, self.expire_tap)

    async def expire_tap(self, tap: Tap) -> bool:
        """Answer a tap TAP_EXPIRED — only while it is still pending — then release its
        hold. In that order: a retry of the tap may finish it meanwhile (adopting the hold
        and starting the journey), and then the hold is that journey's. False when the tap
        was answered first."""
        expired = domain.expired_tap(tap.tap_id)
        held = tap.kind is TapKind.CHECKIN

        async def work(conn: AsyncConnection) -> bool:
            return await tap_store.refuse_tap(
                conn,
                tap.tap_id,
                TapState.EXPIRED,
                expired.reason,
                expired.message,
                release_owed=held,
            )

        if not await in_statement(self.app.pool, work):
            return False
        if held:  # a failure here leaves the release owed: release_owed() retries it
            await release_hold_of(self.app.pool, self.app.wallet, tap)
        return True

    async def release_owed(self) -> int:
        """Holds of check-in taps answered without their journey whose release did not
        finish (the user service was down)."""
        owed = await read(self.app.pool, tap_store.owed_releases, BATCH)
        return await _each(owed, partial(release_hold_of, self.app.pool, self.app.wallet))


async def _each(items: Iterable[T], job: Callable[[T], Awaitable[object]]) -> int:
    """Run `job` on every item, a few at a time; the number that succeeded. A failure (a
    dependency down) leaves its item for the next round."""
    gate = asyncio.Semaphore(PARALLEL)

    async def one(item: T) -> bool:
        async with gate:
            try:
                await job(item)
            except FailedPrecondition:
                return True  # a refused check-out, undone and answered
            except TiketError as exc:
                name = getattr(item, "id", None) or getattr(item, "tap_id", "?")
                log.warning("sweeper: %s left for the next round: %s", name, exc)
                return False
            return True

    return sum(await asyncio.gather(*(one(i) for i in items)))


def sweeper(app: JourneyApp, interval: float) -> Periodic:
    return Periodic("journey-sweeper", Sweeper(app).sweep, interval)
