"""What both tap use cases (checkin.py, checkout.py) work with, wired once by app.py."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from services.journey import domain, tap_store
from services.journey.closings import Closings
from services.journey.config import JourneyConfig
from services.journey.domain import Tap, TapRequest, TapState
from services.journey.lookups import FareLookups
from services.journey.trips import ActiveTrips
from services.journey.wallet import Wallet


class TapFlow:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        wallet: Wallet,
        fares: FareLookups,
        trips: ActiveTrips,
        closings: Closings,
        config: JourneyConfig,
    ) -> None:
        self.pool = pool
        self.wallet = wallet
        self.fares = fares
        self.trips = trips
        self.closings = closings
        self.config = config

    async def answered(self, request: TapRequest) -> Tap | None:
        """The tap's first answer, if it has one. Taps are checked (gate, card, fare) before
        the database is read, so a check that fails now — the card blocked since, say — asks
        this before refusing: a retry gets the first answer, whatever changed meanwhile."""
        async with self.pool.connection() as conn:
            first = await tap_store.tap(conn, request.tap_id)
        if first is None or first.state is TapState.PENDING:
            return None
        return domain.same_tap(first, request)
