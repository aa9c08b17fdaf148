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
- booking.* (tiket.events.v1.BookingChanged; booking.reservation_expired a
  ReservationChanged) and facility.* (FacilityBookingChanged): the user is data.userId (else a
  UUID subject), the reference the booking's (or reservation's) id. The text says what, where
  and when on the place's own clock (data.timeZone), and what is paid or refunded; a variant
  (`.refund`, `.payment_timeout`, `.pending`, `.moved`, `.reason`) where the change has one.
  An event whose data lacks what its template needs, or of a type without a template, gets
  the `booking` text naming the reference; one naming no user or no booking is ignored, and so is booking.confirmed (its
  booking.paid says it).

Anything else is ignored: the consumer acknowledges it (its inbox keeps the id and type).
An event of a known type whose payload cannot be read raises BadEvent: the consumer
dead-letters it at once for an operator (a retry would fail alike)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from tiket.events.v1 import booking_pb2, facility_pb2, fare_pb2, journey_pb2, wallet_pb2

from libs.events.envelope import BadEvent, CloudEvent
from libs.money import from_money
from services.notification import render
from services.notification.domain import NotificationType, Travelled
from services.notification.render import Day, Local, Value

T = NotificationType
CLOSED = {
    "journey.checked_out": T.CHECKOUT,
    "journey.abandoned": T.ABANDONED,
    "journey.incomplete": T.INCOMPLETE,
}
WALLET_MOVES = ("wallet.topped_up", "wallet.refunded")
HOLD_RELEASED = "wallet.hold_released"
TOLD_WALLET_EVENTS = (*WALLET_MOVES, HOLD_RELEASED)  # consumers.BINDINGS takes just these
RESERVATION_EXPIRED = "booking.reservation_expired"
# Announced together with booking.paid (a payment confirms the booking), whose text says both:
# one payment, one message rather than two SMS at once.
TOLD_WITH_PAID = "booking.confirmed"
PAYMENT_TIMEOUT = "payment_timeout"  # BookingChanged.reason of a booking left unpaid


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
    kind = event.type
    if kind == TOLD_WITH_PAID:
        return None
    if kind.startswith("facility."):
        d = _data(event, facility_pb2.FacilityBookingChanged)
        values, variant = _room(d)
        reference = d.booking_id
    elif kind == RESERVATION_EXPIRED:
        d = _data(event, booking_pb2.ReservationChanged)
        values, variant = _visit(d), None
        reference = d.reservation_id
    else:
        d = _data(event, booking_pb2.BookingChanged)
        values, variant = _visit(d), None
        if d.HasField("amount"):
            values["amount"] = from_money(d.amount)
        if d.HasField("previous_slot_start"):
            values["previous"] = Local(_timestamp(d.previous_slot_start), _zone(d.time_zone))
        if d.HasField("refund_amount") and (refund := from_money(d.refund_amount)) > 0:
            values["refund"], variant = refund, "refund"
        if d.reason == PAYMENT_TIMEOUT:  # cancelled by the sweeper: say why, and what to do
            variant = PAYMENT_TIMEOUT
        reference = d.booking_id
    user = _user(d.user_id) if d.user_id else _subject_user(event.subject)
    reference = reference.strip()[:100]
    if user is None or not reference:
        return None  # nobody to tell, or of nothing
    told = [f"{kind}.{variant}", kind] if variant else [kind]
    template = next((t for t in told if render.fits(t, values)), None)
    if template is None:
        template, values = "booking", {"reference": reference}
    return Plan(T.BOOKING, template, values, user, reference=reference)


def _visit(d: booking_pb2.BookingChanged | booking_pb2.ReservationChanged) -> dict[str, Value]:
    """What of a clinic visit the event carries: the service, the clinic, its start."""
    values: dict[str, Value] = {}
    if d.service_name:
        values["service"] = d.service_name
    if d.clinic_name:
        values["clinic"] = d.clinic_name
    if d.HasField("slot_start"):
        values["start"] = Local(_timestamp(d.slot_start), _zone(d.time_zone))
    return values


def _room(d: facility_pb2.FacilityBookingChanged) -> tuple[dict[str, Value], str | None]:
    """What of a facility booking the event carries, and the variant of its text: `pending`
    approval, `moved` to another time range, or the `reason` staff gave (a rejection or
    cancellation: the rider learns why, not just that)."""
    values: dict[str, Value] = {}
    if d.facility_name:
        location = d.facility_location
        values["facility"] = f"{d.facility_name} ({location})" if location else d.facility_name
    if d.title:
        values["title"] = d.title
    zone = _zone(d.time_zone)
    if d.HasField("start_time") and d.HasField("end_time"):
        values["time"] = Local(_timestamp(d.start_time), zone, _timestamp(d.end_time))
    variant = "pending" if d.status == "pending" else None
    if d.reason:
        values["reason"], variant = d.reason, "reason"
    if d.HasField("previous_start_time") and d.HasField("previous_end_time"):
        previous = Local(_timestamp(d.previous_start_time), zone, _timestamp(d.previous_end_time))
        if values.get("time") != previous:
            values["previous"], variant = previous, "moved"
    return values, variant


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


def _subject_user(subject: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(subject)
    except ValueError:
        return None


def _zone(name: str) -> ZoneInfo | None:
    """The place's time zone; None (the rider's is used) when the event names none we know."""
    try:
        return ZoneInfo(name) if name else None
    except (ZoneInfoNotFoundError, ValueError):
        return None
