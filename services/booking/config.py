"""Settings of the booking service only (TIKET_BOOKING_*), read beside the shared Settings.
Every value has a default from the seeds; an invalid one stops the process with a message
naming the variable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from libs.config import duration_up_to, int_between, positive_float, read_setting
from services.booking.domain import RESERVATION_MINUTES

PREFIX = "TIKET_BOOKING_"


@dataclass(frozen=True)
class BookingConfig:
    # Seed 2.1.3 / 3.3.2: a reservation holds its place this long.
    reservation_ttl: timedelta = timedelta(minutes=RESERVATION_MINUTES)
    # Per call to the user service (seed 001 §3.1: 1,000 ms).
    user_timeout: float = 1.0
    # Reservations the sweeper expires per transaction (a full batch runs the next at once).
    sweep_batch: int = 1000


def load(env: Mapping[str, str] | None = None) -> BookingConfig:
    env = os.environ if env is None else env
    d = BookingConfig()
    return BookingConfig(
        reservation_ttl=read_setting(
            env,
            PREFIX + "RESERVATION_SECONDS",
            d.reservation_ttl,
            duration_up_to(timedelta(hours=24)),
        ),
        user_timeout=read_setting(
            env, PREFIX + "USER_TIMEOUT_SECONDS", d.user_timeout, positive_float
        ),
        sweep_batch=read_setting(
            env, PREFIX + "SWEEP_BATCH", d.sweep_batch, int_between(1, 100_000)
        ),
    )
