"""What one event contributes to the reports, read from its CloudEvents envelope (pure).

* journey.checked_in: a check-in tap at its terminal.
* journey.checked_out: a check-out tap at the destination, and a trip of the route matrix
  on the day of the check-out (revenue = its fare, charged or owed).
* journey.incomplete (exit without entry): a check-out tap at the exit terminal, counted
  apart as incomplete with the penalty it was charged; not a trip (no origin).
* journey.abandoned (entry without exit): counted apart at its origin on the day it was
  closed, with the fare it was charged; no tap (the rider never tapped out), not a trip.
* journey.revised (reconciled offline taps changed a journey announced closed before): what
  its `previous` closing counted (as the three above) is taken back and its `current` one
  counted; a cancelled journey counts nothing.
* booking.*: one event of its type on its day, with `data.amount` when present.
* anything else: stored as it came, counted nowhere.

An event's instant is the one it reports (check-in, check-out, closing time), else the
envelope's `time`, else when it was received.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
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
    revision: Revision | None = None


@dataclass(frozen=True)
class TerminalChange:
    checkins: int = 0
    checkouts: int = 0
    abandoned: int = 0
    incomplete: int = 0
    fares: Decimal = ZERO


@dataclass(frozen=True)
class RouteChange:
    trips: int = 0
    revenue: Decimal = ZERO
    duration_minutes: int = 0
    timed_trips: int = 0


@dataclass(frozen=True)
class Revision:
    """journey.revised: `previous` taken back, `current` counted. The changes it makes to
    each table, by key in key order (the order store.revise locks rows in), without the
    keys left unchanged."""

    previous: Facts
    current: Facts

    def _signed(self) -> tuple[tuple[Facts, int], ...]:
        return (self.previous, -1), (self.current, 1)

    def hourly(self) -> dict[tuple[date, str, int], int]:
        """Changes of terminal_hourly_taps by (day, terminal, hour)."""
        changes: dict[tuple[date, str, int], int] = {}
        for facts, sign in self._signed():
            if (tap := facts.tap) is not None:
                key = (tap.day, tap.terminal, tap.hour)
                changes[key] = changes.get(key, 0) + sign
        return {key: n for key, n in sorted(changes.items()) if n}

    def riders(self) -> list[tuple[date, str, uuid.UUID]]:
        """The current closing's rider at its exit. A rider is never taken back: the tap of
        the previous closing was made, whichever journey it now belongs to."""
        tap = self.current.tap
        return [] if tap is None or tap.user_id is None else [(tap.day, tap.terminal, tap.user_id)]

    def terminal_days(self) -> dict[tuple[date, str], TerminalChange]:
        """Changes of daily_terminal_metrics by (day, terminal), the days whose hourly taps
        change included (their peak is computed again)."""
        changes: dict[tuple[date, str], TerminalChange] = {
            (day, terminal): TerminalChange() for day, terminal, _ in self.hourly()
        }
        for facts, sign in self._signed():
            if (tap := facts.tap) is not None:
                c = changes.get((tap.day, tap.terminal), TerminalChange())
                changes[(tap.day, tap.terminal)] = replace(
                    c,
                    checkins=c.checkins + sign * int(tap.checkin),
                    checkouts=c.checkouts + sign * int(not tap.checkin),
                )
            if (gone := facts.unfinished) is not None:
                c = changes.get((gone.day, gone.terminal), TerminalChange())
                changes[(gone.day, gone.terminal)] = replace(
                    c,
                    abandoned=c.abandoned + sign * int(gone.abandoned),
                    incomplete=c.incomplete + sign * int(not gone.abandoned),
                    fares=c.fares + sign * gone.fare,
                )
        return dict(sorted(changes.items()))

    def routes(self) -> dict[tuple[date, str, str], RouteChange]:
        """Changes of daily_route_metrics by (day, origin, destination)."""
        changes: dict[tuple[date, str, str], RouteChange] = {}
        for facts, sign in self._signed():
            if (trip := facts.trip) is not None:
                key = (trip.day, trip.origin, trip.destination)
                c = changes.get(key, RouteChange())
                timed = trip.duration_minutes is not None
                changes[key] = RouteChange(
                    c.trips + sign,
                    c.revenue + sign * trip.fare,
                    c.duration_minutes + sign * (trip.duration_minutes or 0),
                    c.timed_trips + sign * int(timed),
                )
        return {key: c for key, c in sorted(changes.items()) if c != RouteChange()}


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


def _checked_out(
    event: CloudEvent, data: journey_pb2.JourneyClosed, zone: ZoneInfo, fallback: datetime
) -> Facts:
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


def _incomplete(
    event: CloudEvent, data: journey_pb2.JourneyClosed, zone: ZoneInfo, fallback: datetime
) -> Facts:
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


def _abandoned(
    event: CloudEvent, data: journey_pb2.JourneyClosed, zone: ZoneInfo, fallback: datetime
) -> Facts:
    at = _time(data, "closed_at") or fallback
    origin = _code(event, data.origin_code, "originCode")
    day, _ = local_bucket(at, zone)
    unfinished = Unfinished(day, origin, abandoned=True, fare=_fare(event, data))
    return Facts(at, origin, _user(event, data.user_id), unfinished=unfinished)


ClosingReader = Callable[[CloudEvent, journey_pb2.JourneyClosed, ZoneInfo, datetime], Facts]
# By JourneyClosed.status, and the event type announcing a journey closed with it.
_CLOSINGS: dict[str, tuple[str, ClosingReader]] = {
    "completed": ("journey.checked_out", _checked_out),
    "incomplete": ("journey.incomplete", _incomplete),
    "abandoned": ("journey.abandoned", _abandoned),
}


def _closed(read: ClosingReader) -> Callable[[CloudEvent, ZoneInfo, datetime], Facts]:
    """`read` for an event whose data is the JourneyClosed."""

    def reader(event: CloudEvent, zone: ZoneInfo, fallback: datetime) -> Facts:
        return read(event, _parse(event, journey_pb2.JourneyClosed), zone, fallback)

    return reader


def _revised(event: CloudEvent, zone: ZoneInfo, fallback: datetime) -> Facts:
    data = _parse(event, journey_pb2.JourneyRevised)
    previous = _closing(event, data, "previous", zone, fallback)
    current = _closing(event, data, "current", zone, fallback)
    return Facts(
        fallback,
        current.terminal_code or previous.terminal_code,
        current.user_id or previous.user_id,
        revision=Revision(previous, current),
    )


def _closing(
    event: CloudEvent, data: journey_pb2.JourneyRevised, field: str, zone: ZoneInfo, at: datetime
) -> Facts:
    """What the closing `field` of a journey.revised counts; nothing when cancelled."""
    if not data.HasField(field):
        raise BadEvent(f"{_name(event)}: {field} is missing")
    closing: journey_pb2.JourneyClosed = getattr(data, field)
    if closing.status == "cancelled":
        return Facts(at, None, _user(event, closing.user_id))
    if closing.status not in _CLOSINGS:
        raise BadEvent(f"{_name(event)}: {field}.status {closing.status[:40]!r} is unknown")
    _, read = _CLOSINGS[closing.status]
    return read(event, closing, zone, at)


_JOURNEY_READERS: dict[str, Callable[[CloudEvent, ZoneInfo, datetime], Facts]] = {
    "journey.checked_in": _checked_in,
    **{kind: _closed(read) for kind, read in _CLOSINGS.values()},
    "journey.revised": _revised,
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
