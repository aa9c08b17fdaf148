"""Available slots through Redis (seed 001 §4.1.2: slot availability, 5 min).

One entry per clinic and local day, `slots:{clinic_id}:{YYYY-MM-DD}`, holding that day's
slots with a place free (every service and staff member; a search filters). Whatever changes
a slot invalidates its day's entry once the change has committed, before the RPC answers, so
a search made after a ReserveSlot answered never shows the place it took (libs/cache.py's
tombstones keep a load that raced the change from storing the old answer). With Redis down a
search reads PostgreSQL: correctness never depends on the cache."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import orjson
from psycopg_pool import AsyncConnectionPool

from libs.cache import Cache
from libs.db.transaction import read
from services.booking import store
from services.booking.domain import Slot, SlotStatus

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
    ) -> list[Slot]:
        """The service's slots with a place free over [first, last] that have not started,
        in start order."""
        days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        found = await asyncio.gather(*(self._day(clinic_id, day) for day in days))
        now = datetime.now(UTC)
        return [
            slot
            for slots in found
            for slot in slots
            if slot.service_id == service_id
            and (staff_id is None or slot.staff_id == staff_id)
            and slot.start_time > now
        ]

    async def changed(self, slots: Iterable[Slot]) -> None:
        """Invalidate the days of `slots`: call after the change committed."""
        await self.cache.invalidate(*sorted({day_key(s.clinic_id, s.day) for s in slots}))

    async def _day(self, clinic_id: uuid.UUID, day: date) -> list[Slot]:
        slots = await self.cache.get_or_load(
            day_key(clinic_id, day),
            SLOTS_TTL_SECONDS,
            lambda: read(self.pool, store.available_slots, clinic_id, day),
            encode,
            decode,
        )
        return slots or []


def encode(slots: list[Slot]) -> bytes:
    return orjson.dumps(
        [
            [
                str(s.id),
                str(s.clinic_id),
                str(s.service_id),
                str(s.staff_id) if s.staff_id else None,
                s.day.isoformat(),
                s.start_time.isoformat(),
                s.end_time.isoformat(),
                s.status.value,
                s.capacity,
                s.remaining,
                str(s.price),
                s.version,
                s.created_at.isoformat(),
                s.updated_at.isoformat(),
            ]
            for s in slots
        ]
    )


def decode(raw: bytes) -> list[Slot]:
    return [
        Slot(
            id=uuid.UUID(row[0]),
            clinic_id=uuid.UUID(row[1]),
            service_id=uuid.UUID(row[2]),
            staff_id=uuid.UUID(row[3]) if row[3] else None,
            day=date.fromisoformat(row[4]),
            start_time=datetime.fromisoformat(row[5]),
            end_time=datetime.fromisoformat(row[6]),
            status=SlotStatus(row[7]),
            capacity=row[8],
            remaining=row[9],
            price=Decimal(row[10]),
            version=row[11],
            created_at=datetime.fromisoformat(row[12]),
            updated_at=datetime.fromisoformat(row[13]),
        )
        for row in orjson.loads(raw)
    ]
