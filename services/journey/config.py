"""Settings of the journey service only (TIKET_JOURNEY_*), read beside the shared Settings.
Every value has a default from seed 004 or the issue; an invalid one stops the process
with a message naming the variable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from libs.config import ConfigError, duration_up_to, positive_float, read_setting

PREFIX = "TIKET_JOURNEY_"
SECONDS = duration_up_to(timedelta(days=7))


@dataclass(frozen=True)
class JourneyConfig:
    # Seed 004: active_trip:{user_id} lives 2 h; a journey open longer is abandoned.
    max_trip: timedelta = timedelta(hours=2)
    # The wallet hold outlives the journey by this much, so the sweeper captures it before
    # the user service's own sweeper releases it.
    hold_margin: timedelta = timedelta(hours=1)
    # Exit at the entry terminal within this window costs `same_terminal_fare`.
    same_terminal_window: timedelta = timedelta(minutes=20)
    same_terminal_fare: Decimal = Decimal("2000.00")
    # Exit without entry; None = the maximum fare to the exit terminal.
    no_entry_penalty: Decimal | None = None
    # Per call to the user and fare services (the gate's own deadline caps it further).
    # seed 001 §3.1: a user-service call waits at most 1,000 ms (libs/clients.py)
    dependency_timeout: float = 1.0
    # How long gates, terminals and fares fetched from the fare service are reused.
    lookup_ttl: float = 30.0
    # A check-in tap unfinished this long is an orphan: its hold is released.
    orphan_after: timedelta = timedelta(seconds=60)
    # A closed journey whose money is unconfirmed this long is settled by the sweeper.
    settle_after: timedelta = timedelta(seconds=30)
    # tapped_at may be this far ahead of the server clock (gate clock skew) …
    max_clock_skew: timedelta = timedelta(minutes=5)
    # … and this old (taps uploaded late by gates that were offline).
    max_tap_age: timedelta = timedelta(days=7)
    # Keep active_trip:{user_id} in Redis (a hint; the database decides).
    active_trip_cache: bool = True
    # Anti-passback: an entry tap at the terminal of the card's check-in, or an exit tap
    # where it checked out, less than this before or after it (by tapped_at) repeats that
    # tap and is refused with its journey (ALREADY_CHECKED_IN / ALREADY_CHECKED_OUT).
    anti_passback: timedelta = timedelta(seconds=60)

    @property
    def hold_ttl(self) -> timedelta:
        return self.max_trip + self.hold_margin


def load(env: Mapping[str, str] | None = None) -> JourneyConfig:
    env = os.environ if env is None else env
    d = JourneyConfig()
    config = JourneyConfig(
        max_trip=read_setting(env, PREFIX + "MAX_TRIP_SECONDS", d.max_trip, SECONDS),
        hold_margin=read_setting(env, PREFIX + "HOLD_MARGIN_SECONDS", d.hold_margin, SECONDS),
        same_terminal_window=read_setting(
            env, PREFIX + "SAME_TERMINAL_WINDOW_SECONDS", d.same_terminal_window, SECONDS
        ),
        same_terminal_fare=read_setting(
            env, PREFIX + "SAME_TERMINAL_FARE", d.same_terminal_fare, _amount
        ),
        no_entry_penalty=read_setting(
            env, PREFIX + "NO_ENTRY_PENALTY", d.no_entry_penalty, _amount
        ),
        dependency_timeout=read_setting(
            env, PREFIX + "DEPENDENCY_TIMEOUT_SECONDS", d.dependency_timeout, positive_float
        ),
        lookup_ttl=read_setting(env, PREFIX + "LOOKUP_TTL_SECONDS", d.lookup_ttl, positive_float),
        orphan_after=read_setting(env, PREFIX + "ORPHAN_AFTER_SECONDS", d.orphan_after, SECONDS),
        settle_after=read_setting(env, PREFIX + "SETTLE_AFTER_SECONDS", d.settle_after, SECONDS),
        max_clock_skew=read_setting(
            env, PREFIX + "MAX_CLOCK_SKEW_SECONDS", d.max_clock_skew, SECONDS
        ),
        max_tap_age=read_setting(env, PREFIX + "MAX_TAP_AGE_SECONDS", d.max_tap_age, SECONDS),
        active_trip_cache=read_setting(
            env, PREFIX + "ACTIVE_TRIP_CACHE", d.active_trip_cache, _flag
        ),
        anti_passback=read_setting(env, PREFIX + "ANTI_PASSBACK_SECONDS", d.anti_passback, SECONDS),
    )
    if config.hold_ttl > timedelta(hours=24):
        raise ConfigError(
            f"{PREFIX}MAX_TRIP_SECONDS + {PREFIX}HOLD_MARGIN_SECONDS must be at most 24 h "
            "(the longest hold the wallet places)"
        )
    return config


def _amount(raw: str) -> Decimal:
    value = Decimal(raw)
    if not value.is_finite() or value < 0 or value != value.quantize(Decimal("0.01")):
        raise ValueError("expected rupiah >= 0 with at most two decimals")
    return value.quantize(Decimal("0.01"))


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in {"on", "off", "true", "false", "1", "0"}:
        raise ValueError("expected on or off")
    return value in {"on", "true", "1"}
