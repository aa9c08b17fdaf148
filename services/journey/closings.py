"""Closing a journey, the one saga every ending goes through (check-out, exit without entry,
entry while active, the sweeper):

1. claim: the closing (status, price, exit) is written in the database, settlement pending —
   only one closer can win an active journey;
2. collect: the wallet captures the price from the hold (or charges it directly), idempotent
   by the journey's reference, so repeating it after a crash takes the money once;
3. settle: the outcome is recorded with its event, and the check-out tap's answer (one
   statement).

A crash between 1 and 3 leaves a pending closing that a retried tap or the sweeper finishes.

Only a closing a check-out tap asked for (domain.closed_by_tap) may be refused its money: the
gate stays shut and the journey is put back. Every other closing — reconciled offline taps,
the sweeper's, an entry while active — is a ride already taken and is charged into debt if
need be (wallet.py), as is a refused check-out whose journey cannot be put back because its
rider has started another: no closing is left unpaid."""

from __future__ import annotations

import logging
from enum import Enum, auto

from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool
from tiket.journey.v1 import journey_pb2

from libs.db.transaction import in_statement, in_transaction, read
from libs.errors import FailedPrecondition, NotFound
from services.journey import domain, events, messages, store, tap_store
from services.journey.domain import Journey, Settlement, TapAnswer, TapState
from services.journey.trips import ActiveTrips
from services.journey.wallet import Collected, Refused, WalletClient

log = logging.getLogger(__name__)


class Closings:
    def __init__(self, pool: AsyncConnectionPool, wallet: WalletClient, trips: ActiveTrips) -> None:
        self.pool = pool
        self.wallet = wallet
        self.trips = trips

    async def abandon(self, journey: Journey, reason: str) -> Journey | None:
        """Close an active journey as abandoned and charge its held fare; None when another
        closer got to it first."""
        closing = domain.abandoning(journey, reason)

        async def work(conn: AsyncConnection) -> Journey | None:
            return await store.claim(conn, journey.id, closing)

        claimed = await in_statement(self.pool, work)
        return None if claimed is None else await self.settle(claimed)

    async def settle(self, journey: Journey) -> Journey:
        """Finish a pending closing (a no-op for a settled one). When the wallet refuses the
        money of a closing a check-out tap asked for, the closing is undone, the tap refused,
        and FailedPrecondition raised with the wallet's reason."""
        settled, _ = await self.settle_answering(journey)
        return settled

    async def settle_answering(
        self, journey: Journey, *, trip_cleared: bool = False
    ) -> tuple[Journey, journey_pb2.CheckOutResponse | None]:
        """settle, and the check-out answer this call stored with it: the one message a
        check-out returns and its retries replay. None when this call stored none (nothing
        was pending, another attempt settled or undid it).
        `trip_cleared`: the caller has already cleared the rider's active_trip entry."""
        if journey.settlement is not Settlement.PENDING:
            return journey, None
        refusable = domain.closed_by_tap(journey)
        outcome = await self.wallet.collect(journey, debt=not refusable)
        if isinstance(outcome, Refused):
            undo = await self._undo(journey, outcome)
            if undo is Undo.DONE:
                raise FailedPrecondition(outcome.reason, outcome.message)
            if undo is Undo.OVERTAKEN:  # the answer stored by the other attempt is the tap's
                now = await read(self.pool, store.journey, journey.id)
                return now or journey, None
            # IMPOSSIBLE: the journey stays closed, so its ride is charged into debt
            outcome = await self.wallet.collect(journey, debt=True)
        assert isinstance(outcome, Collected)
        settled = domain.settled(journey, Settlement.PAID, outcome.available, outcome.notes)
        response = messages.check_out_response(settled)
        answer = TapAnswer(TapState.DONE, response=response.SerializeToString())

        async def work(conn: AsyncConnection) -> tuple[Journey, bool]:
            tap_answer = answer if settled.closing_tap_id is not None else None
            done = await store.settle(conn, settled, events.closed(settled), tap_answer)
            if done is None:  # another attempt settled it
                return _found(await store.journey(conn, journey.id), journey), False
            return done, True

        done, stored = await in_statement(self.pool, work)
        if not trip_cleared:
            await self.trips.ended(journey.user_id)
        return done, response if stored and settled.closing_tap_id is not None else None

    async def _undo(self, journey: Journey, refused: Refused) -> Undo:
        """Put the journey back and refuse its tap (DONE). OVERTAKEN when another attempt
        (the sweeper, a retry) settled or undid the closing meanwhile: nothing is written.
        IMPOSSIBLE when the rider has started another journey meanwhile: the closing stays
        (and is charged into debt)."""
        assert journey.closing_tap_id is not None
        tap_id = journey.closing_tap_id

        async def work(conn: AsyncConnection) -> Undo:
            if not await store.undo_closing(conn, journey):
                return Undo.OVERTAKEN
            await tap_store.refuse_tap(
                conn, tap_id, TapState.REFUSED, refused.reason, refused.message
            )
            return Undo.DONE

        try:
            return await in_transaction(self.pool, work)
        except errors.UniqueViolation:
            log.warning("cannot reopen journey %s: its rider is on another journey", journey.id)
            return Undo.IMPOSSIBLE


class Undo(Enum):
    """What came of putting back a closing the wallet refused."""

    DONE = auto()
    OVERTAKEN = auto()
    IMPOSSIBLE = auto()


def _found(value: Journey | None, journey: Journey) -> Journey:
    if value is None:  # an incomplete journey undone by a concurrent attempt
        raise NotFound(
            f"journey {journey.id} was undone",
            resource_type="journey",
            resource_name=str(journey.id),
        )
    return value
