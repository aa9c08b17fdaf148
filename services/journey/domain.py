"""Journeys and taps: records, states and the rules that price and close a journey. Pure:
no I/O, so every rule is unit-tested alone."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from typing import Any

from libs.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from services.journey.config import JourneyConfig

# Journey ids are derived from the tap that made the journey, so a retried tap (even after a
# crash that lost everything but the wallet hold) names the same journey and the same hold.
JOURNEY_NAMESPACE = uuid.UUID("5b0c7c1e-3a57-4a8e-9d2f-6a1f0e9c4d21")
# A check-out tapped (by the gate's clock) before its check-in is moved just after it.
CLOCK_ADJUSTMENT = timedelta(seconds=1)
# The metadata flag of a journey written by reconciliation (timeline.py).
RECONCILED = "reconciled"


class JourneyStatus(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"
    INCOMPLETE = "incomplete"


class Settlement(StrEnum):
    NONE = "none"  # active: nothing to settle yet
    PENDING = "pending"  # closed; the wallet not yet confirmed
    PAID = "paid"
    # the wallet refused a direct charge: a debt kept here. Only rows written before rides
    # were charged into the wallet's debt (services/journey/wallet.py) are unpaid.
    UNPAID = "unpaid"


class TapKind(StrEnum):
    CHECKIN = "checkin"
    CHECKOUT = "checkout"


class TapState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    REFUSED = "refused"
    EXPIRED = "expired"


class GateType(StrEnum):
    ENTRY = "entry"
    EXIT = "exit"
    BIDIRECTIONAL = "bidirectional"


class Pricing(StrEnum):
    FARE = "fare"
    SAME_TERMINAL = "same_terminal"
    SAME_TERMINAL_LATE = "same_terminal_late"
    NO_FARE = "no_fare"
    ABANDONED = "abandoned"
    NO_ENTRY_PENALTY = "no_entry_penalty"
    # A journey the card's timeline no longer makes (services/journey/timeline.py).
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Gate:
    terminal_code: str
    gate_code: str
    gate_type: GateType
    # False while staff have the gate in maintenance: its taps are refused.
    in_service: bool = True


@dataclass(frozen=True)
class Terminal:
    code: str
    name: str
    active: bool


@dataclass(frozen=True)
class Journey:
    id: uuid.UUID
    user_id: uuid.UUID
    card_id: str
    status: JourneyStatus
    settlement: Settlement
    checkin_terminal_code: str | None
    checkin_terminal_name: str | None
    checkin_gate_code: str | None
    checkin_time: datetime | None
    checkout_terminal_code: str | None
    checkout_terminal_name: str | None
    checkout_gate_code: str | None
    checkout_time: datetime | None
    held_amount: Decimal | None
    fare_charged: Decimal | None
    journey_duration_minutes: int | None
    pricing: Pricing | None
    close_reason: str | None
    hold_reference: str | None
    closing_tap_id: uuid.UUID | None
    remaining_balance: Decimal | None
    metadata: dict[str, Any]
    created_at: datetime
    closed_at: datetime | None

    @property
    def entry(self) -> Entry:
        assert self.checkin_terminal_code and self.checkin_time and self.held_amount
        return Entry(self.id, self.checkin_terminal_code, self.checkin_time, self.held_amount)


@dataclass(frozen=True)
class Entry:
    """What pricing a check-out needs of the journey it ends — read from the database, or
    from the active_trip hint before the database confirms it."""

    journey_id: uuid.UUID
    terminal_code: str
    time: datetime
    held: Decimal


@dataclass(frozen=True)
class Tap:
    tap_id: uuid.UUID
    kind: TapKind
    card_id: str
    terminal_code: str
    gate_code: str
    tapped_at: datetime
    user_id: uuid.UUID
    journey_id: uuid.UUID | None
    state: TapState
    response: bytes | None
    refusal_reason: str | None
    refusal_message: str | None
    created_at: datetime
    # A refusal's subject (a serialized tiket.journey.v1.Journey), given with it again.
    refusal_detail: bytes | None = None
    # Answered without its journey; the release of its hold is still to confirm.
    release_owed: bool = False
    # Decided by the gate offline and sent by SyncOfflineTaps (an accepted fact).
    offline: bool = False
    # What the gate reckoned offline (OfflineTap.offline_amount).
    offline_amount: Decimal | None = None


@dataclass(frozen=True)
class TapRequest:
    """A validated CheckIn or CheckOut."""

    kind: TapKind
    tap_id: uuid.UUID
    card_id: str
    terminal_code: str
    gate_code: str
    tapped_at: datetime | None  # None: the gate sent none, the server's clock decides

    @cached_property
    def journey_id(self) -> uuid.UUID:
        """The journey this tap starts (check-in) or makes when it has no entry (a SHA-1 of
        the tap id: worked out once, a check-in reads it five times)."""
        return journey_id_of(self.tap_id)


def journey_id_of(tap_id: uuid.UUID) -> uuid.UUID:
    """The id of the journey a tap starts (check-in) or makes when it has no entry."""
    return uuid.uuid5(JOURNEY_NAMESPACE, str(tap_id))


@dataclass(frozen=True)
class TapAnswer:
    """What a tap's record is given when its attempt ends: done with the response, or
    refused / expired with a reason a gate can show."""

    state: TapState
    response: bytes | None = None
    reason: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class Closing:
    """What closing a journey writes: decided here, claimed in the database before the
    wallet is touched, so a crash in between leaves a record of what to finish."""

    status: JourneyStatus
    fare: Decimal
    pricing: Pricing
    reason: str | None = None
    exit: tuple[str, str, str] | None = None  # terminal code, terminal name, gate code
    checkout_time: datetime | None = None
    closing_tap_id: uuid.UUID | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def hold_reference(journey_id: uuid.UUID) -> str:
    """The wallet hold's reference and the direct charge's key and reference."""
    return f"journey-{journey_id}"


def check_tap_time(
    tapped_at: datetime | None, now: datetime, config: JourneyConfig
) -> datetime | None:
    if tapped_at is None:
        return None
    if tapped_at > now + config.max_clock_skew:
        raise InvalidArgument.field(
            "tapped_at",
            f"is {tapped_at.isoformat()}, more than {config.max_clock_skew} after the server "
            "clock; check the gate's clock",
        )
    if tapped_at < now - config.max_tap_age:
        raise InvalidArgument.field(
            "tapped_at", f"is more than {config.max_tap_age.days} days old; reconcile it by hand"
        )
    return tapped_at


def require_in_service(gate: Gate) -> None:
    if not gate.in_service:
        raise FailedPrecondition(
            "GATE_OUT_OF_SERVICE", f"{gate.gate_code} is in maintenance: use another gate"
        )


def require_entry_gate(gate: Gate) -> None:
    require_in_service(gate)
    if gate.gate_type is GateType.EXIT:
        raise FailedPrecondition(
            "WRONG_GATE_TYPE", f"{gate.gate_code} is an exit gate: tap in at an entry gate"
        )


def require_exit_gate(gate: Gate) -> None:
    require_in_service(gate)
    if gate.gate_type is GateType.ENTRY:
        raise FailedPrecondition(
            "WRONG_GATE_TYPE", f"{gate.gate_code} is an entry gate: tap out at an exit gate"
        )


def require_open(terminal: Terminal) -> None:
    if not terminal.active:
        raise FailedPrecondition("TERMINAL_CLOSED", f"{terminal.name} is closed")


def same_tap(tap: Tap, request: TapRequest) -> Tap:
    """A retry names the same tap; the same tap id for another tap is refused."""
    first = (tap.kind, tap.card_id, tap.terminal_code, tap.gate_code)
    again = (request.kind, request.card_id, request.terminal_code, request.gate_code)
    if first != again or (request.tapped_at is not None and request.tapped_at != tap.tapped_at):
        raise AlreadyExists(
            f"tap_id {tap.tap_id} was already used for a {tap.kind} of card {tap.card_id} at "
            f"{tap.gate_code} ({tap.terminal_code}); a new tap needs a new tap_id"
        )
    return tap


def refusal_of(tap: Tap) -> FailedPrecondition:
    """The answer of a tap that was refused (or expired), to give again to a retry."""
    return FailedPrecondition(tap.refusal_reason or "TAP_REFUSED", tap.refusal_message or "")


def expired_tap(tap_id: uuid.UUID) -> FailedPrecondition:
    return FailedPrecondition(
        "TAP_EXPIRED", f"tap {tap_id} was not finished in time and was undone; tap again"
    )


def checkout_time(entry: Entry, tapped_at: datetime) -> tuple[datetime, bool]:
    """When the journey ended, and whether the gate's clock had to be corrected (seed 004:
    CHECK checkout_time > checkin_time)."""
    if tapped_at > entry.time:
        return tapped_at, False
    return entry.time + CLOCK_ADJUSTMENT, True


def checkout_price(
    entry: Entry,
    exit_terminal: str,
    exit_time: datetime,
    fare: Decimal | None,
    config: JourneyConfig,
) -> tuple[Decimal, Pricing, dict[str, Any]]:
    """(amount, rule, notes) of a completed journey. A trip never costs more than was held
    at check-in: the hold is the maximum fare then, and the fare is the one in force then."""
    held = entry.held
    if exit_terminal == entry.terminal_code:
        if exit_time - entry.time <= config.same_terminal_window:
            return min(config.same_terminal_fare, held), Pricing.SAME_TERMINAL, {}
        return held, Pricing.SAME_TERMINAL_LATE, {}
    if fare is None:
        return held, Pricing.NO_FARE, {}
    if fare > held:
        return held, Pricing.FARE, {"fare_capped_from": str(fare)}
    return fare, Pricing.FARE, {}


def completing(
    entry: Entry,
    request: TapRequest,
    tapped_at: datetime,
    exit_name: str,
    fare: Decimal | None,
    config: JourneyConfig,
) -> Closing:
    """The closing of the journey `entry` began, by the check-out `request`."""
    ended, adjusted = checkout_time(entry, tapped_at)
    amount, pricing, notes = checkout_price(entry, request.terminal_code, ended, fare, config)
    if adjusted:
        notes = {**notes, "gate_clock_adjusted_from": tapped_at.isoformat()}
    return Closing(
        status=JourneyStatus.COMPLETED,
        fare=amount,
        pricing=pricing,
        exit=(request.terminal_code, exit_name, request.gate_code),
        checkout_time=ended,
        closing_tap_id=request.tap_id,
        metadata=notes,
    )


def abandoning(journey: Journey, reason: str) -> Closing:
    """Entered and never exited: charged the maximum fare held at its check-in."""
    assert journey.held_amount is not None
    return Closing(
        status=JourneyStatus.ABANDONED,
        fare=journey.held_amount,
        pricing=Pricing.ABANDONED,
        reason=reason,
    )


def new_journey(
    request: TapRequest,
    user_id: uuid.UUID,
    tapped_at: datetime,
    terminal: Terminal,
    held: Decimal,
) -> Journey:
    """The active journey a check-in starts, holding `held` under its hold reference."""
    return _journey(
        request,
        user_id,
        status=JourneyStatus.ACTIVE,
        settlement=Settlement.NONE,
        checkin_terminal_code=terminal.code,
        checkin_terminal_name=terminal.name,
        checkin_gate_code=request.gate_code,
        checkin_time=tapped_at,
        held_amount=held,
        hold_reference=hold_reference(request.journey_id),
    )


def incomplete(
    request: TapRequest,
    user_id: uuid.UUID,
    tapped_at: datetime,
    exit_terminal: Terminal,
    penalty: Decimal,
) -> Journey:
    """Exited without an entry: a journey with no check-in, closed at once with a penalty
    still to be charged."""
    return _journey(
        request,
        user_id,
        status=JourneyStatus.INCOMPLETE,
        settlement=Settlement.PENDING,
        checkout_terminal_code=exit_terminal.code,
        checkout_terminal_name=exit_terminal.name,
        checkout_gate_code=request.gate_code,
        checkout_time=tapped_at,
        fare_charged=penalty,
        pricing=Pricing.NO_ENTRY_PENALTY,
        close_reason=f"exit at {request.gate_code} without an entry",
        closing_tap_id=request.tap_id,
        closed_at=tapped_at,
    )


def _journey(request: TapRequest, user_id: uuid.UUID, **values: Any) -> Journey:
    blank: dict[str, Any] = {name: None for name in Journey.__dataclass_fields__}
    blank.update(
        id=request.journey_id,
        user_id=user_id,
        card_id=request.card_id,
        metadata={},
        created_at=values.get("checkin_time") or values.get("checkout_time"),
    )
    return Journey(**{**blank, **values})


def settled(
    journey: Journey, settlement: Settlement, remaining: Decimal | None, notes: dict[str, Any]
) -> Journey:
    """A pending closing once its money is confirmed."""
    assert journey.settlement is Settlement.PENDING
    return replace(
        journey,
        settlement=settlement,
        remaining_balance=remaining,
        metadata={**journey.metadata, **notes},
    )


def closed_by_tap(journey: Journey) -> bool:
    """A closing asked for by a check-out tap: when the wallet refuses its money the gate
    stays shut and the journey is put back as it was (the rider tops up and taps again).
    Not a closing placed by reconciliation: offline taps are accepted facts, never undone
    (their money is charged into the wallet's debt if need be)."""
    return (
        journey.closing_tap_id is not None
        and not journey.metadata.get(RECONCILED)
        and journey.status
        in (
            JourneyStatus.COMPLETED,
            JourneyStatus.INCOMPLETE,
        )
    )
