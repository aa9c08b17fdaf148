"""Use cases of the clinic catalogue and its slots: each write one transaction (with its
events) that an operator may make only for their own clinic, idempotent by request_id; the
slot cache is invalidated after every commit that changed slots."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TypeVar
from zoneinfo import ZoneInfo

import orjson
from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool
from tiket.booking.v1 import booking_pb2 as pb

from libs.cache import LocalCache
from libs.db.transaction import in_transaction, read
from libs.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    found,
    not_found,
)
from services.booking import events, schedule, store
from services.booking.availability import Availability
from services.booking.domain import (
    Actor,
    Clinic,
    ClinicService,
    Slot,
    SlotStatus,
    Staff,
    require_active,
)
from services.booking.domain import same_retry as check_retry
from services.booking.schedule import PlannedSlot, Window

T = TypeVar("T")
# Services never change clinic: a search checks its service against this for a minute.
SERVICE_FACTS_TTL = 60.0
MAX_SLOT_LENGTH = timedelta(hours=24)


@dataclass(frozen=True)
class SlotSpec:
    """What a CreateSlot or GenerateSlots request asks for besides the times; None = the
    service's default."""

    clinic_id: uuid.UUID
    service_id: uuid.UUID
    staff_id: uuid.UUID | None
    capacity: int | None
    price: Decimal | None
    request_id: str | None


@dataclass(frozen=True)
class Generation:
    """A GenerateSlots request."""

    spec: SlotSpec
    first: date
    last: date
    windows: tuple[Window, ...]
    slot_minutes: int | None

    def fingerprint(self) -> str:
        """What a retry under the same request_id must repeat, hashed."""
        return hashlib.sha256(orjson.dumps(asdict(self), default=str)).hexdigest()


