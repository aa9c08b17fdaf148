"""Available slots through Redis (seed 001 §4.1.2: slot availability, 5 min).

One entry per clinic and local day, `slots:{clinic_id}:{YYYY-MM-DD}`, holding that day's
slots with a place free (every service and staff member; a search filters) as the
serialized protobuf SearchAvailableSlotsResponse a search answers with: a cache hit is one
parse, no rebuilding of messages (a week of a busy clinic is ~100 slots). Whatever changes
a slot invalidates its day's entry once the change has committed, before the RPC answers, so
a search made after a ReserveSlot answered never shows the place it took (libs/cache.py's
versions keep a load that raced the change from storing the old answer). With Redis down a
search reads PostgreSQL: correctness never depends on the cache."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from datetime import date, timedelta

from psycopg_pool import AsyncConnectionPool
from tiket.booking.v1 import booking_pb2 as pb

from libs.cache import Cache
from libs.db.transaction import read
from services.booking import messages, store
from services.booking.domain import Slot

SLOTS_TTL_SECONDS = 300


def day_key(clinic_id: uuid.UUID, day: date) -> str:
    return f"slots:{clinic_id}:{day.isoformat()}"


class Availability:
    def __init__(self, pool: AsyncConnectionPool, cache: Cache) -> None:
        self.pool = pool
        self.cache = cache

    async def search(
        self,
        clinic_id: uuid.UUID,
        service_id: uuid.UUID,
        first: date,
        last: date,
        staff_id: uuid.UUID | None,
    ) -> list[pb.Slot]:
        """The service's slots with a place free over [first, last] that have not started,
        in start order."""
        days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        found = await asyncio.gather(*(self._day(clinic_id, day) for day in days))
        service, staff, now = str(service_id), str(staff_id) if staff_id else None, time.time()
        return [
            slot
            for answer in found
            for slot in answer.slots
            if slot.service_id == service
            and (staff is None or slot.staff_id == staff)
            and slot.start_time.seconds > now
        ]

    async def changed(self, slots: Iterable[Slot]) -> None:
        """Invalidate the days of `slots`: call after the change committed."""
        await self.cache.invalidate(*sorted({day_key(s.clinic_id, s.day) for s in slots}))

    async def clinic_changed(self, clinic_id: uuid.UUID, days: Iterable[date]) -> None:
        """Invalidate the clinic's `days` (it was deactivated or activated again): call
        after the change committed."""
        await self.cache.invalidate(*(day_key(clinic_id, day) for day in sorted(days)))

    async def _day(self, clinic_id: uuid.UUID, day: date) -> pb.SearchAvailableSlotsResponse:
        async def load() -> pb.SearchAvailableSlotsResponse:
            slots = await read(self.pool, store.available_slots, clinic_id, day)
            return pb.SearchAvailableSlotsResponse(slots=[messages.slot(s) for s in slots])

        answer = await self.cache.get_or_load(
            day_key(clinic_id, day),
            SLOTS_TTL_SECONDS,
            load,
            pb.SearchAvailableSlotsResponse.SerializeToString,
            pb.SearchAvailableSlotsResponse.FromString,
        )
        assert answer is not None
        return answer
