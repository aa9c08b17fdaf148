"""The booking service's sweeper, run beside the server: expires reservations not confirmed
in time and gives their places back (seed 3.3.2's clean-up job), drives money moves left
pending to their end (the wallet repeated, the gateway asked), cancels bookings left unpaid
past the payment window, reminds riders of visits 24 h ahead, and ends top-ups the gateway
never settled. Safe on every replica at once: reservations are claimed with SKIP LOCKED,
bookings under their row lock, money moves by idempotent keys. A round that did work runs
the next at once (libs/periodic.py), so a backlog drains at the database's pace."""

from __future__ import annotations

from libs.periodic import Periodic
from services.booking.bookings import BookingApp
from services.booking.payments import Payments
from services.booking.reservations import ReservationApp
from services.booking.topups import TopUps


def sweeper(
    reservations: ReservationApp,
    bookings: BookingApp,
    payments: Payments,
    top_ups: TopUps,
    interval: float,
) -> Periodic:
    async def sweep() -> int:
        return (
            await reservations.expire_due()
            + await payments.settle()
            + await bookings.expire_unpaid()
            + await bookings.remind_due()
            + await top_ups.settle()
        )

    return Periodic("booking-sweeper", sweep, interval)
