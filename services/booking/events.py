"""The booking service's domain events: one row of the event store each (seed 001 §4.3), and
for those other services act on, an outbox row with the same id (routing key booking.*).
Both are written in the transaction of the change they record."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from tiket.events.v1 import booking_pb2 as events_pb2

from libs import tracing
from libs.events.outbox import EVENT_VALUES, OUTBOX_COLUMNS, staged_event
from libs.money import to_money
from libs.timestamps import to_timestamp
from services.booking import store
from services.booking.domain import Actor, Booking, Clinic, ClinicService, Reservation, Slot

SOURCE = "/tiket/booking"
STORE_COLUMNS = "event_id, aggregate_id, aggregate_type, event_type, payload, metadata"
STORE_VALUES = (
    "%(es_event_id)s, %(es_aggregate_id)s, %(es_aggregate_type)s, %(es_event_type)s, "
    "%(es_payload)s, %(es_metadata)s"
)


@dataclass(frozen=True)
class Kind:
    """An event type: its name in the event store, its routing key on the bus (None: kept
    in the store only), and the kind of aggregate it belongs to."""

    name: str
    bus: str | None
    aggregate: str


# On the bus go the events a rider is told of (notification) and analytics counts
# (ARCHITECTURE.md "Events"); the steps in between stay in the event store: a rider hears
# "confirmed" once paid, not of every hold and draft, and of the refund with the
# cancellation (its event carries the amount).
SLOT_CREATED = Kind("SlotCreated", None, "slot")
SLOT_UPDATED = Kind("SlotUpdated", None, "slot")
RESERVATION_CREATED = Kind("ReservationCreated", None, "reservation")
RESERVATION_EXPIRED = Kind("ReservationExpired", "booking.reservation_expired", "reservation")
RESERVATION_CANCELLED = Kind("ReservationCancelled", None, "reservation")
RESERVATION_CONFIRMED = Kind("ReservationConfirmed", None, "reservation")
BOOKING_CREATED = Kind("BookingCreated", None, "booking")
BOOKING_PAID = Kind("BookingPaid", "booking.paid", "booking")
BOOKING_CONFIRMED = Kind("BookingConfirmed", "booking.confirmed", "booking")
BOOKING_CANCELLED = Kind("BookingCancelled", "booking.cancelled", "booking")
BOOKING_RESCHEDULED = Kind("BookingRescheduled", "booking.rescheduled", "booking")
BOOKING_NO_SHOW = Kind("BookingNoShow", "booking.no_show", "booking")
# Seed 001: a reminder 24 hours before the visit.
BOOKING_REMINDER = Kind("BookingReminder", "booking.reminder", "booking")
BOOKING_STARTED = Kind("BookingStarted", None, "booking")
BOOKING_COMPLETED = Kind("BookingCompleted", None, "booking")
BOOKING_REFUNDED = Kind("BookingRefunded", None, "booking")


def stage(
    kind: Kind, aggregate_id: uuid.UUID, data: Message, actor: Actor, **notes: str
) -> dict[str, Any]:
    """The named parameters of STORE_VALUES, plus EVENT_VALUES' when `kind` goes on the bus.
    Call inside the unit of work that writes it (the relays are woken after its commit)."""
    if kind.bus is not None:
        params = staged_event(SOURCE, kind.bus, str(aggregate_id), data)
        event_id, payload = params["event_id"], params["event"].data
    else:
        params = {}
        event_id, payload = str(uuid.uuid4()), json_format.MessageToDict(data)
    metadata = {"actor": actor.label, "source": SOURCE, **notes}
    if kind.bus is not None:
        metadata["routingKey"] = kind.bus
    if request_id := tracing.current_request_id():
        metadata["requestId"] = request_id
    if traceparent := tracing.current_traceparent():
        metadata["traceparent"] = traceparent
    params.update(
        es_event_id=event_id,
        es_aggregate_id=aggregate_id,
        es_aggregate_type=kind.aggregate,
        es_event_type=kind.name,
        es_payload=Jsonb(payload),
        es_metadata=Jsonb(metadata),
    )
    return params


async def announce(
    conn: AsyncConnection,
    booking: Booking,
    kinds: Sequence[Kind],
    actor: Actor | None = None,
    **extra: Any,
) -> None:
    """Record `kinds` of events of a booking change, on the caller's transaction."""
    clinic = await store.clinic(conn, "clinic_id", booking.clinic_id)
    service = await store.service(conn, "service_id", booking.service_id)
    assert clinic is not None and service is not None  # foreign keys
    data = booking_changed(booking, clinic, service, **extra)
    who = actor or Actor.of(None)
    await record(conn, [stage(kind, booking.id, data, who) for kind in kinds])


