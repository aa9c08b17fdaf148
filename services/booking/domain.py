"""Records and rules of the booking service, pure: who may act on which clinic, what a
reservation may become, what a booking costs."""

from __future__ import annotations

import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from libs.auth import Principal, Role
from libs.errors import AlreadyExists, FailedPrecondition, PermissionDenied, not_found

# Seed 001 §4.1.2 and 2.1.3: a reservation holds its place for 10 minutes.
RESERVATION_MINUTES = 10
# "clinic:<clinic uuid>:<staff handle>" (booking.proto says why).
OPERATOR_SUBJECT = re.compile(r"clinic:([0-9a-f-]{36}):[A-Za-z0-9._-]{1,20}")


class SlotStatus(StrEnum):
    AVAILABLE = "available"
    BOOKED = "booked"
    UNAVAILABLE = "unavailable"
    MAINTENANCE = "maintenance"


class ReservationStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class BookingStatus(StrEnum):
    PENDING_PAYMENT = "pending_payment"
    CONFIRMED = "confirmed"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    RESCHEDULED = "rescheduled"
    NO_SHOW = "no_show"


class PaymentStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    REFUNDED = "refunded"
    PARTIALLY_REFUNDED = "partially_refunded"
    FAILED = "failed"


# Bookings that keep the place of their slot (the others gave it back).
PLACE_HOLDING = frozenset(
    {
        BookingStatus.PENDING_PAYMENT,
        BookingStatus.CONFIRMED,
        BookingStatus.IN_PROGRESS,
        BookingStatus.COMPLETED,
        BookingStatus.NO_SHOW,
    }
)


@dataclass(frozen=True)
class Clinic:
    id: uuid.UUID
    name: str
    address: str | None
    time_zone: str
    is_active: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ClinicService:
    id: uuid.UUID
    clinic_id: uuid.UUID
    name: str
    duration_minutes: int
    price: Decimal
    default_capacity: int
    is_active: bool
    created_at: datetime


@dataclass(frozen=True)
class Staff:
    id: uuid.UUID
    clinic_id: uuid.UUID
    full_name: str
    title: str | None
    is_active: bool
    created_at: datetime


@dataclass(frozen=True)
class Slot:
    id: uuid.UUID
    clinic_id: uuid.UUID
    service_id: uuid.UUID
    staff_id: uuid.UUID | None
    # The clinic's local date of start_time (the column `date`).
    day: date
    start_time: datetime
    end_time: datetime
    status: SlotStatus
    capacity: int
    remaining: int
    price: Decimal
    version: int
    created_at: datetime
    updated_at: datetime

    @property
    def bookable(self) -> bool:
        return self.status is SlotStatus.AVAILABLE and self.remaining > 0


@dataclass(frozen=True)
class Reservation:
    id: uuid.UUID
    user_id: uuid.UUID
    pet_id: uuid.UUID
    slot_id: uuid.UUID
    clinic_id: uuid.UUID
    service_id: uuid.UUID
    status: ReservationStatus
    request_id: str | None
    lock_token: str
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
    booking_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Booking:
    id: uuid.UUID
    reservation_id: uuid.UUID | None
    user_id: uuid.UUID
    pet_id: uuid.UUID
    clinic_id: uuid.UUID
    service_id: uuid.UUID
    slot_id: uuid.UUID
    staff_id: uuid.UUID | None
    status: BookingStatus
    payment_status: PaymentStatus
    total_amount: Decimal
    discount_amount: Decimal
    final_amount: Decimal
    notes: str | None
    slot_start: datetime
    slot_end: datetime
    created_at: datetime
    updated_at: datetime
    version: int
    cancelled_at: datetime | None = None
    completed_at: datetime | None = None
    cancellation_reason: str | None = None
    cancellation_notes: str | None = None
    payment_id: uuid.UUID | None = None
    qr_payload: str | None = None

    @property
    def reference(self) -> str:
        """What the wallet's charges and refunds of this booking name."""
        return f"booking-{self.id}"


