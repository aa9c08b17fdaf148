"""The offline decision: pure, from what the gate's SQLite knows about a card at the tap.

How money is reckoned offline: the snapshot's `available` is the card's balance minus its
holds on the server, as of the export that brought it. `spent` is what this gate's own taps
took from it that the snapshot does not show yet (offline taps not uploaded, and taps the
server learned of after that export started). A check-in reserves the maximum fare from this
terminal, as the server would hold; it must leave at least the offline floor. A check-out
needs no balance: the rider's entry already reserved the fare (online, the hold is already
out of `available`; offline at this gate, in `spent`), so asking for it again would trap a
rider with a small balance behind the exit. The check-out's `offline_amount` (what the
server compares its price with) is the fare priced from the snapshot: the largest fare to
this terminal in force at the tap, the gate not knowing where the rider entered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from gate.config import OfflineRules


class Direction(StrEnum):
    CHECK_IN = "checkin"
    CHECK_OUT = "checkout"


@dataclass(frozen=True)
class LocalTap:
    """The card's latest tap at this gate (online or offline)."""

    direction: Direction
    tapped_at: datetime
    amount: Decimal


@dataclass(frozen=True)
class Card:
    status: str  # active, blocked, suspended
    available: Decimal
    # Start of the export that brought this state: server news after a local tap.
    exported_at: datetime
    spent: Decimal
    pending_taps: int
    last_tap: LocalTap | None


@dataclass(frozen=True)
class Situation:
    """Everything the decision reads, loaded in the transaction that records it."""

    card: Card | None
    # When the users snapshot was last refreshed; None = never.
    snapshot_at: datetime | None
    # The largest fare from (check-in) or to (check-out) this terminal in force at the tap.
    max_fare: Decimal | None


@dataclass(frozen=True)
class Verdict:
    open: bool
    reason: str = ""
    # Sent to the server with the tap (OfflineTap.offline_amount).
    offline_amount: Decimal = Decimal(0)
    # What the tap takes from the card's available balance, as this gate reckons it.
    spend: Decimal = Decimal(0)


def decide(
    direction: Direction, situation: Situation, rules: OfflineRules, now: datetime
) -> Verdict:
    """OPEN or CLOSED for a tap at `now` with the network gone."""
    if situation.snapshot_at is None:
        return Verdict(False, "NO_SNAPSHOT")
    if now - situation.snapshot_at > rules.snapshot_max_age:
        return Verdict(False, "SNAPSHOT_STALE")
    card = situation.card
    if card is None:
        return Verdict(False, "UNKNOWN_CARD")
    if card.status != "active":
        return Verdict(False, "USER_NOT_ACTIVE")
    last = card.last_tap
    if (
        last is not None
        and last.direction is direction
        and abs(now - last.tapped_at) < rules.anti_passback
    ):
        return Verdict(False, _repeat(direction))
    if card.pending_taps >= rules.max_offline_taps:
        return Verdict(False, "TOO_MANY_OFFLINE_TAPS")
    if situation.max_fare is None:
        return Verdict(False, "NO_FARE")
    if direction is Direction.CHECK_OUT:
        return Verdict(True, offline_amount=situation.max_fare)
    if active_trip(card, rules.max_trip, now):
        return Verdict(False, "ALREADY_CHECKED_IN")
    if card.available - card.spent - situation.max_fare < rules.floor:
        return Verdict(False, "INSUFFICIENT_BALANCE")
    return Verdict(True, offline_amount=situation.max_fare, spend=situation.max_fare)


def active_trip(card: Card, max_trip: timedelta, now: datetime) -> bool:
    """The card checked in at this gate and has not left as far as the gate knows: no local
    check-out since, not older than a trip can be, and no server news of the card since
    (an exit elsewhere changes its balance, so the next refresh brings it)."""
    last = card.last_tap
    return (
        last is not None
        and last.direction is Direction.CHECK_IN
        and now - last.tapped_at < max_trip
        and last.tapped_at >= card.exported_at
    )


def _repeat(direction: Direction) -> str:
    return "ALREADY_CHECKED_IN" if direction is Direction.CHECK_IN else "ALREADY_CHECKED_OUT"
