"""Settings of the booking service only (TIKET_BOOKING_*), read beside the shared Settings.
Every value has a default from the seeds; an invalid one stops the process with a message
naming the variable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from libs.config import duration_up_to, int_between, port, positive_float, read_setting
from services.booking.domain import RESERVATION_MINUTES
from services.booking.refunds import STANDARD, RefundPolicy

PREFIX = "TIKET_BOOKING_"


@dataclass(frozen=True)
class BookingConfig:
    # Seed 2.1.3 / 3.3.2: a reservation holds its place this long.
    reservation_ttl: timedelta = timedelta(minutes=RESERVATION_MINUTES)
    # A confirmed booking keeps its place unpaid this long, then is cancelled (place back).
    payment_window: timedelta = timedelta(minutes=30)
    # A money move (charge or refund) still unconfirmed after this is driven again by the
    # sweeper (each is idempotent by key).
    settle_after: timedelta = timedelta(seconds=30)
    # Seed 001: riders are reminded of a confirmed visit this long before it.
    reminder_before: timedelta = timedelta(hours=24)
    # Per call to the user service (seed 001 §3.1: 1,000 ms).
    user_timeout: float = 1.0
    # Reservations the sweeper expires per transaction (a full batch runs the next at once).
    sweep_batch: int = 1000
    refund_policy: RefundPolicy = field(default_factory=lambda: RefundPolicy.parse(STANDARD))
    # The gateway (Midtrans): off while no server key is set (gateway payments and top-ups
    # are then refused with GATEWAY_NOT_CONFIGURED). Base URLs default to its sandbox.
    midtrans_server_key: str = ""
    midtrans_snap_url: str = "https://app.sandbox.midtrans.com"
    midtrans_api_url: str = "https://api.sandbox.midtrans.com"
    # Per call to the gateway (libs/clients DEPENDENCY_TIMEOUTS["payment"]: 3 s).
    gateway_timeout: float = 3.0
    # The HTTP port of the gateway's notifications (POST /payments/midtrans/notification).
    http_port: int = 8054


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
        payment_window=read_setting(
            env, PREFIX + "PAYMENT_SECONDS", d.payment_window, duration_up_to(timedelta(days=7))
        ),
        settle_after=read_setting(
            env, PREFIX + "SETTLE_AFTER_SECONDS", d.settle_after, duration_up_to(timedelta(days=1))
        ),
        reminder_before=read_setting(
            env, PREFIX + "REMINDER_SECONDS", d.reminder_before, duration_up_to(timedelta(days=7))
        ),
        user_timeout=read_setting(
            env, PREFIX + "USER_TIMEOUT_SECONDS", d.user_timeout, positive_float
        ),
        sweep_batch=read_setting(
            env, PREFIX + "SWEEP_BATCH", d.sweep_batch, int_between(1, 100_000)
        ),
        refund_policy=read_setting(
            env, PREFIX + "REFUND_POLICY", d.refund_policy, RefundPolicy.parse
        ),
        midtrans_server_key=read_setting(env, PREFIX + "MIDTRANS_SERVER_KEY", "", str),
        midtrans_snap_url=read_setting(env, PREFIX + "MIDTRANS_SNAP_URL", d.midtrans_snap_url, url),
        midtrans_api_url=read_setting(env, PREFIX + "MIDTRANS_API_URL", d.midtrans_api_url, url),
        gateway_timeout=read_setting(
            env, PREFIX + "GATEWAY_TIMEOUT_SECONDS", d.gateway_timeout, positive_float
        ),
        http_port=read_setting(env, PREFIX + "HTTP_PORT", d.http_port, port),
    )


def url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return raw.rstrip("/")
