"""Settings of the analytics service only (TIKET_ANALYTICS_*), read beside the shared
Settings. An invalid value stops the process with a message naming the variable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from libs.config import int_between, read_setting

PREFIX = "TIKET_ANALYTICS_"
DEFAULT_TIME_ZONE = "Asia/Jakarta"


@dataclass(frozen=True)
class AnalyticsConfig:
    # Business days and hours are local: an event is counted on the day and hour it had on a
    # wall clock in this zone. Changing it affects only the events counted afterwards.
    time_zone: ZoneInfo = field(default_factory=lambda: ZoneInfo(DEFAULT_TIME_ZONE))
    # The partition job keeps the current month's partition of analytics_events and this
    # many following ones created (events of any other month create theirs on arrival).
    partition_months_ahead: int = 3
    # Delay before the first retry of an event whose handling failed; it doubles with each
    # attempt (at most 30 s), and after 5 attempts the event goes to the dead-letter queue.
    retry_backoff_seconds: float = 0.5


def load(env: Mapping[str, str] | None = None) -> AnalyticsConfig:
    env = os.environ if env is None else env
    d = AnalyticsConfig()
    return AnalyticsConfig(
        time_zone=read_setting(env, PREFIX + "TIME_ZONE", d.time_zone, _zone),
        partition_months_ahead=read_setting(
            env, PREFIX + "PARTITION_MONTHS_AHEAD", d.partition_months_ahead, int_between(0, 120)
        ),
        retry_backoff_seconds=read_setting(
            env, PREFIX + "RETRY_BACKOFF_SECONDS", d.retry_backoff_seconds, _backoff
        ),
    )


def _zone(raw: str) -> ZoneInfo:
    try:
        return ZoneInfo(raw.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("expected an IANA time zone name such as Asia/Jakarta") from None


def _backoff(raw: str) -> float:
    value = float(raw)
    if not 0 < value <= 30:
        raise ValueError("expected seconds, more than 0 and at most 30")
    return value
