"""CheckOut: a tap at an exit gate.

1. checks that write nothing (gate type, card known);
2. the tap is recorded and the rider's active journey claimed for it, priced by the fare in
   force at check-in time — or, with no active journey, the incomplete journey the tap
   stands for is made, priced with the no-entry penalty;
3. the closing saga takes the money and stores the answer (services/journey/closings.py).

The active_trip hint in Redis names the journey and its entry, so the trip is priced before
any lock is taken and step 2 is one statement. Without a hint, or when the database
disagrees with it, step 2 locks the active journey and prices it there."""

from __future__ import annotations

from datetime import UTC, datetime

from psycopg import AsyncConnection
from tiket.journey.v1 import journey_pb2

from libs.db.transaction import in_statement, in_transaction
from libs.errors import FailedPrecondition, NotFound
from services.journey import domain, messages, store, tap_store
from services.journey.domain import Entry, Journey, Tap, TapRequest, TapState, Terminal
from services.journey.flow import TapFlow


class CheckOuts(TapFlow):
    async def check_out(self, request: TapRequest) -> journey_pb2.CheckOutResponse:
        try:
            gate = await self.fares.gate(request.terminal_code, request.gate_code)
            domain.require_exit_gate(gate)
            exit_terminal = await self.fares.terminal(request.terminal_code)
            rider = await self.wallet.rider(request.card_id)
        except (FailedPrecondition, NotFound):
            if (first := await self.answered(request)) is not None:
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
        first attempt), or the tap when it already has its answer."""

        async def work(conn: AsyncConnection) -> Journey | Tap:
            recorded = await tap_store.record_tap(conn, request, user_id, None)
            tap = recorded[0] if recorded else await tap_store.tap(conn, request.tap_id)
            assert tap is not None, "the tap the INSERT waited for is committed"
            domain.same_tap(tap, request)
            if tap.state is not TapState.PENDING:
                return tap
            if (claimed := await store.journey_closed_by(conn, tap.tap_id)) is not None:
                return claimed  # by a first attempt, whose settling did not finish
            active = await store.active_journey(conn, user_id, lock=True)
            if active is None:
                penalty = self.config.no_entry_penalty
                if penalty is None:
                    penalty = await self.fares.max_fare_to(exit_terminal.code, tap.tapped_at)
                journey = domain.incomplete(request, user_id, tap.tapped_at, exit_terminal, penalty)
                made = await store.insert_journey(conn, journey)
                claimed = made or await store.journey(conn, journey.id)
            else:
                fare = await self._fare(active.entry, exit_terminal)
                closing = domain.completing(
                    active.entry, request, tap.tapped_at, exit_terminal.name, fare, self.config
                )
                claimed = await store.claim(conn, active.id, closing)
            assert claimed is not None, "the journey is locked or was just made"
            await tap_store.link_tap(conn, tap.tap_id, claimed.id)
            return claimed

        return await in_transaction(self.pool, work)

    async def _fare(self, entry: Entry, exit_terminal: Terminal):
        if entry.terminal_code == exit_terminal.code:
            return None  # priced by the same-terminal rule
        return await self.fares.fare(entry.terminal_code, exit_terminal.code, entry.time)

    async def _answer(self, request: TapRequest) -> journey_pb2.CheckOutResponse:
        """The answer stored with the settling — by another attempt of this tap, by the
        sweeper, or a refusal when the journey was closed unpaid."""
        async with self.pool.connection() as conn:
            tap = await tap_store.tap(conn, request.tap_id)
        assert tap is not None and tap.state is not TapState.PENDING
        return replay(tap)


def replay(tap: Tap) -> journey_pb2.CheckOutResponse:
    return messages.replay(tap, journey_pb2.CheckOutResponse)
