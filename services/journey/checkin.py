"""CheckIn: a tap at an entry gate.

Order of the saga, and why:
1. checks that write nothing (gate type, terminal open, card known, fare known) — bad taps
   leave no trace;
2. the tap is recorded, pending, with the journey id derived from it — so a retry after a
   crash re-sends the same hold reference, and the sweeper can find and release the hold of
   an attempt that never finished;
3. a journey still active is closed as abandoned (its capture releases the rest of its
   hold before the new hold is placed);
4. PlaceHold (idempotent by reference: a retry adopts the hold a first attempt placed);
5. the tap's answer, the journey and its event are written by one statement; the partial
   unique index refuses a second active journey, whatever raced us.

Each database step is one statement on an autocommit connection (libs/db/transaction.py
in_statement says why)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from psycopg import AsyncConnection, errors
from tiket.journey.v1 import journey_pb2

from libs.db.transaction import in_statement
from libs.errors import Aborted, FailedPrecondition, NotFound
from services.journey import domain, events, messages, store, tap_store
from services.journey.domain import Journey, Tap, TapRequest, TapState
from services.journey.flow import TapFlow
from services.journey.wallet import Rider

ONE_ACTIVE = "one_active_journey_per_user"
ATTEMPTS = 3


class Answered(Exception):
    """Another attempt of the same tap answered first: give its answer."""


class CheckIns(TapFlow):
    async def check_in(self, request: TapRequest) -> journey_pb2.CheckInResponse:
        try:
            terminal, rider, held = await self._admit(request)
        except (FailedPrecondition, NotFound):
            if (first := await self.answered(request)) is not None:
                return replay(first)
            raise
        tap, active = await self._record(request, rider.user_id)
        if tap.state is not TapState.PENDING:
            return replay(tap)
        abandoned = None
        reason = f"entry at {request.gate_code} ({terminal.name}) before an exit"
        if active is not None and active.id != request.journey_id:
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
            except Answered:  # another attempt answered the tap (or the sweeper expired it)
                return replay(await self._final_tap(tap))
            except errors.UniqueViolation as exc:
                if exc.diag.constraint_name != ONE_ACTIVE:
                    raise
                # Another entry of this card won a race: close its journey, then ours starts.
                other = await self._active(rider.user_id)
                if other is not None and (closed := await self.closings.abandon(other, reason)):
                    abandoned = closed
                    available = await self.wallet.available(rider.user_id)
                    response = messages.check_in_response(journey, available, abandoned)
                continue
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
        journey: one statement."""

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
        async with self.pool.connection() as conn:  # entry while active: the whole journey
            return tap, await store.journey(conn, active_id)

    async def _start(
        self, tap: Tap, journey: Journey, response: journey_pb2.CheckInResponse, available
    ) -> Journey:
        """The journey inserted with the tap's answer and its event (one statement).
        Answered when another attempt of the tap got there first: nothing was written."""
        answer = response.SerializeToString()

        async def work(conn: AsyncConnection) -> Journey | None:
            event = events.checked_in(journey, available)
            return await store.start_journey(conn, journey, tap.tap_id, answer, event)

        started = await in_statement(self.pool, work)
        if started is None:
            raise Answered
        return started

    async def _refuse(
        self, tap: Tap, state: TapState, refusal: FailedPrecondition
    ) -> journey_pb2.CheckInResponse:
        """Record the refusal as the tap's answer and give it (or the answer another
        attempt recorded first)."""

        async def work(conn: AsyncConnection) -> bool:
            return await tap_store.refuse_tap(
                conn, tap.tap_id, state, refusal.reason, refusal.message
            )

        if await in_statement(self.pool, work):
            raise refusal
        return replay(await self._final_tap(tap))

    async def _final_tap(self, tap: Tap) -> Tap:
        async with self.pool.connection() as conn:
            final = await tap_store.tap(conn, tap.tap_id)
        assert final is not None and final.state is not TapState.PENDING
        return final

    async def _active(self, user_id) -> Journey | None:
        async with self.pool.connection() as conn:
            return await store.active_journey(conn, user_id)


def replay(tap: Tap) -> journey_pb2.CheckInResponse:
    return messages.replay(tap, journey_pb2.CheckInResponse)


def reason_of(terminal: domain.Terminal) -> str:
    return f"Trip fare hold: check-in at {terminal.name}"