class CatalogueApp:
    def __init__(self, pool: AsyncConnectionPool, availability: Availability) -> None:
        self.pool = pool
        self.availability = availability
        self._services: LocalCache[uuid.UUID, ClinicService | None] = LocalCache(SERVICE_FACTS_TTL)

    # --- clinics, services, staff -------------------------------------------------------

    async def create_clinic(
        self,
        actor: Actor,
        name: str,
        address: str | None,
        time_zone: str,
        active: bool,
        request_id: str | None,
    ) -> Clinic:
        fields = {"name": name, "address": address, "time_zone": time_zone, "is_active": active}

        async def work(conn: AsyncConnection) -> Clinic:
            made = await store.insert_clinic(
                conn, name, address, time_zone, active, request_id, actor.label
            )
            if made is not None:
                return made
            first = await store.clinic(conn, "request_id", request_id)
            return _retried(first, fields, "a clinic", request_id)

        return await in_transaction(self.pool, work, pipeline=False)

    async def update_clinic(
        self, actor: Actor, clinic_id: uuid.UUID, fields: dict[str, object]
    ) -> Clinic:
        """Change the clinic's fields named in an update mask. Its time zone can change only
        while it has no slots (their local dates were read on the old clock)."""
        actor.require_clinic(clinic_id)

        async def work(conn: AsyncConnection) -> tuple[Clinic, list[date]]:
            current = await self._clinic(conn, clinic_id)
            zone = fields.get("time_zone")
            if (
                zone is not None
                and zone != current.time_zone
                and await store.has_slots(conn, clinic_id)
            ):
                raise FailedPrecondition(
                    "CLINIC_HAS_SLOTS",
                    f"clinic {clinic_id} has slots on {current.time_zone} local time: its "
                    "time zone cannot change under them",
                )
            changed = found(await store.update_clinic(conn, clinic_id, fields), "clinic")
            # Searches show an active clinic's slots only: its cached days go.
            toggled = changed.is_active != current.is_active
            days = await store.coming_slot_days(conn, clinic_id) if toggled else []
            return changed, days

        clinic, days = await in_transaction(self.pool, work, pipeline=False)
        await self.availability.clinic_changed(clinic_id, days)
        return clinic

    async def get_clinic(self, clinic_id: uuid.UUID) -> Clinic:
        clinic = await read(self.pool, store.clinic, "clinic_id", clinic_id)
        return found(clinic, "clinic", clinic_id)

    async def list_clinics(self, active_only: bool, after: store.After, limit: int) -> list[Clinic]:
        return await read(self.pool, store.list_clinics, active_only, after, limit)

    async def create_service(
        self,
        actor: Actor,
        clinic_id: uuid.UUID,
        name: str,
        duration_minutes: int,
        price: Decimal,
        default_capacity: int,
        request_id: str | None,
    ) -> ClinicService:
        actor.require_clinic(clinic_id)
        fields = {
            "clinic_id": clinic_id,
            "name": name,
            "duration_minutes": duration_minutes,
            "price": price,
            "default_capacity": default_capacity,
        }

        async def work(conn: AsyncConnection) -> ClinicService:
            await self._clinic(conn, clinic_id)
            try:
                async with conn.transaction():
                    made = await store.insert_service(
                        conn, clinic_id, name, duration_minutes, price, default_capacity, request_id
                    )
            except errors.UniqueViolation:
                raise AlreadyExists(f"clinic {clinic_id} has a service named {name!r}") from None
            if made is not None:
                return made
            first = await store.service(conn, "request_id", request_id)
            return _retried(first, fields, "a service", request_id)

        return await in_transaction(self.pool, work, pipeline=False)

    async def list_services(
        self, clinic_id: uuid.UUID, active_only: bool, after: store.After, limit: int
    ) -> list[ClinicService]:
        async def query(conn: AsyncConnection) -> list[ClinicService]:
            await self._clinic(conn, clinic_id)
            return await store.list_services(conn, clinic_id, active_only, after, limit)

        return await read(self.pool, query)

    async def create_staff(
        self,
        actor: Actor,
        clinic_id: uuid.UUID,
        full_name: str,
        title: str | None,
        request_id: str | None,
    ) -> Staff:
        actor.require_clinic(clinic_id)
        fields = {"clinic_id": clinic_id, "full_name": full_name, "title": title}

        async def work(conn: AsyncConnection) -> Staff:
            await self._clinic(conn, clinic_id)
            made = await store.insert_staff(conn, clinic_id, full_name, title, request_id)
            if made is not None:
                return made
            first = await store.staff(conn, "request_id", request_id)
            return _retried(first, fields, "a staff member", request_id)

        return await in_transaction(self.pool, work, pipeline=False)

    async def list_staff(
        self, clinic_id: uuid.UUID, active_only: bool, after: store.After, limit: int
    ) -> list[Staff]:
        async def query(conn: AsyncConnection) -> list[Staff]:
            await self._clinic(conn, clinic_id)
            return await store.list_staff(conn, clinic_id, active_only, after, limit)

        return await read(self.pool, query)

    # --- slots ----------------------------------------------------------------------------

    async def create_slot(
        self, actor: Actor, spec: SlotSpec, start: datetime, end: datetime | None
    ) -> Slot:
        actor.require_clinic(spec.clinic_id)
        asked = _asked(spec, start, end)

        async def work(conn: AsyncConnection) -> tuple[Slot, bool]:
            if spec.request_id and (first := await store.slot(conn, "request_id", spec.request_id)):
                return _retried(first, asked, "a slot", spec.request_id), False
            clinic, service = await self._parts(conn, spec)
            finish = end or start + timedelta(minutes=service.duration_minutes)
            if finish - start > MAX_SLOT_LENGTH:
                raise InvalidArgument.field("end_time", "is more than 24 h after start_time")
            day = start.astimezone(ZoneInfo(clinic.time_zone)).date()
            made = await self._insert(
                conn, actor, clinic, service, spec, [PlannedSlot(day, start, finish)]
            )
            if not made:  # a concurrent first attempt with this request_id committed it
                first = await store.slot(conn, "request_id", spec.request_id)
                return _retried(first, asked, "a slot", spec.request_id), False
            return made[0], True

        slot, created = await in_transaction(self.pool, work, pipeline=False)
        if created:
            await self.availability.changed([slot])
        return slot

    async def generate_slots(self, actor: Actor, g: Generation) -> tuple[list[Slot], int]:
        actor.require_clinic(g.spec.clinic_id)
        assert g.spec.request_id is not None
        request_id, fingerprint = g.spec.request_id, g.fingerprint()

        async def work(conn: AsyncConnection) -> tuple[list[Slot], int, bool]:
            if first := await store.batch(conn, request_id):
                return *_same_batch(first, fingerprint, request_id), False
            clinic, service = await self._parts(conn, g.spec)
            zone = ZoneInfo(clinic.time_zone)
            now = datetime.now(UTC)
            if g.first < now.astimezone(zone).date():
                raise InvalidArgument.field(
                    "first_date", f"is before today in the clinic's time zone ({zone.key})"
                )
            minutes = g.slot_minutes or service.duration_minutes
            planned, skipped = schedule.plan(g.first, g.last, g.windows, minutes, zone, now)
            batch_id = await store.insert_batch(
                conn, clinic.id, request_id, fingerprint, skipped, actor.label
            )
            if batch_id is None:  # a concurrent first attempt committed it
                first = found(await store.batch(conn, request_id), "batch", request_id)
                return *_same_batch(first, fingerprint, request_id), False
            spec = replace(g.spec, request_id=None)
            slots = await self._insert(conn, actor, clinic, service, spec, planned, batch_id)
            return slots, skipped, True

        slots, skipped, created = await in_transaction(self.pool, work, pipeline=False)
        if created:
            await self.availability.changed(slots)
        return slots, skipped

    async def set_slot_status(
        self,
        actor: Actor,
        slot_id: uuid.UUID,
        status: SlotStatus,
        expected_version: int,
        reason: str | None,
    ) -> Slot:
        """Staff take a slot out of service or put it back; ABORTED when it changed since
        they read it (optimistic locking on version). Reservations and bookings it holds
        stay: a slot closed for maintenance refuses new ones only."""

        async def work(conn: AsyncConnection) -> Slot:
            current = found(await store.slot(conn, "slot_id", slot_id), "slot", slot_id)
            actor.require_clinic(current.clinic_id)
            changed = await store.set_slot_status(conn, slot_id, status, expected_version)
            if changed is None:
                raise Aborted(
                    f"slot {slot_id} is at version {current.version}, not {expected_version}: "
                    "read it again and retry"
                )
            data = events.slot_changed(changed)
            staged = events.stage(events.SLOT_UPDATED, slot_id, data, actor, reason=reason or "")
            await events.record(conn, [staged])
            return changed

        slot = await in_transaction(self.pool, work, pipeline=False)
        await self.availability.changed([slot])
        return slot

    async def get_slot(self, slot_id: uuid.UUID) -> Slot:
        return found(await read(self.pool, store.slot, "slot_id", slot_id), "slot", slot_id)

    async def search(
        self,
        clinic_id: uuid.UUID,
        service_id: uuid.UUID,
        first: date,
        last: date,
        staff_id: uuid.UUID | None,
    ) -> list[pb.Slot]:
        service = await self._services.get(
            service_id,
            lambda: read(self.pool, store.service, "service_id", service_id),
            usable=lambda found: found is not None,
        )
        if service is None or service.clinic_id != clinic_id:
            raise not_found("service", service_id, within=f"clinic {clinic_id}")
        return await self.availability.search(clinic_id, service_id, first, last, staff_id)

    # --- parts ----------------------------------------------------------------------------

    async def _clinic(self, conn: AsyncConnection, clinic_id: uuid.UUID) -> Clinic:
        return found(await store.clinic(conn, "clinic_id", clinic_id), "clinic", clinic_id)

    async def _parts(self, conn: AsyncConnection, spec: SlotSpec) -> tuple[Clinic, ClinicService]:
        """The clinic and service a slot request names, both active, and its staff member
        (when named) active at that clinic."""
        clinic = await self._clinic(conn, spec.clinic_id)
        require_active("clinic", clinic.id, clinic.is_active, "CLINIC_INACTIVE")
        service = await store.service(conn, "service_id", spec.service_id)
        if service is None or service.clinic_id != clinic.id:
            raise not_found("service", spec.service_id, within=f"clinic {clinic.id}")
        require_active("service", service.id, service.is_active, "SERVICE_INACTIVE")
        if spec.staff_id is not None:
            member = await store.staff(conn, "staff_id", spec.staff_id)
            if member is None or member.clinic_id != clinic.id:
                raise not_found("staff member", spec.staff_id, within=f"clinic {clinic.id}")
            require_active("staff member", member.id, member.is_active, "STAFF_INACTIVE")
        return clinic, service

    async def _insert(
        self,
        conn: AsyncConnection,
        actor: Actor,
        clinic: Clinic,
        service: ClinicService,
        spec: SlotSpec,
        planned: Sequence[PlannedSlot],
        batch_id: uuid.UUID | None = None,
    ) -> list[Slot]:
        """Insert the slots with their SlotCreated events; SLOT_OVERLAP when one overlaps a
        slot of the staff member (the exclusion constraint decides)."""
        capacity = spec.capacity or service.default_capacity
        price = service.price if spec.price is None else spec.price
        try:
            async with conn.transaction():
                slots = await store.insert_slots(
                    conn,
                    service,
                    spec.staff_id,
                    planned,
                    capacity,
                    price,
                    request_id=spec.request_id,
                    batch_id=batch_id,
                    created_by=actor.label,
                )
        except errors.ExclusionViolation:
            assert spec.staff_id is not None
            raise await _overlap(conn, spec.staff_id, planned, ZoneInfo(clinic.time_zone)) from None
        staged = [
            events.stage(events.SLOT_CREATED, s.id, events.slot_changed(s), actor) for s in slots
        ]
        await events.record(conn, staged)
        return slots


