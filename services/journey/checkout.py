"""CheckOut: a tap at an exit gate.

1. checks that write nothing (gate type, card known);
2. the tap is recorded and the rider's active journey claimed for it, priced by the fare in
   force at check-in time — or, with no active journey, the incomplete journey the tap
   stands for is made, priced with the no-entry penalty, unless the tap repeats the rider's
   check-out there (anti-passback, passback.py: refused with that journey, nothing charged);
3. the closing saga takes the money and stores the answer (services/journey/closings.py).

The trip is always priced before any lock is taken. The active_trip hint in Redis names the
journey and its entry, so step 2 is one statement. Without a hint, or when the database
disagrees with it, the journey is read, priced, then locked and claimed if it is still the
rider's active one (else read and priced again)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from tiket.journey.v1 import journey_pb2

from libs.db.transaction import in_statement, in_transaction, read
from libs.errors import Aborted, FailedPrecondition, NotFound
from services.journey import domain, messages, passback, store, tap_store
from services.journey.closings import Closings
from services.journey.config import JourneyConfig
from services.journey.domain import Entry, Journey, Tap, TapRequest, TapState, Terminal
from services.journey.flow import final_tap, first_answer
from services.journey.lookups import FareLookups
from services.journey.trips import ActiveTrips
from services.journey.wallet import WalletClient

ATTEMPTS = 3


@dataclass(frozen=True)
class CheckOuts:
    pool: AsyncConnectionPool
    wallet: WalletClient
    fares: FareLookups
    trips: ActiveTrips
    closings: Closings
    config: JourneyConfig

    async def check_out(self, request: TapRequest) -> journey_pb2.CheckOutResponse:
        try:
            gate = await self.fares.gate(request.terminal_code, request.gate_code)
            domain.require_exit_gate(gate)
            exit_terminal = await self.fares.terminal(request.terminal_code)
            rider = await self.wallet.rider(request.card_id)
        except (FailedPrecondition, NotFound):
            if (first := await first_answer(self.pool, request)) is not None:
                return replay(first)
            raise

        claimed: Journey | Tap | None = None
        if (entry := await self.trips.take(rider.user_id)) is not None:
            claimed = await self._claim_hinted(request, rider.user_id, entry, exit_terminal)
        if claimed is None:
            claimed = await self._claim(request, rider.user_id, exit_terminal)
        if isinstance(claimed, Tap):
            return replay(claimed)
        settled, answer = await self.closings.settle_answering(claimed, trip_cleared=True)
        if answer is not None and settled.closing_tap_id == request.tap_id:
            return answer  # the message the settling stored as this tap's answer
        return await self._answer(request)

    async def _claim_hinted(
        self, request: TapRequest, user_id, entry: Entry, exit_terminal: Terminal
    ) -> Journey | Tap | None:
        """The fast path: record the tap and claim the hinted journey in one statement. The
        tap when it already has its answer; None when the hint was wrong (or the tap is a
        retry): the slow path then decides."""
        tapped_at = request.tapped_at or datetime.now(UTC)
        fare = await self._fare(entry, exit_terminal)
        closing = domain.completing(
            entry, request, tapped_at, exit_terminal.name, fare, self.config
        )

        async def work(conn: AsyncConnection) -> tuple[Tap, Journey | None] | None:
            return await tap_store.record_checkout(
                conn, request, user_id, entry.journey_id, closing
            )

        recorded = await in_statement(self.pool, work)
        if recorded is None:  # a concurrent attempt recorded it: the slow path
            return None
        tap, claimed = recorded
        first = domain.same_tap(tap, request)
        if claimed is None and first.state is not TapState.PENDING:
            return first
        return claimed

    async def _claim(self, request: TapRequest, user_id, exit_terminal: Terminal) -> Journey | Tap:
        """The slow path: the journey this tap closes (claimed now, under a lock, or by a
        first attempt), or the tap when it already has its answer. The trip is priced for
        the journey seen before the lock — the fare service is never asked while a row lock
        and a pooled connection wait — and claimed only if that is still the rider's."""
        for _ in range(ATTEMPTS):
            seen = await read(self.pool, self._seen, request, user_id)
            if not isinstance(seen, Seen):
                return seen
            price = await self._price(seen, exit_terminal)
            work = partial(
                self._claim_locked,
                request=request,
                user_id=user_id,
                exit_terminal=exit_terminal,
                seen=seen,
                price=price,
            )
            if (claimed := await in_transaction(self.pool, work)) is not None:
                return claimed
        raise Aborted("the rider's journey changed while this exit was priced; tap again")

    async def _seen(
        self, conn: AsyncConnection, request: TapRequest, user_id
    ) -> Journey | Tap | Seen:
        """What the tap has come to (its answer, the journey a first attempt claimed), or
        what to price it for."""
        tap = await tap_store.tap(conn, request.tap_id)
        if tap is not None:
            domain.same_tap(tap, request)
            if tap.state is not TapState.PENDING:
                return tap
            if (claimed := await store.journey_closed_by(conn, tap.tap_id)) is not None:
                return claimed  # by a first attempt, whose settling did not finish
        tapped_at = tap.tapped_at if tap else request.tapped_at or datetime.now(UTC)
        return Seen(await store.active_journey(conn, user_id), tapped_at)

    async def _price(self, seen: Seen, exit_terminal: Terminal) -> Decimal | None:
        """The fare of the trip seen (None: priced by a rule), or the no-entry penalty."""
        if seen.active is not None:
            return await self._fare(seen.active.entry, exit_terminal)
        if self.config.no_entry_penalty is not None:
            return self.config.no_entry_penalty
        return await self.fares.max_fare_to(exit_terminal.code, seen.tapped_at)

    async def _claim_locked(
        self,
        conn: AsyncConnection,
        request: TapRequest,
        user_id,
        exit_terminal: Terminal,
        seen: Seen,
        price: Decimal | None,
    ) -> Journey | Tap | None:
        """In the transaction: the tap recorded, the rider's active journey locked and
        claimed. None when it is not the journey `price` is for (priced again)."""
        recorded = await tap_store.record_tap(conn, request, user_id, None)
        tap = recorded[0] if recorded else await tap_store.tap(conn, request.tap_id)
        assert tap is not None, "the tap the INSERT waited for is committed"
        domain.same_tap(tap, request)
        if tap.state is not TapState.PENDING:
            return tap
        if (claimed := await store.journey_closed_by(conn, tap.tap_id)) is not None:
            return claimed
        active = await store.active_journey(conn, user_id, lock=True)
        if _id(active) != _id(seen.active):
            return None
        if active is None:
            assert price is not None
            return await self._exit_without_entry(conn, request, tap, exit_terminal, price)
        closing = domain.completing(
            active.entry, request, tap.tapped_at, exit_terminal.name, price, self.config
        )
        claimed = await store.claim(conn, active.id, closing)
        assert claimed is not None, "the journey is locked"
        await tap_store.link_tap(conn, tap.tap_id, claimed.id)
        return claimed

    async def _exit_without_entry(
        self,
        conn: AsyncConnection,
        request: TapRequest,
        tap: Tap,
        exit_terminal: Terminal,
        penalty: Decimal,
    ) -> Journey | Tap:
        """The incomplete journey the tap makes — or, when it repeats the rider's check-out
        there (anti-passback), the tap refused with that journey."""
        await store.lock_rider_exits(conn, tap.user_id)
        window = self.config.anti_passback
        last = await store.nearest_exit(
            conn, tap.user_id, exit_terminal.code, tap.tapped_at, window
        )
        if last is not None and passback.repeats_exit(last, tap, window):
            refusal = messages.about(passback.already_checked_out(last), last)
            detail = messages.detail_of(refusal)
            await tap_store.refuse_tap(
                conn, tap.tap_id, TapState.REFUSED, refusal.reason, refusal.message, detail
            )
            return replace(
                tap,
                state=TapState.REFUSED,
                refusal_reason=refusal.reason,
                refusal_message=refusal.message,
                refusal_detail=detail,
            )
        journey = domain.incomplete(request, tap.user_id, tap.tapped_at, exit_terminal, penalty)
        claimed = await store.insert_journey(conn, journey) or await store.journey(conn, journey.id)
        assert claimed is not None, "the journey was just made"
        await tap_store.link_tap(conn, tap.tap_id, claimed.id)
        return claimed

    async def _fare(self, entry: Entry, exit_terminal: Terminal):
        if entry.terminal_code == exit_terminal.code:
            return None  # priced by the same-terminal rule
        return await self.fares.fare(entry.terminal_code, exit_terminal.code, entry.time)

    async def _answer(self, request: TapRequest) -> journey_pb2.CheckOutResponse:
        """The answer stored with the settling — by another attempt of this tap, by the
        sweeper, or the refusal stored when its closing was undone."""
        return replay(await final_tap(self.pool, request.tap_id))


@dataclass(frozen=True)
class Seen:
    """What the slow path prices before it locks: the rider's active journey (None: an
    exit without an entry) and the tap's time."""

    active: Journey | None
    tapped_at: datetime


def _id(journey: Journey | None) -> uuid.UUID | None:
    return None if journey is None else journey.id


def replay(tap: Tap) -> journey_pb2.CheckOutResponse:
    return messages.replay(tap, journey_pb2.CheckOutResponse)
