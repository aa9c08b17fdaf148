"""What must change for a card's journeys on record to be those its timeline makes
(timeline.py), and the money each change moves. Pure, like domain.py.

Money of a change (rule 7 of the timeline):
- a journey that was open (or is new) and is now closed gets settlement 'pending': the usual
  closing saga (closings.py) takes its whole price — captured from its hold, or charged
  directly when there is none;
- a journey already paid whose price changes keeps 'paid' and gets an adjustment: the
  difference, refunded (< 0) or charged (> 0) under the journey's reference;
- a journey closed unpaid keeps its debt, at the new price;
- a journey is closed once: one already closed (or cancelled) that the replay leaves open
  (only a passback repeat can do that, or the sweeper's maximum trip time) stays closed, as
  abandoned.
A journey whose money is still being settled is not revised (Unsettled): the caller settles
it first."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from services.journey import domain
from services.journey.domain import Journey, JourneyStatus, Pricing, Settlement
from services.journey.timeline import Planned, Replay, abandoned

NO_LONGER = "the card's timeline no longer makes this journey"
CLOSED_ONCE = "closed before: a journey is closed once"


class Unsettled(Exception):
    """A journey to revise has its money still pending."""

    def __init__(self, journey: Journey) -> None:
        super().__init__(f"journey {journey.id} is still being settled")
        self.journey = journey


@dataclass(frozen=True)
class Change:
    before: Journey | None
    after: Journey
    # > 0: charge the rider this much more; < 0: refund; 0: nothing (a journey already paid)
    adjustment: Decimal

    @property
    def settles(self) -> bool:
        """Closed now: the closing saga takes its price."""
        return self.after.settlement is Settlement.PENDING

    @property
    def revises(self) -> bool:
        """A journey closed (and announced) before changes: journey.revised tells of it."""
        return self.before is not None and closed(self.before)

    @property
    def repricing(self) -> Decimal:
        """New price minus old (an open or new journey costs nothing yet)."""
        return charged(self.after) - (charged(self.before) if self.before else Decimal(0))


def charged(journey: Journey) -> Decimal:
    """What a journey costs the rider (paid or owed); 0 while open."""
    if journey.status is JourneyStatus.ACTIVE:
        return Decimal(0)
    return journey.fare_charged or Decimal(0)


def changes(
    replayed: Replay, on_record: Mapping[uuid.UUID, Journey], now: datetime
) -> list[Change]:
    """The changes, closings before openings (one open journey per rider at any time)."""
    out: list[Change] = []
    for journey_id in sorted(replayed.journeys.keys() | on_record.keys()):
        before = on_record.get(journey_id)
        plan = replayed.journeys.get(journey_id)
        if plan is None:
            assert before is not None
            if before.status is JourneyStatus.CANCELLED:
                continue
            after = cancelled(before, now)
        else:
            if before is not None and plan.status is JourneyStatus.ACTIVE and closed(before):
                if before.status is JourneyStatus.ABANDONED:
                    continue  # the sweeper's: it stays as it is
                plan = abandoned(plan, CLOSED_ONCE)
            if before is not None and same(before, plan):
                continue
            after = journey_of(plan, before, now)
        out.append(revised(before, after))
    return sorted(out, key=lambda c: c.after.status is JourneyStatus.ACTIVE)


def closed(journey: Journey) -> bool:
    """Closed once, closed for good: even a cancelled journey is not opened again (its hold,
    if it had one, is gone)."""
    return journey.status is not JourneyStatus.ACTIVE


def same(before: Journey, plan: Planned) -> bool:
    entry, exit_ = plan.entry, plan.exit
    return (
        before.status is plan.status
        and before.checkin_time == (entry.tapped_at if entry else None)
        and before.checkin_terminal_code == (entry.terminal_code if entry else None)
        and before.checkout_terminal_code == (exit_.terminal_code if exit_ else None)
        and before.checkout_gate_code == (exit_.gate_code if exit_ else None)
        and before.checkout_time == plan.checkout_time
        and before.closing_tap_id == plan.closing_tap_id
        and before.held_amount == plan.held
        and before.fare_charged == plan.fare
        and before.pricing == plan.pricing
    )


def journey_of(plan: Planned, before: Journey | None, now: datetime) -> Journey:
    """The row `plan` becomes (settlement and metadata set by revised())."""
    entry, exit_ = plan.entry, plan.exit
    card = (entry or exit_).card_id if (entry or exit_) else before.card_id  # type: ignore[union-attr]
    user = (entry or exit_).user_id if (entry or exit_) else before.user_id  # type: ignore[union-attr]
    active = plan.status is JourneyStatus.ACTIVE
    return Journey(
        id=plan.id,
        user_id=user,
        card_id=card,
        status=plan.status,
        settlement=Settlement.NONE,
        checkin_terminal_code=entry.terminal_code if entry else None,
        checkin_terminal_name=plan.entry_name if entry else None,
        checkin_gate_code=entry.gate_code if entry else None,
        checkin_time=entry.tapped_at if entry else None,
        checkout_terminal_code=exit_.terminal_code if exit_ else None,
        checkout_terminal_name=plan.exit_name if exit_ else None,
        checkout_gate_code=exit_.gate_code if exit_ else None,
        checkout_time=plan.checkout_time,
        held_amount=plan.held,
        fare_charged=None if active else plan.fare,
        journey_duration_minutes=None,
        pricing=None if active else plan.pricing,
        close_reason=plan.reason,
        hold_reference=domain.hold_reference(plan.id) if entry else None,
        closing_tap_id=plan.closing_tap_id,
        remaining_balance=None,
        metadata={**(before.metadata if before else {}), **plan.notes},
        created_at=before.created_at if before else now,
        closed_at=None if active else (before and before.closed_at) or now,
    )


def cancelled(before: Journey, now: datetime) -> Journey:
    """A journey the timeline no longer makes: kept as it was, cancelled, fare 0."""
    return replace(
        before,
        status=JourneyStatus.CANCELLED,
        fare_charged=Decimal(0),
        pricing=Pricing.CANCELLED,
        close_reason=NO_LONGER,
        closing_tap_id=None,
        closed_at=before.closed_at or now,
    )


def revised(before: Journey | None, after: Journey) -> Change:
    """`after` with its settlement, and the adjustment its money needs."""
    metadata = {**after.metadata, domain.RECONCILED: True}
    adjustment = Decimal(0)
    if after.status is JourneyStatus.ACTIVE:
        settlement, remaining = Settlement.NONE, None
    elif before is None or before.status is JourneyStatus.ACTIVE:
        settlement, remaining = Settlement.PENDING, None
    elif before.settlement is Settlement.PAID:
        settlement, remaining = Settlement.PAID, before.remaining_balance
        adjustment = charged(after) - charged(before)
        if adjustment:
            metadata["repriced_from"] = str(charged(before))
    elif before.settlement is Settlement.UNPAID:
        settlement, remaining = Settlement.UNPAID, None
    else:
        raise Unsettled(before)
    if before is not None and before.settlement is Settlement.PENDING:
        raise Unsettled(before)
    after = replace(after, settlement=settlement, remaining_balance=remaining, metadata=metadata)
    return Change(before, after, adjustment)
