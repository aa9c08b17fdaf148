"""The booking service's sweeper, run beside the server: expires reservations not confirmed
in time and gives their places back (seed 3.3.2's clean-up job). Safe on every replica at
once: each batch claims its reservations with SKIP LOCKED; a full batch runs the next at
once (libs/periodic.py), so a backlog drains at the database's pace."""

from __future__ import annotations

from libs.periodic import Periodic
from services.booking.reservations import ReservationApp


def sweeper(reservations: ReservationApp, interval: float) -> Periodic:
    return Periodic("booking-sweeper", reservations.expire_due, interval)