async def _overlap(
    conn: AsyncConnection, staff_id: uuid.UUID, planned: Sequence[PlannedSlot], zone: ZoneInfo
) -> FailedPrecondition | Aborted:
    existing = await store.overlapping_slot(conn, staff_id, planned)
    if existing is None:  # the slot it met is gone again
        return Aborted("a concurrent change of this staff member's slots; retry")
    start, end = existing.start_time.astimezone(zone), existing.end_time.astimezone(zone)
    return FailedPrecondition(
        "SLOT_OVERLAP",
        f"staff member {staff_id} already has slot {existing.id} from {start.isoformat()} "
        f"to {end.isoformat()} ({zone.key}), which overlaps the slot asked for",
    )


def _retried(first: T | None, asked: dict[str, object], what: str, key: str | None) -> T:
    """The record a first attempt under request_id `key` made, if it asked the same (the
    caller found it under `key`)."""
    assert first is not None and key is not None
    check_retry(asdict(first), asked, what, key)
    return first


def _asked(spec: SlotSpec, start: datetime, end: datetime | None) -> dict[str, object]:
    """The fields of a CreateSlot request a retry must repeat: those it set."""
    asked: dict[str, object] = {
        "clinic_id": spec.clinic_id,
        "service_id": spec.service_id,
        "staff_id": spec.staff_id,
        "start_time": start,
    }
    for name, value in (("end_time", end), ("capacity", spec.capacity), ("price", spec.price)):
        if value is not None:
            asked[name] = value
    return asked


def _same_batch(
    found: tuple[str, int, list[Slot]], fingerprint: str, key: str
) -> tuple[list[Slot], int]:
    first, skipped, slots = found
    if first != fingerprint:
        raise AlreadyExists(
            f"request_id {key!r} already generated slots from another schedule; "
            "use a new request_id for a new request"
        )
    return slots, skipped
