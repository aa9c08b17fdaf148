"""The steps every change of a facility booking shares, on the caller's connection and inside
its unit of work: whether a facility can take a range, making a booking (BOOK: the row, its
audit row and its event in one statement), cancelling one, the event announcing a change, and
the refusal naming a conflicting booking."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from psycopg import AsyncConnection
from tiket.events.v1 import facility_pb2 as events_pb2

from libs.errors import Aborted, FailedPrecondition
from libs.timestamps import to_timestamp
from services.booking import events
from services.booking.domain import Actor
from services.booking.facilities import availability, store
from services.booking.facilities.domain import (
    AuditAction,
    BookingRequest,
    Facility,
    FacilityBooking,
    FacilityBookingStatus,
    RequestContext,
    check_bookable,
    closed_refusal,
    conflict_refusal,
    initial_status,
    is_staff,
    snapshot,
)

AGGREGATE = "facility_booking"
CREATED = events.Kind("FacilityBookingCreated", "facility.booking_created", AGGREGATE)
CANCELLED = events.Kind("FacilityBookingCancelled", "facility.booking_cancelled", AGGREGATE)
APPROVED = events.Kind("FacilityBookingApproved", "facility.booking_approved", AGGREGATE)
REJECTED = events.Kind("FacilityBookingRejected", "facility.booking_rejected", AGGREGATE)
UPDATED = events.Kind("FacilityBookingUpdated", "facility.booking_updated", AGGREGATE)


def refusal(
    facility: Facility, attendees: int, start: datetime, end: datetime
) -> FailedPrecondition | None:
    """Why `facility` cannot take [start, end) for `attendees` (inactive, over capacity,
    closed); None when it can, overlaps aside."""
    try:
        check_bookable(facility, attendees)
    except FailedPrecondition as refused:
        return refused
    if not availability.is_open(facility.hours, facility.zone, start, end):
        return closed_refusal(facility, start, end, list(facility.hours))
    return None


def draft(
    asked: BookingRequest, facility: Facility, actor: Actor, series_id: uuid.UUID | None = None
) -> FacilityBooking:
    """The booking `asked` would make, with a new id, as BOOK is to write it."""
    now = datetime.now(UTC)
    return FacilityBooking(
        id=uuid.uuid4(),
        facility_id=facility.id,
        user_id=asked.user_id,
        start_time=asked.start_time,
        end_time=asked.end_time,
        title=asked.title,
        description=asked.description,
        attendee_count=asked.attendee_count,
        external_meeting_url=asked.external_meeting_url,
        status=initial_status(facility, actor),
        created_by=actor.label,
        created_at=now,
        updated_at=now,
        request_id=asked.request_id,
        series_id=series_id,
    )


async def create(
    conn: AsyncConnection,
    booking: FacilityBooking,
    facility: Facility,
    actor: Actor,
    context: RequestContext,
) -> FacilityBooking | FailedPrecondition | None:
    """BOOK `booking` (a draft) with its audit row `created` and facility.booking_created, as
    long as `facility` is current: the booking made (its id) or the one its request_id made
    before; TIME_CONFLICT naming the booking that holds the range; None when it is not known
    why nothing was written (the facility changed, or a concurrent request won)."""
    audit = store.audit_params(
        booking.id, AuditAction.CREATED, None, snapshot(booking), actor.label, context
    )
    event = events.stage(CREATED, booking.id, event_data(booking, facility, actor), actor)
    found = await store.book(conn, booking, facility.updated_at, audit, event)
    if found is None or found.id == booking.id or _same_request(found, booking):
        return found
    return conflict_refusal(facility, found.start_time, found.end_time)


def _same_request(found: FacilityBooking, booking: FacilityBooking) -> bool:
    return booking.request_id is not None and (found.user_id, found.request_id) == (
        booking.user_id,
        booking.request_id,
    )


async def cancel(
    conn: AsyncConnection,
    actor: Actor,
    booking: FacilityBooking,
    facility: Facility,
    reason: str | None,
    context: RequestContext,
) -> FacilityBooking:
    """Cancel `booking` (locked by the caller, cancellable) by its user (cancelled) or staff
    (admin_cancelled), with its audit row and facility.booking_cancelled."""
    staff = is_staff(actor) and str(booking.user_id) != actor.subject
    action = AuditAction.ADMIN_CANCELLED if staff else AuditAction.CANCELLED
    changed = await store.set_status(
        conn, booking.id, FacilityBookingStatus.CANCELLED, actor.label, reason
    )
    await store.audit(
        conn, booking.id, action, snapshot(booking), snapshot(changed), actor.label, context
    )
    await announce(conn, CANCELLED, changed, facility, actor, reason or "")
    return changed


async def conflict(
    conn: AsyncConnection,
    facility: Facility,
    start: datetime,
    end: datetime,
    *,
    besides: uuid.UUID | None = None,
) -> FailedPrecondition | None:
    """TIME_CONFLICT naming the first booking (other than `besides`) that holds time in
    [start, end); None when none does (any more)."""
    busy = await store.holding(conn, facility.id, start, end, besides=besides)
    return conflict_refusal(facility, *busy[0]) if busy else None


def race() -> Aborted:
    """A conflict that was gone again when it was looked for."""
    return Aborted("a concurrent change of this facility's bookings; retry")


async def announce(
    conn: AsyncConnection,
    kind: events.Kind,
    booking: FacilityBooking,
    facility: Facility,
    actor: Actor,
    reason: str = "",
    *,
    previous: FacilityBooking | None = None,
) -> None:
    data = event_data(booking, facility, actor, reason)
    if previous is not None:
        data.previous_start_time.CopyFrom(to_timestamp(previous.start_time))
        data.previous_end_time.CopyFrom(to_timestamp(previous.end_time))
    await events.record(conn, [events.stage(kind, booking.id, data, actor)])


def event_data(
    booking: FacilityBooking, facility: Facility, actor: Actor, reason: str = ""
) -> events_pb2.FacilityBookingChanged:
    return events_pb2.FacilityBookingChanged(
        booking_id=str(booking.id),
        facility_id=str(facility.id),
        facility_name=facility.name,
        facility_location=facility.location or "",
        user_id=str(booking.user_id),
        start_time=to_timestamp(booking.start_time),
        end_time=to_timestamp(booking.end_time),
        time_zone=facility.time_zone,
        status=booking.status,
        title=booking.title,
        attendee_count=booking.attendee_count,
        created_by=booking.created_by,
        changed_by=actor.label,
        reason=reason,
    )
