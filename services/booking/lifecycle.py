"""What a booking may become, pure: paying, cancelling, moving and the visit, each refused
with FAILED_PRECONDITION and a reason a client can switch on when the booking's status does
not allow it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from libs.errors import FailedPrecondition
from services.booking.domain import Booking, BookingStatus, PaymentStatus

CANCELLABLE = frozenset({BookingStatus.PENDING_PAYMENT, BookingStatus.CONFIRMED})
MOVABLE = CANCELLABLE
# The visit: (from, to, what staff call it).
VISIT_STEPS = {
    BookingStatus.IN_PROGRESS: (BookingStatus.CONFIRMED, "start the visit of"),
    BookingStatus.COMPLETED: (BookingStatus.IN_PROGRESS, "complete"),
    BookingStatus.NO_SHOW: (BookingStatus.CONFIRMED, "mark as a no-show"),
}


def _refused(reason: str, booking: Booking, doing: str) -> FailedPrecondition:
    return FailedPrecondition(
        reason, f"booking {booking.id} is {booking.status}: cannot {doing} it"
    )


def require_payable(booking: Booking) -> None:
    if booking.status is BookingStatus.CANCELLED:
        raise _refused("BOOKING_CANCELLED", booking, "pay")
    if booking.status is not BookingStatus.PENDING_PAYMENT:
        raise _refused("ALREADY_PAID", booking, "pay")


def require_cancellable(booking: Booking) -> None:
    if booking.status not in CANCELLABLE:
        raise _refused("BOOKING_NOT_CANCELLABLE", booking, "cancel")


def require_movable(booking: Booking, now: datetime) -> None:
    if booking.status not in MOVABLE:
        raise _refused("BOOKING_NOT_MOVABLE", booking, "reschedule")
    if booking.slot_start <= now:
        raise FailedPrecondition(
            "BOOKING_STARTED",
            f"booking {booking.id} began at {booking.slot_start.isoformat()}: "
            "it can no longer be moved",
        )


def visit_step(booking: Booking, to: BookingStatus, now: datetime) -> None:
    """May staff move `booking` to `to` (IN_PROGRESS, COMPLETED, NO_SHOW) now?"""
    source, doing = VISIT_STEPS[to]
    if booking.status is not source:
        raise _refused("INVALID_VISIT_STEP", booking, doing)
    if to is BookingStatus.NO_SHOW and booking.slot_start > now:
        raise FailedPrecondition(
            "SLOT_NOT_STARTED",
            f"booking {booking.id} starts at {booking.slot_start.isoformat()}: "
            "a no-show can be marked once it has begun",
        )


def cancelled_payment_status(paid: Decimal | None, refund: Decimal) -> PaymentStatus:
    """The payment status of a booking cancelled with `paid` taken (None: nothing was) and
    `refund` of it going back."""
    if paid is None:
        return PaymentStatus.FAILED  # the seed's pair for a booking never paid
    if refund == paid:
        return PaymentStatus.REFUNDED
    return PaymentStatus.PARTIALLY_REFUNDED if refund > 0 else PaymentStatus.PAID


def moved_amounts(
    booking: Booking, new_price: Decimal
) -> tuple[tuple[Decimal, Decimal, Decimal], Decimal]:
    """(total, discount, final) after moving `booking` to a slot at `new_price`, and what
    goes back to the rider. Unpaid: the new slot's price (the discount kept, at most the
    price). Paid: a cheaper slot refunds the difference through the channel that paid; a
    dearer one is refused (RESCHEDULE_COSTS_MORE: cancel and book it instead), so a move
    never takes money without the rider paying it."""
    discount = min(booking.discount_amount, new_price)
    final = new_price - discount
    if booking.status is BookingStatus.PENDING_PAYMENT:
        return (new_price, discount, final), Decimal("0.00")
    if final > booking.final_amount:
        raise FailedPrecondition(
            "RESCHEDULE_COSTS_MORE",
            f"the new slot costs {final} after the discount, {booking.final_amount} was paid: "
            "cancel this booking and book that slot instead",
        )
    return (new_price, discount, final), booking.final_amount - final
