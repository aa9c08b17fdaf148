"""Records and rules of the notification service; pure, no I/O.

A notification is one message for one rider, made from one event (unique per event and
rider). Each channel it goes out on is a delivery with its own status and attempts; the
notification's status rolls its deliveries up: pending while one is pending, else failed when
one failed, else sent (store.ROLL_UP, so concurrent workers agree)."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from libs.errors import InvalidArgument

DEFAULT_LANGUAGE = "id"
LANGUAGES = ("id", "en")
DEFAULT_TIME_ZONE = "Asia/Jakarta"
MAX_ERROR_CHARS = 500
# A fare change of a pair is news, by default, to the riders who travelled it this lately.
TRAVELLED_WITHIN = timedelta(days=30)


class NotificationType(StrEnum):
    CHECKIN = "checkin"
    CHECKOUT = "checkout"
    ABANDONED = "abandoned"
    INCOMPLETE = "incomplete"
    FARE_UPDATE = "fare_update"
    WALLET = "wallet"
    BOOKING = "booking"


class NotificationStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class Channel(StrEnum):
    EMAIL = "email"
    PUSH = "push"
    SMS = "sms"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"  # nothing to send to (no email address or phone number)


@dataclass(frozen=True)
class Preferences:
    user_id: uuid.UUID
    muted_channels: frozenset[Channel] = frozenset()
    language: str = DEFAULT_LANGUAGE
    time_zone: str = DEFAULT_TIME_ZONE
    # Changes of every fare (opt-in) …
    fare_updates: bool = False
    # … and of the pairs the rider travelled within TRAVELLED_WITHIN (opt-out).
    travelled_fare_updates: bool = True
    updated_at: datetime | None = None  # None: never set, the defaults

    @property
    def zone(self) -> ZoneInfo:
        return zone_info(self.time_zone)

    def channels(self, configured: frozenset[Channel]) -> list[Channel]:
        """The channels a new notification goes out on, in a stable order."""
        return [c for c in Channel if c in configured and c not in self.muted_channels]


@functools.cache
def zone_info(name: str) -> ZoneInfo:
    """The zone called `name`, built once per name (every event renders in the rider's zone;
    the names are the few hundred IANA ones check_time_zone admits). A saved name the
    installed tz database no longer knows falls back to the default: a tzdata upgrade must
    not make every event of that rider poison."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return ZoneInfo(DEFAULT_TIME_ZONE)


def check_language(value: str, field: str = "language") -> str:
    value = value.strip().lower() or DEFAULT_LANGUAGE
    if value not in LANGUAGES:
        raise InvalidArgument.field(field, f"must be one of {', '.join(LANGUAGES)}")
    return value


def check_time_zone(value: str, field: str = "time_zone") -> str:
    """An IANA zone name zoneinfo knows; the default when empty."""
    value = value.strip() or DEFAULT_TIME_ZONE
    if len(value) > 64 or not value.isascii():
        raise InvalidArgument.field(field, "is not an IANA time zone name")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidArgument.field(
            field, f"{value!r} is not an IANA time zone such as Asia/Jakarta"
        ) from None
    return value


@dataclass(frozen=True)
class Travelled:
    """A rider travelled from origin to destination (terminal codes) at `at`."""

    user_id: uuid.UUID
    origin: str
    destination: str
    at: datetime


@dataclass(frozen=True)
class Draft:
    """A notification about to be stored: made from an event, rendered for one rider."""

    event_id: uuid.UUID
    event_type: str
    type: NotificationType
    user_id: uuid.UUID
    message: str
    language: str
    terminal_code: str | None
    reference: str | None
    metadata: dict[str, str]
    channels: list[Channel]


@dataclass(frozen=True)
class Delivery:
    channel: Channel
    status: DeliveryStatus
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True)
class Notification:
    id: int
    user_id: uuid.UUID
    type: NotificationType
    status: NotificationStatus
    message: str
    language: str
    event_id: uuid.UUID
    event_type: str
    terminal_code: str | None
    transaction_reference: str | None
    metadata: dict[str, Any]
    created_at: datetime
    sent_at: datetime | None
    deliveries: list[Delivery] = field(default_factory=list)


@dataclass(frozen=True)
class Claimed:
    """A delivery a worker took to send (its attempt number already counted)."""

    notification_id: int
    channel: Channel
    attempt: int
    user_id: uuid.UUID
    message: str
    language: str
    type: NotificationType


class Outcome(StrEnum):
    SENT = "sent"
    FAILED = "failed"  # this attempt; the delivery fails when its attempts are spent
    REJECTED = "rejected"  # the provider refused for good: no further attempt
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    recipient: str | None = None
    error: str | None = None

    @property
    def error_text(self) -> str | None:
        if self.error is None or len(self.error) <= MAX_ERROR_CHARS:
            return self.error
        return self.error[: MAX_ERROR_CHARS - 1] + "…"


def after_attempt(attempt: Attempt, number: int, max_attempts: int) -> DeliveryStatus:
    """The delivery's status once attempt `number` ended as `attempt` says."""
    if attempt.outcome is Outcome.SENT:
        return DeliveryStatus.SENT
    if attempt.outcome is Outcome.SKIPPED:
        return DeliveryStatus.SKIPPED
    if attempt.outcome is Outcome.REJECTED or number >= max_attempts:
        return DeliveryStatus.FAILED
    return DeliveryStatus.PENDING


def retry_delay(attempt: int, base: float, cap: float) -> timedelta:
    """The wait after failed attempt number `attempt` (1, 2 …): base, 2·base, 4·base … ≤ cap."""
    return timedelta(seconds=min(cap, base * 2 ** min(attempt - 1, 30)))
