"""What one event contributes to the reports, read from its CloudEvents envelope (pure).

* journey.checked_in: a check-in tap at its terminal.
* journey.checked_out: a check-out tap at the destination, and a trip of the route matrix
  on the day of the check-out (revenue = its fare, charged or owed).
* journey.incomplete (exit without entry): a check-out tap at the exit terminal, counted
  apart as incomplete with the penalty it was charged; not a trip (no origin).
* journey.abandoned (entry without exit): counted apart at its origin on the day it was
  closed, with the fare it was charged; no tap (the rider never tapped out), not a trip.
* booking.*: one event of its type on its day, with `data.amount` when present.
* anything else: stored as it came, counted nowhere.

An event's instant is the one it reports (check-in, check-out, closing time), else the
envelope's `time`, else when it was received.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from google.protobuf import json_format
from google.protobuf.message import Message
from google.type import money_pb2
from tiket.events.v1 import journey_pb2

from libs.errors import InvalidArgument
from libs.events.envelope import BadEvent, CloudEvent
from libs.money import to_decimal
from libs.validation import TERMINAL_CODE
from services.analytics.domain import BOOKING_TYPES, ZERO, local_bucket

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Tap:
    terminal: str
    user_id: uuid.UUID | None
    day: date
    hour: int
    checkin: bool


@dataclass(frozen=True)
class Trip:
    day: date
    origin: str
    destination: str
    fare: Decimal
    duration_minutes: int | None


@dataclass(frozen=True)
class Unfinished:
    """An abandoned (entry, no exit) or incomplete (exit, no entry) journey."""

    day: date
    terminal: str
    abandoned: bool
    fare: Decimal


@dataclass(frozen=True)
class Booking:
    day: date
    event_type: str
    amount: Decimal | None


@dataclass(frozen=True)
class Facts:
    occurred_at: datetime
    terminal_code: str | None
    user_id: uuid.UUID | None
    tap: Tap | None = None
    trip: Trip | None = None
    unfinished: Unfinished | None = None
    booking: Booking | None = None


def facts_of(event: CloudEvent, zone: ZoneInfo, received_at: datetime) -> Facts:
    """BadEvent when an event of a known type cannot be read."""
    fallback = envelope_time(event.time) or received_at
    if event.type in BOOKING_TYPES:
        return _booking(event, zone, fallback)
    reader = _JOURNEY_READERS.get(event.type)
    if reader is None:
        return Facts(fallback, _loose_code(event.data), _loose_user(event.data))
    return reader(event, zone, fallback)


def envelope_time(raw: str) -> datetime | None:
    """The CloudEvents `time` (RFC 3339) in UTC; None when absent, bad, or outside what a
    UTC datetime holds (0001-01-01T00:00+01:00): an unknown event is then stored at its
    arrival rather than failing on its partition."""
    try:
        parsed = datetime.fromisoformat(raw)
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


# --- journeys ------------------------------------------------------------------------------


def _checked_in(event: CloudEvent, zone: ZoneInfo, fallback: datetime) -> Facts:
    data = _parse(event, journey_pb2.JourneyCheckedIn)
    at = _time(data, "checkin_time") or fallback
    terminal = _code(event, data.terminal_code, "terminalCode")
    user = _user(event, data.user_id)
    day, hour = local_bucket(at, zone)
    return Facts(at, terminal, user, tap=Tap(terminal, user, day, hour, checkin=True))


def _checked_out(event: CloudEvent, zone: ZoneInfo, fallback: datetime) -> Facts:
    data = _parse(event, journey_pb2.JourneyClosed)
    at = _time(data, "checkout_time") or fallback
    origin = _code(event, data.origin_code, "originCode")
    destination = _code(event, data.destination_code, "destinationCode")
    user = _user(event, data.user_id)
    if not data.HasField("fare"):
        raise BadEvent(f"{_name(event)}: fare is missing")
    duration = data.duration_minutes if data.HasField("duration_minutes") else None
    if duration is not None and duration < 0:
        raise BadEvent(f"{_name(event)}: durationMinutes is negative")
    day, hour = local_bucket(at, zone)
    return Facts(
        at,
        destination,
        user,
        tap=Tap(destination, user, day, hour, checkin=False),
        trip=Trip(day, origin, destination, _money(event, data.fare, "fare"), duration),
    )


def _incomplete(event: CloudEvent, zone: ZoneInfo, fallback: datetime) -> Facts:
    data = _parse(event, journey_pb2.JourneyClosed)
    at = _time(data, "checkout_time") or fallback
    exit_code = _code(event, data.destination_code, "destinationCode")
    user = _user(event, data.user_id)
    day, hour = local_bucket(at, zone)
    return Facts(
        at,
        exit_code,
        user,
        tap=Tap(exit_code, user, day, hour, checkin=False),
        unfinished=Unfinished(day, exit_code, abandoned=False, fare=_fare(event, data)),
    )


def _abandoned(event: CloudEvent, zone: ZoneInfo, fallback: datetime) -> Facts:
    data = _parse(event, journey_pb2.JourneyClosed)
    at = _time(data, "closed_at") or fallback
    origin = _code(event, data.origin_code, "originCode")
    day, _ = local_bucket(at, zone)
    unfinished = Unfinished(day, origin, abandoned=True, fare=_fare(event, data))
    return Facts(at, origin, _user(event, data.user_id), unfinished=unfinished)


_JOURNEY_READERS: dict[str, Callable[[CloudEvent, ZoneInfo, datetime], Facts]] = {
    "journey.checked_in": _checked_in,
    "journey.checked_out": _checked_out,
    "journey.incomplete": _incomplete,
    "journey.abandoned": _abandoned,
}


# --- bookings ------------------------------------------------------------------------------


def _booking(event: CloudEvent, zone: ZoneInfo, at: datetime) -> Facts:
    amount = None
    if event.data.get("amount") is not None:
        raw = event.data["amount"]
        if not isinstance(raw, dict):
            raise BadEvent(f"{_name(event)}: amount is not a google.type.Money object")
        money = _parse_dict(event, raw, money_pb2.Money)
        amount = _money(event, money, "amount")
    day, _ = local_bucket(at, zone)
    return Facts(
        at,
        _loose_code(event.data),
        _loose_user(event.data),
        booking=Booking(day, event.type, amount),
    )


# --- fields --------------------------------------------------------------------------------


def _name(event: CloudEvent) -> str:
    return f"{event.type} {event.id}"


def _parse(event: CloudEvent, message_type: type[M]) -> M:
    return _parse_dict(event, event.data, message_type)


def _parse_dict(event: CloudEvent, raw: dict[str, Any], message_type: type[M]) -> M:
    try:
        return json_format.ParseDict(raw, message_type(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise BadEvent(f"{_name(event)}: data is not a {message_type.__name__}: {exc}") from None


def _time(message: Message, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    return getattr(message, field).ToDatetime(tzinfo=UTC)


def _code(event: CloudEvent, value: str, field: str) -> str:
    if not TERMINAL_CODE.fullmatch(value):
        raise BadEvent(f"{_name(event)}: {field} {value!r} is not a terminal code")
    return value


def _user(event: CloudEvent, value: str) -> uuid.UUID | None:
    """None for an anonymous rider (no user id)."""
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BadEvent(f"{_name(event)}: userId {value[:40]!r} is not a UUID") from None


def _money(event: CloudEvent, money: money_pb2.Money, field: str) -> Decimal:
    try:
        return to_decimal(money, field, positive=False)
    except InvalidArgument as exc:
        raise BadEvent(f"{_name(event)}: {exc.message}") from None


def _fare(event: CloudEvent, data: journey_pb2.JourneyClosed) -> Decimal:
    return _money(event, data.fare, "fare") if data.HasField("fare") else ZERO


def _loose_code(data: dict[str, Any]) -> str | None:
    """A terminal code of an event read only for storage, when it has a valid one."""
    value = data.get("terminalCode")
    return value if isinstance(value, str) and TERMINAL_CODE.fullmatch(value) else None


def _loose_user(data: dict[str, Any]) -> uuid.UUID | None:
    value = data.get("userId")
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
