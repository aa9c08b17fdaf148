"""What each event becomes: a Plan (which template, which values, for whom), or None for an
event riders are not told about. Pure.

- journey.checked_in / checked_out / abandoned / incomplete: the rider of the journey;
  a closing the wallet could not charge uses the template's `.unpaid` variant, and a check-in
  a gate decided offline (uploaded later, nothing held) is not told. A check-out
  also tells who travelled which pair (Plan.travelled), for the fare news below.
- fare.updated: an audience, not one rider (Plan.user_id None, Plan.pair): the riders who
  travelled the pair lately unless they opted out, and those who opted into all fare news.
- wallet.topped_up, wallet.refunded, and wallet.hold_released of an expired hold (money
  back without a trip). Other wallet events are part of a journey the rider is told about.
- user.status_changed of the debt rule (data.debt, services/user/domain.py debt_change): the
  card suspended for a debt from offline taps (how much is owed), or re-activated once a
  top-up repaid it. A change an operator made is not the rider's news here.
- booking.*: the booking service does not exist yet, so its payload is unknown: the rider is
  data.userId / data.user_id (else a UUID subject), the reference data.bookingId /
  reservationId when present; a type without a template of its own uses `booking`. A booking
  event naming no rider is ignored.
- facility.*: facility bookings (tiket.events.v1.FacilityBookingChanged), read like booking.*:
  the user is data.userId, the reference data.bookingId.

Anything else is ignored: the consumer acknowledges it (its inbox keeps the id and type).
An event of a known type whose payload cannot be read raises BadEvent: the consumer
dead-letters it at once for an operator (a retry would fail alike)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from tiket.events.v1 import fare_pb2, journey_pb2, wallet_pb2

from libs.events.envelope import BadEvent, CloudEvent
from libs.money import from_money
from services.notification import render
from services.notification.domain import NotificationType, Travelled
from services.notification.render import Day, Value

T = NotificationType
CLOSED = {
    "journey.checked_out": T.CHECKOUT,
    "journey.abandoned": T.ABANDONED,
    "journey.incomplete": T.INCOMPLETE,
}
WALLET_MOVES = ("wallet.topped_up", "wallet.refunded")
HOLD_RELEASED = "wallet.hold_released"
TOLD_WALLET_EVENTS = (*WALLET_MOVES, HOLD_RELEASED)  # consumers.BINDINGS takes just these
BOOKING_USER_KEYS = ("userId", "user_id")
BOOKING_REFERENCE_KEYS = ("bookingId", "booking_id", "reservationId", "reservation_id")


FAN_OUT = "fare.updated"


def fans_out(event_type: str) -> bool:
    """Whether events of this type go to an audience (Plan.pair) rather than one rider."""
    return event_type == FAN_OUT


@dataclass(frozen=True)
class Plan:
    type: NotificationType
    template: str
    values: dict[str, Value]
    # None: the audience of a fare change of `pair` (origin, destination codes).
    user_id: uuid.UUID | None
    terminal_code: str | None = None
    reference: str | None = None
    pair: tuple[str, str] | None = None
    travelled: Travelled | None = None


def plan(event: CloudEvent) -> Plan | None:
    kind = event.type
    if kind == "journey.checked_in":
        return _checked_in(_data(event, journey_pb2.JourneyCheckedIn))
    if kind in CLOSED:
        return _closed(kind, _data(event, journey_pb2.JourneyClosed))
    if fans_out(kind):
        return _fare_updated(_data(event, fare_pb2.FareUpdated))
    if kind in WALLET_MOVES:
        return _money_moved(kind, _data(event, wallet_pb2.WalletMoneyMoved))
    if kind == HOLD_RELEASED:
        return _hold_released(_data(event, wallet_pb2.WalletHoldChanged))
    if kind == "user.status_changed":
        return _debt(_data(event, wallet_pb2.UserStatusChanged))
    if kind.startswith(("booking.", "facility.")):
        return _booking(event)
    return None


def _checked_in(d: journey_pb2.JourneyCheckedIn) -> Plan | None:
    if d.offline:
        return None  # decided by a gate offline, uploaded later: told as the journey it began
    return Plan(
        T.CHECKIN,
        "journey.checked_in",
        {
            "terminal": d.terminal_name or d.terminal_code,
            "time": _time(d, "checkin_time"),
            "held": from_money(d.held_amount),
        },
        _user(d.user_id),
        terminal_code=d.terminal_code or None,
        reference=d.journey_id or None,
    )


def _closed(kind: str, d: journey_pb2.JourneyClosed) -> Plan:
    values: dict[str, Value] = {
        "origin": d.origin_name or d.origin_code,
        "destination": d.destination_name or d.destination_code,
        "fare": from_money(d.fare),
    }
    if kind == "journey.abandoned":
        values["time"] = _time(d, "checkin_time")
    elif kind == "journey.incomplete":
        values["time"] = _time(d, "checkout_time")
    if not d.unpaid:
        values["balance"] = from_money(d.remaining_balance)
    # Where it ended: the exit, or the entry of a trip that never exited.
    terminal = d.origin_code if kind == "journey.abandoned" else d.destination_code
    user = _user(d.user_id)
    return Plan(
        CLOSED[kind],
        f"{kind}.unpaid" if d.unpaid else kind,
        values,
        user,
        terminal_code=terminal or None,
        reference=d.journey_id or None,
        travelled=_travelled(kind, user, d),
    )


def _travelled(kind: str, user: uuid.UUID, d: journey_pb2.JourneyClosed) -> Travelled | None:
    """The pair a check-out completed, when the event names both ends and the time."""
    if kind != "journey.checked_out" or not (d.origin_code and d.destination_code):
        return None
    if not d.HasField("checkout_time"):
        return None
    return Travelled(user, d.origin_code, d.destination_code, _timestamp(d.checkout_time))


def _fare_updated(d: fare_pb2.FareUpdated) -> Plan:
    if not d.HasField("effective_from"):
        raise BadEvent("fare.updated without effective_from")
    values: dict[str, Value] = {
        "origin": d.origin_name or d.origin_code,
        "destination": d.destination_name or d.destination_code,
        "price": from_money(d.new_price),
        "effective": Day(_timestamp(d.effective_from)),
    }
    return Plan(
        T.FARE_UPDATE,
        "fare.updated",
        values,
        None,
        reference=str(d.fare_id) if d.fare_id else None,
        pair=(d.origin_code, d.destination_code),
    )


def _money_moved(kind: str, d: wallet_pb2.WalletMoneyMoved) -> Plan:
    values: dict[str, Value] = {
        "amount": from_money(d.amount),
        "balance": from_money(d.balance_after),
    }
    reference = d.reference or d.ledger_entry_id or None
    return Plan(T.WALLET, kind, values, _user(d.user_id), reference=reference)


def _hold_released(d: wallet_pb2.WalletHoldChanged) -> Plan | None:
    if d.release_reason != "expired":
        return None  # released by its check-out or booking: the rider hears about that
    values: dict[str, Value] = {
        "amount": from_money(d.amount),
        "available": from_money(d.available_after),
    }
    return Plan(
        T.WALLET, "wallet.hold_released", values, _user(d.user_id), reference=d.reference or None
    )


DEBT_TEMPLATES = {"suspended": "user.suspended_for_debt", "active": "user.debt_repaid"}


def _debt(d: wallet_pb2.UserStatusChanged) -> Plan | None:
    template = DEBT_TEMPLATES.get(d.new_status) if d.debt else None
    if template is None:
        return None
    available = from_money(d.available)
    values: dict[str, Value] = {"debt": -available} if available < 0 else {"balance": available}
    return Plan(T.WALLET, template, values, _user(d.user_id))


def _booking(event: CloudEvent) -> Plan | None:
    user = _first(event.data, BOOKING_USER_KEYS)
    if user is None:
        try:
            user = str(uuid.UUID(event.subject))
        except ValueError:
            return None  # nobody to tell
    reference = _first(event.data, BOOKING_REFERENCE_KEYS)
    template = event.type if render.has_template(event.type) else "booking"
    values: dict[str, Value] = {"reference": f" {reference}" if reference else ""}
    return Plan(T.BOOKING, template, values, _user(user), reference=reference)


# --- reading payloads -------------------------------------------------------------------


def _data(event: CloudEvent, message_type: type[Message]) -> Any:
    try:
        return event.data_as(message_type)
    except json_format.ParseError as exc:
        raise BadEvent(f"{event.type} data is not a {message_type.__name__}: {exc}") from None


def _user(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BadEvent(f"user id {value[:40]!r} is not a UUID") from None


def _timestamp(stamp: Timestamp) -> datetime:
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise BadEvent(f"timestamp {stamp} is out of range") from None


def _time(message: Message, field: str) -> datetime:
    if not message.HasField(field):
        raise BadEvent(f"{field} is missing")
    return _timestamp(getattr(message, field))


def _first(data: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()[:100]
    return None