async def record(conn: AsyncConnection, staged: Sequence[dict[str, Any]]) -> None:
    """Write staged events (stage()) on the caller's transaction."""
    if not staged:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            f"INSERT INTO event_store ({STORE_COLUMNS}) VALUES ({STORE_VALUES})", staged
        )
        on_bus = [params for params in staged if "event_id" in params]
        if on_bus:
            await cur.executemany(
                f"INSERT INTO outbox ({OUTBOX_COLUMNS}) VALUES ({EVENT_VALUES})", on_bus
            )


# --- payloads ---------------------------------------------------------------------------


def slot_changed(slot: Slot) -> events_pb2.SlotChanged:
    return events_pb2.SlotChanged(
        slot_id=str(slot.id),
        clinic_id=str(slot.clinic_id),
        service_id=str(slot.service_id),
        staff_id=str(slot.staff_id or ""),
        date=slot.day.isoformat(),
        start_time=to_timestamp(slot.start_time),
        end_time=to_timestamp(slot.end_time),
        status=slot.status,
        capacity=slot.capacity,
        remaining=slot.remaining,
        price=to_money(slot.price),
        version=slot.version,
    )


def reservation_changed(
    reservation: Reservation,
    slot: Slot,
    remaining: int | None = None,
    *,
    retaken: bool = False,
    told: tuple[Clinic, ClinicService] | None = None,
) -> events_pb2.ReservationChanged:
    """`remaining`: the slot's places after the change, when not slot.remaining (a statement
    that takes or gives back the place puts it in). `told`: the clinic and service, for an
    event the rider is told of (what, where, on which clock)."""
    clinic, service = told or (None, None)
    return events_pb2.ReservationChanged(
        reservation_id=str(reservation.id),
        user_id=str(reservation.user_id),
        pet_id=str(reservation.pet_id),
        slot_id=str(reservation.slot_id),
        clinic_id=str(reservation.clinic_id),
        service_id=str(reservation.service_id),
        status=reservation.status,
        slot_start=to_timestamp(slot.start_time),
        expires_at=to_timestamp(reservation.expires_at),
        slot_remaining=slot.remaining if remaining is None else remaining,
        booking_id=str(reservation.booking_id or ""),
        retaken=retaken,
        clinic_name=clinic.name if clinic else "",
        service_name=service.name if service else "",
        time_zone=clinic.time_zone if clinic else "",
    )


def booking_changed(
    booking: Booking,
    clinic: Clinic,
    service: ClinicService,
    *,
    refund_amount: Decimal | None = None,
    refund_percent: int = 0,
    reason: str = "",
    previous_slot_id: str = "",
    previous_slot_start: datetime | None = None,
) -> events_pb2.BookingChanged:
    """The booking as its events carry it; the keyword fields only where the change has
    them (a cancellation's refund, a reschedule's previous slot)."""
    data = events_pb2.BookingChanged(
        booking_id=str(booking.id),
        user_id=str(booking.user_id),
        pet_id=str(booking.pet_id),
        reservation_id=str(booking.reservation_id or ""),
        clinic_id=str(booking.clinic_id),
        clinic_name=clinic.name,
        service_id=str(booking.service_id),
        service_name=service.name,
        slot_id=str(booking.slot_id),
        staff_id=str(booking.staff_id or ""),
        status=booking.status,
        payment_status=booking.payment_status,
        slot_start=to_timestamp(booking.slot_start),
        slot_end=to_timestamp(booking.slot_end),
        amount=to_money(booking.final_amount),
        total_amount=to_money(booking.total_amount),
        discount_amount=to_money(booking.discount_amount),
        time_zone=clinic.time_zone,
        refund_percent=refund_percent,
        reason=reason,
        previous_slot_id=previous_slot_id,
    )
    if refund_amount is not None:
        data.refund_amount.CopyFrom(to_money(refund_amount))
    if previous_slot_start is not None:
        data.previous_slot_start.CopyFrom(to_timestamp(previous_slot_start))
    return data
