"""A gate's offline taps as SyncOfflineTaps receives them, and the rules that turn one down
before it reaches a timeline. Pure, like domain.py.

An offline tap is an accepted fact: the gate opened. It is turned down (REJECTED, not
recorded, so a re-send is judged again) only when it cannot be placed at all: its card is
unknown (UNKNOWN_CARD), it is older than the oldest tap the server reconciles (TAP_EXPIRED:
reconcile it by hand), it is later than the server's clock allows (TAP_IN_FUTURE: the gate's
clock runs ahead; one such tap must not hold back the gate's other taps), its direction is
not one its gate can take (WRONG_GATE_TYPE), or its tap_id names another tap already
recorded (TAP_ID_CONFLICT). A card blocked since, a gate in
maintenance, a balance too short: none of these turns down a tap the gate has let through."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from services.journey import domain
from services.journey.config import JourneyConfig
from services.journey.domain import Gate, GateType, Tap, TapKind, TapState

UNKNOWN_CARD = "UNKNOWN_CARD"
TAP_EXPIRED = "TAP_EXPIRED"
TAP_IN_FUTURE = "TAP_IN_FUTURE"
WRONG_GATE_TYPE = "WRONG_GATE_TYPE"
TAP_ID_CONFLICT = "TAP_ID_CONFLICT"


@dataclass(frozen=True)
class OfflineTap:
    """One validated OfflineTap of the request."""

    tap_id: uuid.UUID
    card_id: str
    kind: TapKind
    tapped_at: datetime
    offline_amount: Decimal | None


@dataclass(frozen=True)
class SyncBatch:
    """A validated SyncOfflineTapsRequest: the gate and its taps, in the request's order."""

    terminal_code: str
    gate_code: str
    taps: tuple[OfflineTap, ...]


@dataclass(frozen=True)
class Rejection:
    reason: str
    message: str


def rejection(
    tap: OfflineTap, gate: Gate, now: datetime, config: JourneyConfig
) -> Rejection | None:
    """Why `tap` cannot be placed, judged without the database; None when it can."""
    if tap.tapped_at < now - config.max_tap_age:
        return Rejection(
            TAP_EXPIRED,
            f"tapped more than {config.max_tap_age.days} days ago; reconcile it by hand",
        )
    if tap.tapped_at > now + config.max_clock_skew:
        return Rejection(
            TAP_IN_FUTURE,
            f"tapped at {tap.tapped_at.isoformat()}, more than {config.max_clock_skew} after "
            "the server clock: set the gate's clock right",
        )
    wrong = GateType.EXIT if tap.kind is TapKind.CHECKIN else GateType.ENTRY
    if gate.gate_type is wrong:
        return Rejection(
            WRONG_GATE_TYPE, f"{gate.gate_code} is an {wrong} gate: it takes no {tap.kind}"
        )
    return None


def as_tap(tap: OfflineTap, batch: SyncBatch, user_id: uuid.UUID) -> Tap:
    """The tap's record (answered at once; reconcile.py stores the answer with it)."""
    return Tap(
        tap_id=tap.tap_id,
        kind=tap.kind,
        card_id=tap.card_id,
        terminal_code=batch.terminal_code,
        gate_code=batch.gate_code,
        tapped_at=tap.tapped_at,
        user_id=user_id,
        journey_id=domain.journey_id_of(tap.tap_id) if tap.kind is TapKind.CHECKIN else None,
        state=TapState.DONE,
        response=None,
        refusal_reason=None,
        refusal_message=None,
        created_at=tap.tapped_at,
        offline=True,
        offline_amount=tap.offline_amount,
    )


def same_tap(recorded: Tap, tap: Tap) -> bool:
    """Whether `recorded` is `tap` (a re-send, or the tap the gate first tried online)."""
    return (recorded.kind, recorded.card_id, recorded.terminal_code, recorded.gate_code) == (
        tap.kind,
        tap.card_id,
        tap.terminal_code,
        tap.gate_code,
    ) and (recorded.offline is False or recorded.tapped_at == tap.tapped_at)


def adoptable(recorded: Tap) -> bool:
    """A tap the gate first tried online, whose online attempt ended without opening the
    gate (refused, or expired unfinished) while the gate, offline, let the rider through:
    the offline copy makes it a fact."""
    return not recorded.offline and recorded.state in (TapState.REFUSED, TapState.EXPIRED)