class PaymentMethod(StrEnum):
    WALLET = "wallet"
    GATEWAY = "gateway"
    REFUND = "refund"


class Provider(StrEnum):
    WALLET = "wallet"
    MIDTRANS = "midtrans"


class PaymentRecordStatus(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    REFUNDED = "refunded"
    PARTIALLY_REFUNDED = "partially_refunded"


@dataclass(frozen=True)
class Payment:
    """A row of payment_records: a payment of a booking, or a refund of one (refund_of)."""

    id: uuid.UUID
    booking_id: uuid.UUID
    user_id: uuid.UUID
    amount: Decimal
    method: PaymentMethod
    provider: Provider
    status: PaymentRecordStatus
    idempotency_key: str | None
    created_at: datetime
    updated_at: datetime
    provider_payment_id: str | None = None
    payment_url: str | None = None
    expiry_time: datetime | None = None
    paid_at: datetime | None = None
    refunded_at: datetime | None = None
    refund_amount: Decimal | None = None
    fee: Decimal | None = None
    refund_of: uuid.UUID | None = None

    @property
    def is_refund(self) -> bool:
        return self.method is PaymentMethod.REFUND


# --- who may act ------------------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    """The caller of a use case: `clinic_id` is the clinic an operator manages (None for an
    operator token naming none, and for every other role)."""

    role: Role
    subject: str
    clinic_id: uuid.UUID | None = None

    @classmethod
    def of(cls, principal: Principal | None) -> Actor:
        if principal is None:  # every booking RPC requires a token; a use case run by a job
            return cls(Role.SERVICE, "booking")
        clinic_id = None
        if principal.role is Role.OPERATOR and (
            match := OPERATOR_SUBJECT.fullmatch(principal.subject)
        ):
            parsed = uuid.UUID(match.group(1))
            clinic_id = parsed if str(parsed) == match.group(1) else None
        return cls(principal.role, principal.subject, clinic_id)

    @property
    def label(self) -> str:
        """Who, as stored in created_by / changed_by (VARCHAR(100))."""
        return f"{self.role}:{self.subject}"

    @property
    def is_staff(self) -> bool:
        return self.role in (Role.ADMIN, Role.OPERATOR)

    def manages(self, clinic_id: uuid.UUID) -> bool:
        return self.role is Role.ADMIN or (
            self.role is Role.OPERATOR and self.clinic_id == clinic_id
        )

    def require_clinic(self, clinic_id: uuid.UUID) -> None:
        """PermissionDenied unless the actor manages `clinic_id`."""
        if self.manages(clinic_id):
            return
        if self.role is Role.OPERATOR and self.clinic_id is None:
            raise PermissionDenied(
                "this operator token names no clinic: its subject must be "
                "clinic:<clinic_id>:<staff> to manage one"
            )
        article = "an" if self.role in (Role.ADMIN, Role.OPERATOR) else "a"  # "a user"
        raise PermissionDenied(f"{article} {self.role} token may not manage clinic {clinic_id}")

    def require_party(
        self,
        record: tuple[str, uuid.UUID],
        user_id: uuid.UUID,
        clinic_id: uuid.UUID,
        asked_for: uuid.UUID | None,
    ) -> None:
        """May the actor act on `record` (its type and id), a rider's (of `user_id` at
        `clinic_id`)? `asked_for` is the request's user_id (a `user` token always names
        itself there): another rider's record is NOT_FOUND exactly as a missing one is, so
        nothing hints that it exists; staff must manage the clinic."""
        if (asked_for is not None and asked_for != user_id) or (
            self.role is Role.USER and str(user_id) != self.subject
        ):
            raise not_found(*record)
        if self.role is Role.OPERATOR:
            self.require_clinic(clinic_id)


def require_active(what: str, record_id: uuid.UUID, active: bool, reason: str) -> None:
    if not active:
        raise FailedPrecondition(reason, f"{what} {record_id} is not active")


def same_retry(first: dict[str, object], given: dict[str, object], what: str, key: str) -> None:
    """A retry under `key` must repeat the first request; ALREADY_EXISTS naming the first
    field that differs otherwise."""
    for name, value in given.items():
        if first.get(name) != value:
            raise AlreadyExists(
                f"request_id {key!r} already created {what} with another {name}; "
                "use a new request_id for a new request"
            )


# --- reservations -----------------------------------------------------------------------


def new_lock_token() -> str:
    return secrets.token_urlsafe(32)  # 43 characters of the column's 64


def check_lock_token(reservation: Reservation, token: str) -> None:
    if not hmac.compare_digest(reservation.lock_token.encode(), token.encode()):
        raise FailedPrecondition(
            "INVALID_LOCK_TOKEN", f"the lock token does not match reservation {reservation.id}"
        )


def clinic_refusal(clinic: Clinic) -> FailedPrecondition | None:
    """CLINIC_INACTIVE when `clinic` was deactivated: it takes no new places (those held
    stay)."""
    if clinic.is_active:
        return None
    return FailedPrecondition(
        "CLINIC_INACTIVE", f"clinic {clinic.id} is not active: it takes no bookings"
    )


def reservation_refusal(slot: Slot, clinic: Clinic, now: datetime) -> FailedPrecondition | None:
    """Why a place of `slot` (of `clinic`) cannot be taken now; None when one could (the
    statement that tried lost a race with a release)."""
    if refused := clinic_refusal(clinic):
        return refused
    if slot.status not in (SlotStatus.AVAILABLE, SlotStatus.BOOKED):
        return FailedPrecondition(
            "SLOT_NOT_AVAILABLE", f"slot {slot.id} is {slot.status}: not open for booking"
        )
    if refused := started_refusal(slot, now):
        return refused
    if slot.remaining == 0:
        return FailedPrecondition("SLOT_FULL", f"slot {slot.id} is full: no place is left")
    return None


def started_refusal(slot: Slot, now: datetime) -> FailedPrecondition | None:
    """SLOT_NOT_AVAILABLE when `slot` has started: a visit already begun is not booked."""
    if slot.start_time > now:
        return None
    return FailedPrecondition(
        "SLOT_NOT_AVAILABLE", f"slot {slot.id} started at {slot.start_time.isoformat()}"
    )


class ConfirmPath(StrEnum):
    """How a reservation becomes a booking."""

    # Still pending (expired or not): its place is held, take it over.
    HELD = "held"
    # Expired and swept: its place was given back; take one again if any is free.
    RETAKE = "retake"
    # Confirmed already (a retry): answer with its booking.
    DONE = "done"


def confirm_path(reservation: Reservation) -> ConfirmPath:
    if reservation.status is ReservationStatus.PENDING:
        return ConfirmPath.HELD
    if reservation.status is ReservationStatus.EXPIRED:
        return ConfirmPath.RETAKE
    if reservation.status is ReservationStatus.CONFIRMED:
        return ConfirmPath.DONE
    raise FailedPrecondition(
        "RESERVATION_RELEASED", f"reservation {reservation.id} was released; reserve again"
    )


def retake_refused(
    reservation: Reservation, refusal: FailedPrecondition | None
) -> FailedPrecondition:
    """Why the place of an expired `reservation` could not be taken again, `refusal` being
    what ReserveSlot would answer: the slot's own reason (started, closed, clinic inactive)
    when it has one, else RESERVATION_EXPIRED (another rider took the place)."""
    if refusal is not None and refusal.reason != "SLOT_FULL":
        return refusal
    return FailedPrecondition(
        "RESERVATION_EXPIRED",
        f"reservation {reservation.id} expired at {reservation.expires_at.isoformat()} "
        "and its place has been taken",
    )


def booking_amounts(price: Decimal, discount: Decimal) -> tuple[Decimal, Decimal, Decimal]:
    """(total, discount, final) for a booking at `price`: final = total - discount."""
    if discount > price:
        raise FailedPrecondition(
            "DISCOUNT_EXCEEDS_PRICE", f"a discount of {discount} exceeds the price {price}"
        )
    return price, discount, price - discount
