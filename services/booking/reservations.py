"""Use cases of reservations and the bookings they become: the place of a slot is taken by
one statement (ReserveSlot's hot path) or under the reservation's row lock (release,
confirm, expiry), always with its events; the slot cache is invalidated after the commit."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool

from libs.auth import Role
from libs.cache import LocalCache
from libs.db.transaction import in_statement, in_transaction, read
from libs.errors import Aborted, FailedPrecondition, PermissionDenied, found
from services.booking import booking_store as bs
from services.booking import domain, events, store
from services.booking import reservation_store as rs
from services.booking.availability import Availability
from services.booking.config import BookingConfig
from services.booking.domain import (
    Actor,
    Booking,
    Clinic,
    ClinicService,
    ConfirmPath,
    Reservation,
    ReservationStatus,
    Slot,
)
from services.booking.users import Users

# What the sweeper writes as who expired a reservation.
SWEEPER = Actor(Role.SERVICE, "booking")
# A slot's clinic, service, day and times never change: ReserveSlot reads them from here.
SLOT_FACTS_TTL = 300.0
SLOT_FACTS_KEPT = 100_000


class ReservationApp:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        availability: Availability,
        users: Users,
        config: BookingConfig,
    ) -> None:
        self.pool = pool
        self.availability = availability
        self.users = users
        self.config = config
        self._slots: LocalCache[uuid.UUID, Slot | None] = LocalCache(
            SLOT_FACTS_TTL, SLOT_FACTS_KEPT
        )

    # --- reserve, release -----------------------------------------------------------------

    async def reserve(
        self,
        actor: Actor,
        slot_id: uuid.UUID,
        user_id: uuid.UUID,
        pet_id: uuid.UUID,
        request_id: str | None,
    ) -> Reservation:
        facts = await self._slot_facts(slot_id)
        if actor.role is Role.OPERATOR:
            actor.require_clinic(facts.clinic_id)
        now = datetime.now(UTC)
        reservation = Reservation(
            id=uuid.uuid4(),
            user_id=user_id,
            pet_id=pet_id,
            slot_id=slot_id,
            clinic_id=facts.clinic_id,
            service_id=facts.service_id,
            status=ReservationStatus.PENDING,
            request_id=request_id,
            lock_token=domain.new_lock_token(),
            expires_at=now + self.config.reservation_ttl,
            created_at=now,
            updated_at=now,
        )

        async def take(conn: AsyncConnection) -> Reservation | str | None:
            data = events.reservation_changed(reservation, facts)
            event = events.stage(events.RESERVATION_CREATED, reservation.id, data, actor)
            try:
                return await rs.reserve(conn, reservation, event)
            except errors.UniqueViolation as exc:
                return exc.diag.constraint_name or ""

        for _ in range(2):  # once more when a place came back between take and diagnosis
            taken = await in_statement(self.pool, take)
            if isinstance(taken, Reservation):
                await self.availability.changed([facts])
                return taken
            if request_id and taken in (None, rs.SAME_REQUEST):
                first = await read(self.pool, rs.reservation_of_request, user_id, request_id)
                if first is not None:
                    domain.same_retry(
                        {"slot_id": first.slot_id, "pet_id": first.pet_id},
                        {"slot_id": slot_id, "pet_id": pet_id},
                        "a reservation",
                        request_id,
                    )
                    return first
            if taken == rs.SAME_SLOT:
                raise FailedPrecondition(
                    "ALREADY_RESERVED", f"user {user_id} already holds a place of slot {slot_id}"
                )
            refusal = await read(self.pool, rs.take_refusal, slot_id, datetime.now(UTC))
            if refusal is not None:
                raise refusal
        raise Aborted(f"the places of slot {slot_id} kept changing; retry")

    async def get(
        self, actor: Actor, reservation_id: uuid.UUID, user_id: uuid.UUID | None
    ) -> Reservation:
        found = await read(self.pool, rs.reservation, reservation_id)
        return self._party(actor, found, reservation_id, user_id)

    async def release(
        self, actor: Actor, reservation_id: uuid.UUID, user_id: uuid.UUID | None, token: str
    ) -> Reservation:
        async def work(conn: AsyncConnection) -> tuple[Reservation, Slot | None]:
            locked = await rs.reservation(conn, reservation_id, lock=True)
            reservation = self._party(actor, locked, reservation_id, user_id)
            domain.check_lock_token(reservation, token)
            if reservation.status is ReservationStatus.CONFIRMED:
                raise FailedPrecondition(
                    "RESERVATION_CONFIRMED",
                    f"reservation {reservation_id} is booking {reservation.booking_id}: "
                    "cancel the booking instead",
                )
            if reservation.status is not ReservationStatus.PENDING:
                return reservation, None  # released or expired already: its place is back
            released = await rs.set_reservation_status(
                conn, reservation_id, ReservationStatus.CANCELLED
            )
            [slot] = await rs.give_back(conn, [reservation.slot_id])
            data = events.reservation_changed(released, slot)
            staged = events.stage(events.RESERVATION_CANCELLED, released.id, data, actor)
            await events.record(conn, [staged])
            return released, slot

        released, slot = await in_transaction(self.pool, work, pipeline=False)
        if slot is not None:
            await self.availability.changed([slot])
        return released

    async def expire_due(self) -> int:
        """Expire one batch of reservations past their time, giving their places back;
        how many. Safe on every replica at once (SKIP LOCKED)."""

        async def work(conn: AsyncConnection) -> tuple[int, list[Slot]]:
            expired = await rs.expire_due(conn, self.config.sweep_batch)
            if not expired:
                return 0, []
            slots = {s.id: s for s in await rs.give_back(conn, [r.slot_id for r in expired])}
            told = await _clinic_services(conn, expired)
            staged = [
                events.stage(
                    events.RESERVATION_EXPIRED,
                    r.id,
                    events.reservation_changed(r, slots[r.slot_id], told=told[r.service_id]),
                    SWEEPER,
                )
                for r in expired
            ]
            await events.record(conn, staged)
            return len(expired), list(slots.values())

        count, slots = await in_transaction(self.pool, work, pipeline=False)
        await self.availability.changed(slots)
        return count

    # --- confirm --------------------------------------------------------------------------

    async def confirm(
        self,
        actor: Actor,
        reservation_id: uuid.UUID,
        user_id: uuid.UUID | None,
        token: str,
        notes: str | None,
        discount: Decimal,
    ) -> Booking:
        seen = self._party(
            actor, await read(self.pool, rs.reservation, reservation_id), reservation_id, user_id
        )
        domain.check_lock_token(seen, token)
        if discount and not actor.is_staff:
            raise PermissionDenied("only clinic staff may grant a discount")
        if domain.confirm_path(seen) is ConfirmPath.DONE and seen.booking_id is not None:
            return await self.booking(actor, seen.booking_id, user_id)
        # Asked before any lock is taken: the user service may take its full second.
        await self.users.require_pet_owned(seen.user_id, seen.pet_id)

        async def work(conn: AsyncConnection) -> tuple[Booking, Slot | None]:
            await bs.set_actor(conn, actor.label, "reservation_confirmed")
            locked = await rs.reservation(conn, reservation_id, lock=True)
            reservation = found(locked, "reservation", reservation_id)
            path = domain.confirm_path(reservation)
            if path is ConfirmPath.DONE:
                booking = await bs.booking(conn, "reservation_id", reservation_id)
                return found(booking, "booking of reservation", reservation_id), None
            now = datetime.now(UTC)
            if path is ConfirmPath.RETAKE:
                slot = await rs.take_place(conn, reservation.slot_id)
                if slot is None:
                    refusal = await rs.take_refusal(conn, reservation.slot_id, now)
                    raise domain.retake_refused(reservation, refusal)
            else:
                slot = await store.slot(conn, "slot_id", reservation.slot_id)
                slot = found(slot, "slot", reservation.slot_id)
                if refused := domain.started_refusal(slot, now):
                    raise refused  # the place stays held until the sweeper gives it back
            amounts = domain.booking_amounts(slot.price, discount)
            booking = await bs.insert_booking(conn, reservation, slot, amounts, notes)
            confirmed = await rs.set_reservation_status(
                conn, reservation_id, ReservationStatus.CONFIRMED
            )
            clinic = await store.clinic(conn, "clinic_id", slot.clinic_id)
            service = await store.service(conn, "service_id", slot.service_id)
            retaken = path is ConfirmPath.RETAKE
            confirmed_data = events.reservation_changed(
                replace(confirmed, booking_id=booking.id), slot, retaken=retaken
            )
            booking_data = events.booking_changed(
                booking, found(clinic, "clinic"), found(service, "service")
            )
            await events.record(
                conn,
                [
                    events.stage(
                        events.RESERVATION_CONFIRMED, reservation_id, confirmed_data, actor
                    ),
                    events.stage(events.BOOKING_CREATED, booking.id, booking_data, actor),
                ],
            )
            return booking, slot if retaken else None

        booking, retaken = await in_transaction(self.pool, work, pipeline=False)
        if retaken is not None:
            await self.availability.changed([retaken])
        return booking

    async def booking(
        self, actor: Actor, booking_id: uuid.UUID, user_id: uuid.UUID | None
    ) -> Booking:
        record = ("booking", booking_id)
        booking = found(await read(self.pool, bs.booking, "booking_id", booking_id), *record)
        actor.require_party(record, booking.user_id, booking.clinic_id, user_id)
        return booking

    # --- parts ----------------------------------------------------------------------------

    async def _slot_facts(self, slot_id: uuid.UUID) -> Slot:
        """The slot as first read: its clinic, service, day and times (never changed) are
        what ReserveSlot uses; its places and status are the database's to decide."""
        facts = await self._slots.get(
            slot_id,
            lambda: read(self.pool, store.slot, "slot_id", slot_id),
            usable=lambda found: found is not None,
        )
        return found(facts, "slot", slot_id)

    @staticmethod
    def _party(
        actor: Actor,
        seen: Reservation | None,
        reservation_id: uuid.UUID,
        user_id: uuid.UUID | None,
    ) -> Reservation:
        record = ("reservation", reservation_id)
        reservation = found(seen, *record)
        actor.require_party(record, reservation.user_id, reservation.clinic_id, user_id)
        return reservation


async def _clinic_services(
    conn: AsyncConnection, reservations: list[Reservation]
) -> dict[uuid.UUID, tuple[Clinic, ClinicService]]:
    """The clinic and service of each reservation's service (a batch shares a few)."""
    told: dict[uuid.UUID, tuple[Clinic, ClinicService]] = {}
    for r in reservations:
        if r.service_id not in told:
            clinic = found(await store.clinic(conn, "clinic_id", r.clinic_id), "clinic")
            service = found(await store.service(conn, "service_id", r.service_id), "service")
            told[r.service_id] = (clinic, service)
    return told
