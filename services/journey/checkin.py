"""CheckIn: a tap at an entry gate.

Order of the saga, and why:
1. checks that write nothing (gate type, terminal open, card known, fare known) — bad taps
   leave no trace;
2. the tap is recorded, pending, with the journey id derived from it — so a retry after a
   crash re-sends the same hold reference, and the sweeper can find and release the hold of
   an attempt that never finished;
3. anti-passback (passback.py): an entry repeating the check-in of the rider's active
   journey is refused with that journey, and nothing is held or charged;
4. a journey still active is closed as abandoned (its capture releases the rest of its
   hold before the new hold is placed);
5. PlaceHold (idempotent by reference: a retry adopts the hold a first attempt placed);
6. the tap's answer, the journey and its event are written by one statement; the partial
   unique index refuses a second active journey, whatever raced us.
A tap that ends without its journey once the hold is placed (another attempt or the sweeper
answered it first, a repeated entry won the race) releases the hold: it holds for nothing.

Each database step is one statement on an autocommit connection (libs/db/transaction.py
in_statement says why)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool
from tiket.journey.v1 import journey_pb2

from libs.db.transaction import in_statement, read
from libs.errors import Aborted, FailedPrecondition, NotFound
from services.journey import domain, events, messages, passback, store, tap_store
from services.journey.closings import Closings
from services.journey.config import JourneyConfig
from services.journey.domain import Journey, Tap, TapRequest, TapState
from services.journey.flow import final_tap, first_answer, release_hold_of
from services.journey.lookups import FareLookups
from services.journey.trips import ActiveTrips
from services.journey.wallet import Rider, WalletClient

ONE_ACTIVE = "one_active_journey_per_user"
ATTEMPTS = 3


@dataclass(frozen=True)
class CheckIns:
    pool: AsyncConnectionPool
    wallet: WalletClient
    fares: FareLookups
    trips: ActiveTrips
    closings: Closings
    config: JourneyConfig

    async def check_in(self, request: TapRequest) -> journey_pb2.CheckInResponse:
        try:
            terminal, rider, held = await self._admit(request)
        except (FailedPrecondition, NotFound):
            if (first := await first_answer(self.pool, request)) is not None:
                return replay(first)
            raise
        tap, active = await self._record(request, rider.user_id)
        if tap.state is not TapState.PENDING:
            return replay(tap)
        if active is not None and passback.repeats_entry(active, tap, self.config.anti_passback):
            # An earlier attempt of this tap may have placed its hold before it died: released.
            return await self._refuse(tap, TapState.REFUSED, repeated(active), held=True)
        abandoned = None
        reason = f"entry at {request.gate_code} ({terminal.name}) before an exit"
        if active is not None:
            abandoned = await self.closings.abandon(active, reason)
        try:
            hold = await self.wallet.place_hold(
                rider.user_id, held, request.journey_id, self.config.hold_ttl, reason_of(terminal)
            )
        except FailedPrecondition as refusal:
            return await self._refuse(tap, TapState.REFUSED, refusal)
        if not hold.held:  # released by the orphan sweeper before this retry came
            return await self._refuse(tap, TapState.EXPIRED, domain.expired_tap(tap.tap_id))
        available = hold.available
        if available is None:
            available = await self.wallet.available(rider.user_id)
        journey = domain.new_journey(request, rider.user_id, tap.tapped_at, terminal, hold.amount)
        response = messages.check_in_response(journey, available, abandoned)

        for _ in range(ATTEMPTS):
            try:
                started = await self._start(tap, journey, response, available)
            except errors.UniqueViolation as exc:
                if exc.diag.constraint_name != ONE_ACTIVE:
                    raise
                other = await read(self.pool, store.active_journey, rider.user_id)
                if other is not None and passback.repeats_entry(
                    other, tap, self.config.anti_passback
                ):  # a repeat of this entry won the race: it is the rider's check-in
                    return await self._refuse(tap, TapState.REFUSED, repeated(other), held=True)
                # Another entry of this card won a race: close its journey, then ours starts.
                if other is not None and (closed := await self.closings.abandon(other, reason)):
                    abandoned = closed
                    available = await self.wallet.available(rider.user_id)
                    response = messages.check_in_response(journey, available, abandoned)
                continue
            if started is None:  # another attempt answered the tap (or the sweeper expired it)
                return await self._replay_held(tap)
            await self.trips.started(started)
            return response
        raise Aborted("the card was tapped in at several gates at once; tap again")

    async def _admit(self, request: TapRequest) -> tuple[domain.Terminal, Rider, Decimal]:
        """The checks that write nothing: an entry gate of an open terminal, a known active
        card, a fare to hold. (terminal, rider, the maximum fare to hold)."""
        gate = await self.fares.gate(request.terminal_code, request.gate_code)
        domain.require_entry_gate(gate)
        terminal = await self.fares.terminal(request.terminal_code)
        domain.require_open(terminal)
        rider = await self.wallet.rider(request.card_id)
        if rider.active is False:
            raise FailedPrecondition("USER_NOT_ACTIVE", f"card {request.card_id} is not active")
        at = request.tapped_at or datetime.now(UTC)
        return terminal, rider, await self.fares.max_fare_from(terminal.code, at)

    async def _record(self, request: TapRequest, user_id) -> tuple[Tap, Journey | None]:
        """The tap as recorded (by this attempt or a first one), and the rider's active
        journey (another than the one this tap starts): one statement."""

        async def work(conn: AsyncConnection) -> tuple[Tap, uuid.UUID | None] | None:
            return await tap_store.record_tap(
                conn, request, user_id, request.journey_id, with_active=True
            )

        recorded = await in_statement(self.pool, work)
        if recorded is None:  # a concurrent attempt recorded it: now it is there to read
            recorded = await in_statement(self.pool, work)
        if recorded is None:
            raise Aborted(f"tap {request.tap_id} is being recorded by another attempt; retry")
        tap, active_id = recorded
        domain.same_tap(tap, request)
        if active_id is None or active_id == request.journey_id:
            return tap, None
        return tap, await read(self.pool, store.journey, active_id)  # the whole journey

    async def _start(
        self, tap: Tap, journey: Journey, response: journey_pb2.CheckInResponse, available
    ) -> Journey | None:
        """The journey inserted with the tap's answer and its event (one statement). None
        when another attempt of the tap got there first: nothing was written."""
        answer = response.SerializeToString()

        async def work(conn: AsyncConnection) -> Journey | None:
            event = events.checked_in(journey, available)
            return await store.start_journey(conn, journey, tap.tap_id, answer, event)

        return await in_statement(self.pool, work)

    async def _refuse(
        self, tap: Tap, state: TapState, refusal: FailedPrecondition, *, held: bool = False
    ) -> journey_pb2.CheckInResponse:
        """Record the refusal as the tap's answer and give it (or the answer another
        attempt recorded first). `held`: this attempt holds the tap's hold, to release."""

        async def work(conn: AsyncConnection) -> bool:
            detail = messages.detail_of(refusal)
            return await tap_store.refuse_tap(
                conn, tap.tap_id, state, refusal.reason, refusal.message, detail, release_owed=held
            )

        if not await in_statement(self.pool, work):
            return await (self._replay_held(tap) if held else self._replay(tap))
        if held:
            await release_hold_of(self.pool, self.wallet, tap)
        raise refusal

    async def _replay_held(self, tap: Tap) -> journey_pb2.CheckInResponse:
        """The answer another attempt (or the sweeper) gave the tap whose hold this attempt
        placed: the hold is released unless that answer started the journey."""

        async def owe(conn: AsyncConnection) -> bool:
            return await tap_store.owe_release(conn, tap.tap_id)

        if await in_statement(self.pool, owe):
            await release_hold_of(self.pool, self.wallet, tap)
        return await self._replay(tap)

    async def _replay(self, tap: Tap) -> journey_pb2.CheckInResponse:
        return replay(await final_tap(self.pool, tap.tap_id))


def repeated(journey: Journey) -> FailedPrecondition:
    """ALREADY_CHECKED_IN, with the journey the entry repeats."""
    return messages.about(passback.already_checked_in(journey), journey)


def replay(tap: Tap) -> journey_pb2.CheckInResponse:
    return messages.replay(tap, journey_pb2.CheckInResponse)


def reason_of(terminal: domain.Terminal) -> str:
    return f"Trip fare hold: check-in at {terminal.name}"
