"""Domain records -> tiket.journey.v1 and tiket.events.v1 messages."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

from tiket.events.v1 import journey_pb2 as events_pb2
from tiket.journey.v1 import journey_pb2

from libs.errors import AlreadyExists, FailedPrecondition
from libs.money import rupiah, to_money
from libs.timestamps import to_timestamp
from services.journey import domain
from services.journey.domain import Journey, JourneyStatus, Settlement, Tap, TapState

Answer = TypeVar("Answer", journey_pb2.CheckInResponse, journey_pb2.CheckOutResponse)

STATUS_TO_PROTO = {
    JourneyStatus.ACTIVE: journey_pb2.JOURNEY_STATUS_ACTIVE,
    JourneyStatus.COMPLETED: journey_pb2.JOURNEY_STATUS_COMPLETED,
    JourneyStatus.CANCELLED: journey_pb2.JOURNEY_STATUS_CANCELLED,
    JourneyStatus.ABANDONED: journey_pb2.JOURNEY_STATUS_ABANDONED,
    JourneyStatus.INCOMPLETE: journey_pb2.JOURNEY_STATUS_INCOMPLETE,
}
STATUS_FROM_PROTO = {v: k for k, v in STATUS_TO_PROTO.items()}
SETTLEMENT_TO_PROTO = {
    Settlement.NONE: journey_pb2.SETTLEMENT_NONE,
    Settlement.PENDING: journey_pb2.SETTLEMENT_PENDING,
    Settlement.PAID: journey_pb2.SETTLEMENT_PAID,
    Settlement.UNPAID: journey_pb2.SETTLEMENT_UNPAID,
}


def journey(j: Journey) -> journey_pb2.Journey:
    message = journey_pb2.Journey(
        id=str(j.id),
        user_id=str(j.user_id),
        card_id=j.card_id,
        status=STATUS_TO_PROTO[j.status],
        settlement=SETTLEMENT_TO_PROTO[j.settlement],
        checkin_terminal_code=j.checkin_terminal_code or "",
        checkin_terminal_name=j.checkin_terminal_name or "",
        checkin_gate_code=j.checkin_gate_code or "",
        checkout_terminal_code=j.checkout_terminal_code or "",
        checkout_terminal_name=j.checkout_terminal_name or "",
        checkout_gate_code=j.checkout_gate_code or "",
        pricing=j.pricing or "",
        close_reason=j.close_reason or "",
        hold_reference=j.hold_reference or "",
    )
    _set_time(message, "checkin_time", j.checkin_time)
    _set_time(message, "checkout_time", j.checkout_time)
    _set_time(message, "closed_at", j.closed_at)
    _set_money(message, "held_amount", j.held_amount)
    _set_money(message, "fare", j.fare_charged)
    if j.journey_duration_minutes is not None:
        message.duration_minutes = j.journey_duration_minutes
    return message


def check_in_response(
    j: Journey, available: Decimal, abandoned: Journey | None
) -> journey_pb2.CheckInResponse:
    assert j.held_amount is not None
    response = journey_pb2.CheckInResponse(
        open_gate=True,
        journey=journey(j),
        held_amount=to_money(j.held_amount),
        available_balance=to_money(available),
        message=checkin_message(j.checkin_terminal_name or "", j.held_amount, available),
    )
    if abandoned is not None:
        response.abandoned_journey.CopyFrom(journey(abandoned))
    return response


def check_out_response(j: Journey) -> journey_pb2.CheckOutResponse:
    response = journey_pb2.CheckOutResponse(
        open_gate=True, journey=journey(j), message=checkout_message(j)
    )
    _set_money(response, "fare", j.fare_charged)
    _set_money(response, "remaining_balance", j.remaining_balance)
    return response


def replay(tap: Tap, answer_type: type[Answer]) -> Answer:
    """The first answer a tap got, again: its stored response, or its refusal raised (with
    the journey it was about, when it named one). A tap the gate synced offline has no
    CheckIn/CheckOut answer: its id cannot be used online again."""
    if tap.offline:
        raise AlreadyExists(
            f"tap_id {tap.tap_id} was synced as an offline tap (SyncOfflineTaps); "
            "a new tap needs a new tap_id"
        )
    if tap.state is TapState.DONE:
        assert tap.response is not None
        return answer_type.FromString(tap.response)
    refusal = domain.refusal_of(tap)
    if tap.refusal_detail is not None:
        refusal = about(refusal, journey_pb2.Journey.FromString(tap.refusal_detail))
    raise refusal


def about(refusal: FailedPrecondition, j: Journey | journey_pb2.Journey) -> FailedPrecondition:
    """`refusal` with the journey it is about packed in its details."""
    detail = journey(j) if isinstance(j, Journey) else j
    return FailedPrecondition(refusal.reason, refusal.message, [detail])


def detail_of(refusal: FailedPrecondition) -> bytes | None:
    """What a tap's record keeps of the refusal's journey (refusal_detail)."""
    return refusal.details[0].SerializeToString() if refusal.details else None


def checked_in(j: Journey, available: Decimal) -> events_pb2.JourneyCheckedIn:
    assert j.held_amount is not None
    data = events_pb2.JourneyCheckedIn(
        journey_id=str(j.id),
        user_id=str(j.user_id),
        card_id=j.card_id,
        terminal_code=j.checkin_terminal_code or "",
        terminal_name=j.checkin_terminal_name or "",
        gate_code=j.checkin_gate_code or "",
        held_amount=to_money(j.held_amount),
        available_balance=to_money(available),
        hold_reference=j.hold_reference or "",
    )
    _set_time(data, "checkin_time", j.checkin_time)
    return data


def offline_checked_in(
    tap: Tap, journey_id: uuid.UUID, terminal_name: str
) -> events_pb2.JourneyCheckedIn:
    """journey.checked_in of an entry a gate decided offline (it held nothing)."""
    data = events_pb2.JourneyCheckedIn(
        journey_id=str(journey_id),
        user_id=str(tap.user_id),
        card_id=tap.card_id,
        terminal_code=tap.terminal_code,
        terminal_name=terminal_name,
        gate_code=tap.gate_code,
        offline=True,
    )
    _set_time(data, "checkin_time", tap.tapped_at)
    return data


def closed(j: Journey) -> events_pb2.JourneyClosed:
    data = events_pb2.JourneyClosed(
        journey_id=str(j.id),
        user_id=str(j.user_id),
        card_id=j.card_id,
        status=j.status,
        origin_code=j.checkin_terminal_code or "",
        origin_name=j.checkin_terminal_name or "",
        destination_code=j.checkout_terminal_code or "",
        destination_name=j.checkout_terminal_name or "",
        pricing=j.pricing or "",
        reason=j.close_reason or j.metadata.get("unpaid_reason", ""),
        unpaid=j.settlement is Settlement.UNPAID,
    )
    _set_time(data, "checkin_time", j.checkin_time)
    _set_time(data, "checkout_time", j.checkout_time)
    _set_time(data, "closed_at", j.closed_at)
    _set_money(data, "held_amount", j.held_amount)
    _set_money(data, "fare", j.fare_charged)
    _set_money(data, "remaining_balance", j.remaining_balance)
    if j.journey_duration_minutes is not None:
        data.duration_minutes = j.journey_duration_minutes
    return data


def revised(before: Journey, after: Journey) -> events_pb2.JourneyRevised:
    return events_pb2.JourneyRevised(previous=closed(before), current=closed(after))


# --- the texts a gate shows (seed 004 §2.4) ------------------------------------------------


def checkin_message(terminal_name: str, held: Decimal, available: Decimal) -> str:
    return (
        f"Check-in di {terminal_name}. Saldo ditahan sementara {rupiah(held)}. "
        f"Saldo tersedia: {rupiah(available)}."
    )


def checkout_message(journey: Journey) -> str:
    fare = rupiah(journey.fare_charged or Decimal(0))
    balance = rupiah(journey.remaining_balance or Decimal(0))
    if journey.status is JourneyStatus.INCOMPLETE:
        return f"Tap keluar tanpa tap masuk. Denda: {fare}. Sisa saldo: {balance}."
    return (
        f"Perjalanan selesai dari {journey.checkin_terminal_name} ke "
        f"{journey.checkout_terminal_name}. Tarif: {fare}. Sisa saldo: {balance}."
    )


def _set_time(message, name: str, value: datetime | None) -> None:
    if value is not None:
        getattr(message, name).CopyFrom(to_timestamp(value))


def _set_money(message, name: str, value: Decimal | None) -> None:
    if value is not None:
        getattr(message, name).CopyFrom(to_money(value))
