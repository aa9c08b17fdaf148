"""Records and rules of facility booking, pure: what a facility and a booking are, who may act
on a booking, what a booking may become, and how a refusal reads."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol
from zoneinfo import ZoneInfo

from libs.auth import Role
from libs.errors import FailedPrecondition, PermissionDenied
from services.booking.domain import Actor

STEP = timedelta(minutes=15)
MAX_LENGTH = timedelta(hours=24)
MAX_ATTENDEES = 1000
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class FacilityBookingStatus(StrEnum):
    CONFIRMED = "confirmed"
    PENDING = "pending"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


# Bookings that hold their time (the exclusion constraint's WHERE).
HOLDING = frozenset({FacilityBookingStatus.CONFIRMED, FacilityBookingStatus.PENDING})


class AuditAction(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    CANCELLED = "cancelled"
    ADMIN_CANCELLED = "admin_cancelled"
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True, order=True)
class OpeningWindow:
    """Open on ISO `weekday` (1 = Monday) from `open_minute` to `close_minute` local time
    (minutes after midnight; 1440 = midnight at the end of the day)."""

    weekday: int
    open_minute: int
    close_minute: int

    def label(self) -> str:
        return f"{_clock(self.open_minute)}-{_clock(self.close_minute)}"


@dataclass(frozen=True)
class Facility:
    id: uuid.UUID
    name: str
    location: str | None
    capacity: int
    time_zone: str
    requires_approval: bool
    is_active: bool
    created_at: datetime
    updated_at: datetime
    hours: tuple[OpeningWindow, ...] = ()

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


@dataclass(frozen=True)
class FacilityBooking:
    id: uuid.UUID
    facility_id: uuid.UUID
    user_id: uuid.UUID
    start_time: datetime
    end_time: datetime
    title: str
    description: str | None
    attendee_count: int
    external_meeting_url: str | None
    status: FacilityBookingStatus
    created_by: str
    created_at: datetime
    updated_at: datetime
    request_id: str | None = None
    cancelled_at: datetime | None = None
    cancelled_by: str | None = None
    cancellation_reason: str | None = None
    decided_at: datetime | None = None
    decided_by: str | None = None
    decision_reason: str | None = None
    series_id: uuid.UUID | None = None


@dataclass(frozen=True)
class FacilitySeries:
    """A recurring series as BookFacilitySeries asked for it; `skipped` as stored (JSON)."""

    id: uuid.UUID
    facility_id: uuid.UUID
    user_id: uuid.UUID
    rrule: str
    start_time: datetime
    end_time: datetime
    title: str
    attendee_count: int
    skip_conflicts: bool
    skipped: list[dict[str, str]]
    request_id: str
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class BookingRequest:
    """A checked BookFacility request."""

    facility_id: uuid.UUID
    user_id: uuid.UUID
    start_time: datetime
    end_time: datetime
    title: str
    description: str | None
    attendee_count: int
    external_meeting_url: str | None
    request_id: str | None

    def asked(self) -> dict[str, object]:
        """What a retry under the same request_id must repeat."""
        return {
            "facility_id": self.facility_id,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "title": self.title,
            "attendee_count": self.attendee_count,
        }


@dataclass(frozen=True)
class SeriesRequest:
    """A checked BookFacilitySeries request: `first` (its request_id set) and the rule."""

    first: BookingRequest
    rrule: str
    skip_conflicts: bool
    latest: datetime  # no occurrence may start later

    def asked(self) -> dict[str, object]:
        """What a retry under the same request_id must repeat."""
        return {**self.first.asked(), "rrule": self.rrule, "skip_conflicts": self.skip_conflicts}


@dataclass(frozen=True)
class UpdateRequest:
    """A checked UpdateFacilityBooking request: the new range, and the new attendee count
    (None: unchanged)."""

    booking_id: uuid.UUID
    user_id: uuid.UUID | None
    start_time: datetime
    end_time: datetime
    attendee_count: int | None


@dataclass(frozen=True)
class RequestContext:
    """Where a change came from, for the audit log."""

    request_id: str | None
    ip_address: str | None
    user_agent: str | None


# --- who may act ------------------------------------------------------------------------


def is_staff(actor: Actor) -> bool:
    """Facility staff: admins and operators (facilities belong to no clinic)."""
    return actor.role in (Role.ADMIN, Role.OPERATOR)


class Owned(Protocol):
    @property
    def id(self) -> uuid.UUID: ...

    @property
    def user_id(self) -> uuid.UUID: ...


def require_party(
    actor: Actor, owned: Owned, asked_for: uuid.UUID | None, what: str = "facility booking"
) -> None:
    """PermissionDenied unless the actor may act on `owned` (a booking or a series): staff
    may act on any (naming its user when they name one); a user only on their own."""
    if asked_for is not None and asked_for != owned.user_id:
        raise PermissionDenied(f"{what} {owned.id} is not the named user's")
    if not is_staff(actor) and str(owned.user_id) != actor.subject:
        raise PermissionDenied(f"{what} {owned.id} is another user's")


# --- rules ------------------------------------------------------------------------------


def initial_status(facility: Facility, actor: Actor) -> FacilityBookingStatus:
    """Pending where the facility needs approval and a user booked; confirmed otherwise."""
    if facility.requires_approval and not is_staff(actor):
        return FacilityBookingStatus.PENDING
    return FacilityBookingStatus.CONFIRMED


def check_bookable(facility: Facility, attendees: int) -> None:
    if not facility.is_active:
        raise FailedPrecondition(
            "FACILITY_INACTIVE", f"facility {facility.id} is not active: it takes no bookings"
        )
    if attendees > facility.capacity:
        raise FailedPrecondition(
            "OVER_CAPACITY",
            f"{attendees} attendees exceed facility {facility.id}'s capacity of "
            f"{facility.capacity}",
        )


def check_cancellable(booking: FacilityBooking, now: datetime) -> bool:
    """Whether cancelling changes anything (False: cancelled already); refusals raise."""
    if booking.status is FacilityBookingStatus.CANCELLED:
        return False
    if booking.status is FacilityBookingStatus.REJECTED:
        raise FailedPrecondition(
            "BOOKING_NOT_CANCELLABLE", f"facility booking {booking.id} was rejected"
        )
    _refuse_ended(booking, now)
    return True


def check_updatable(booking: FacilityBooking, now: datetime) -> None:
    """Only a booking that holds its time and has not started yet can be moved or resized."""
    if booking.status not in HOLDING:
        raise FailedPrecondition(
            "BOOKING_NOT_UPDATABLE",
            f"facility booking {booking.id} is {booking.status}: only a confirmed or pending "
            "one can be moved or resized",
        )
    _refuse_ended(booking, now)
    if booking.start_time <= now:
        raise FailedPrecondition(
            "BOOKING_STARTED",
            f"facility booking {booking.id} started at {booking.start_time.isoformat()}: it "
            "can no longer be moved or resized",
        )


def _refuse_ended(booking: FacilityBooking, now: datetime) -> None:
    if booking.end_time <= now:
        raise FailedPrecondition(
            "BOOKING_ENDED",
            f"facility booking {booking.id} ended at {booking.end_time.isoformat()}",
        )


def check_decidable(booking: FacilityBooking, to: FacilityBookingStatus, now: datetime) -> bool:
    """Whether approving (to CONFIRMED) or rejecting changes anything (False: a retry that
    finds the booking where it asked for); BOOKING_NOT_PENDING otherwise, and BOOKING_ENDED
    for approving a booking whose time is over (rejecting it is still allowed)."""
    if booking.status is to:
        return False
    if booking.status is not FacilityBookingStatus.PENDING:
        raise FailedPrecondition(
            "BOOKING_NOT_PENDING",
            f"facility booking {booking.id} is {booking.status}: only a pending one can be "
            "approved or rejected",
        )
    if to is FacilityBookingStatus.CONFIRMED:
        _refuse_ended(booking, now)
    return True


def closed_refusal(
    facility: Facility, start: datetime, end: datetime, windows: list[OpeningWindow]
) -> FailedPrecondition:
    """FACILITY_CLOSED naming the hours of the local day(s) the asked range touches."""
    zone = facility.zone
    first, last = start.astimezone(zone), (end - timedelta(microseconds=1)).astimezone(zone)
    days = sorted({first.isoweekday(), last.isoweekday()})
    hours = "; ".join(
        f"{DAY_NAMES[day - 1]} "
        + (", ".join(w.label() for w in windows if w.weekday == day) or "closed")
        for day in days
    )
    return FailedPrecondition(
        "FACILITY_CLOSED",
        f"facility {facility.id} is not open from {_local(start, zone)} to {_local(end, zone)}: "
        f"opening hours {hours} ({zone.key})",
    )


def conflict_refusal(facility: Facility, start: datetime, end: datetime) -> FailedPrecondition:
    """TIME_CONFLICT naming the conflicting booking's local time range (never its owner)."""
    zone = facility.zone
    return FailedPrecondition(
        "TIME_CONFLICT",
        f"facility {facility.id} is booked from {_local(start, zone)} to {_local(end, zone)} "
        f"({zone.key}), which overlaps the time asked for",
    )


def snapshot(booking: FacilityBooking) -> dict[str, object]:
    """The booking as the audit log's JSON keeps it."""
    return {
        "facility_id": str(booking.facility_id),
        "user_id": str(booking.user_id),
        "start_time": booking.start_time.isoformat(),
        "end_time": booking.end_time.isoformat(),
        "title": booking.title,
        "description": booking.description,
        "attendee_count": booking.attendee_count,
        "external_meeting_url": booking.external_meeting_url,
        "status": str(booking.status),
        "cancellation_reason": booking.cancellation_reason,
        "decision_reason": booking.decision_reason,
    }


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _local(value: datetime, zone: ZoneInfo) -> str:
    return value.astimezone(zone).isoformat(timespec="minutes")
