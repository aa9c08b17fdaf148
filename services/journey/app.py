"""Use cases of the journey service: the two taps (checkin.py, checkout.py), the queries,
and what the sweepers run (jobs.py), over one set of clients and caches."""

from __future__ import annotations

import uuid
from datetime import datetime

from grpc import aio
from psycopg_pool import AsyncConnectionPool
from tiket.journey.v1 import journey_pb2

from libs.auth import Principal, Role
from libs.cache import Cache
from libs.db.transaction import read
from libs.errors import NotFound, PermissionDenied, not_found
from services.journey import store
from services.journey.checkin import CheckIns
from services.journey.checkout import CheckOuts
from services.journey.closings import Closings
from services.journey.config import JourneyConfig
from services.journey.domain import Journey, TapRequest
from services.journey.lookups import FareLookups
from services.journey.offline import SyncBatch
from services.journey.reconcile import Reconciler
from services.journey.store import JourneyFilter
from services.journey.trips import ActiveTrips
from services.journey.wallet import WalletClient


class JourneyApp:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        cache: Cache,
        config: JourneyConfig,
        user_channel: aio.Channel,
        fare_channel: aio.Channel,
    ) -> None:
        self.pool = pool
        self.config = config
        self.wallet = WalletClient(user_channel, config.dependency_timeout)
        self.fares = FareLookups(fare_channel, config.lookup_ttl, config.dependency_timeout)
        self.trips = ActiveTrips(cache, enabled=config.active_trip_cache)
        self.closings = Closings(pool, self.wallet, self.trips)
        parts = (pool, self.wallet, self.fares, self.trips, self.closings, config)
        self._check_ins = CheckIns(*parts)
        self._check_outs = CheckOuts(*parts)
        self.reconciler = Reconciler(pool, self.wallet, self.fares, self.closings, config)

    async def check_in(self, request: TapRequest) -> journey_pb2.CheckInResponse:
        return await self._check_ins.check_in(request)

    async def check_out(self, request: TapRequest) -> journey_pb2.CheckOutResponse:
        return await self._check_outs.check_out(request)

    async def sync_offline_taps(self, batch: SyncBatch) -> journey_pb2.SyncOfflineTapsResponse:
        return await self.reconciler.sync(batch)

    # --- queries -------------------------------------------------------------------------

    async def active_journey(self, user_id: uuid.UUID | None, card_id: str | None) -> Journey:
        if user_id is None:
            assert card_id is not None
            user_id = (await self.wallet.rider(card_id)).user_id
        journey = await read(self.pool, store.active_journey, user_id)
        if journey is None:
            raise NotFound(
                f"no active journey for {card_id or user_id}",
                resource_type="active journey",
                resource_name=card_id or str(user_id),
            )
        return journey

    async def journey(self, journey_id: uuid.UUID, caller: Principal | None) -> Journey:
        """A rider reads only their own journeys: any other id, existing or not, is
        PERMISSION_DENIED for them (no hint of what exists)."""
        journey = await read(self.pool, store.journey, journey_id)
        mine = journey is not None and str(journey.user_id) == getattr(caller, "subject", None)
        if caller is not None and caller.role is Role.USER and not mine:
            raise PermissionDenied("a user token may only read its own journeys")
        if journey is None:
            raise not_found("journey", journey_id)
        return journey

    async def list_journeys(
        self, where: JourneyFilter, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[Journey]:
        return await read(self.pool, store.list_journeys, where, after, limit)
