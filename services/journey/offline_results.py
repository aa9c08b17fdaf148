"""The answer SyncOfflineTaps gives each tap (tiket.journey.v1.OfflineTapResult).

price_change of a placed tap (what the gate corrects in its local ledger):
- a check-out: the server's price of the journey it closes minus the gate's offline_amount
  (an unset amount counts as the server's: nothing to compare); a repeated exit costs 0;
- plus every change of price its placement made: a journey already priced re-priced
  (new − old), a journey made or closed besides its own (its price), a journey cancelled
  (minus what it cost). Each change is counted once, on the batch's tap that caused it: the
  tap that now closes the journey (its check-out, or the entry that abandoned it), else the
  tap that started it, else the card's earliest new tap.
ADJUSTED when price_change is not zero or a journey already priced was re-priced."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal

from tiket.journey.v1 import journey_pb2

from libs.money import to_money
from services.journey import domain, messages, passback
from services.journey.domain import Journey, JourneyStatus, Tap, TapKind
from services.journey.offline import Rejection
from services.journey.revision import Change, charged
from services.journey.timeline import Replay, ordered

Result = journey_pb2.OfflineTapResult


def rejected(tap_id: uuid.UUID, rejection: Rejection) -> Result:
    return Result(
        tap_id=str(tap_id),
        outcome=journey_pb2.TAP_OUTCOME_REJECTED,
        reason=f"{rejection.reason}: {rejection.message}",
    )


def duplicate(tap: Tap, journey: Journey | None) -> Result:
    result = Result(tap_id=str(tap.tap_id), outcome=journey_pb2.TAP_OUTCOME_DUPLICATE)
    if journey is not None:
        result.journey.CopyFrom(messages.journey(journey))
    return result


def placed(
    new: Sequence[Tap],
    replayed: Replay,
    changed: Sequence[Change],
    journeys: Mapping[uuid.UUID, Journey],
) -> dict[uuid.UUID, Result]:
    """The answers of a card's new taps once placed; `journeys`: the card's journeys in
    scope as they now are."""
    owners = _owners(new, replayed, changed)
    results = {}
    for tap in new:
        own_id = replayed.placed.get(tap.tap_id)
        own = journeys.get(own_id) if own_id else None
        change, notes, repriced = _own_price(tap, own, tap.tap_id in replayed.repeats)
        for c in owners.get(tap.tap_id, ()):
            if own is not None and c.after.id == own.id and _priced_by_tap(tap, c):
                continue  # compared with the gate's amount above
            if c.repricing:
                change += c.repricing
                notes.append(describe(c))
                repriced = repriced or (c.before is not None and charged(c.before) > 0)
        outcome = (
            journey_pb2.TAP_OUTCOME_ADJUSTED
            if change or repriced
            else journey_pb2.TAP_OUTCOME_APPLIED
        )
        result = Result(tap_id=str(tap.tap_id), outcome=outcome, reason="; ".join(notes))
        if own is not None:
            result.journey.CopyFrom(messages.journey(own))
        if outcome == journey_pb2.TAP_OUTCOME_ADJUSTED:
            result.price_change.CopyFrom(to_money(change))
        results[tap.tap_id] = result
    return results


def _owners(
    new: Sequence[Tap], replayed: Replay, changed: Sequence[Change]
) -> dict[uuid.UUID, list[Change]]:
    """The new tap each change is counted on."""
    ids = {t.tap_id for t in new}
    starters = {domain.journey_id_of(t.tap_id): t.tap_id for t in new}
    earliest = ordered(new)[0].tap_id
    owners: dict[uuid.UUID, list[Change]] = {}
    for c in changed:
        plan = replayed.journeys.get(c.after.id)
        closer = plan.closed_by if plan is not None else None
        owner = closer if closer in ids else starters.get(c.after.id, earliest)
        owners.setdefault(owner, []).append(c)
    return owners


def _priced_by_tap(tap: Tap, c: Change) -> bool:
    """The check-out's own journey, closed now: its price is compared with the gate's."""
    closes = tap.kind is TapKind.CHECKOUT and c.after.closing_tap_id == tap.tap_id
    return closes and (c.before is None or c.before.status is JourneyStatus.ACTIVE)


def _own_price(tap: Tap, own: Journey | None, repeat: bool) -> tuple[Decimal, list[str], bool]:
    """(server price − gate's amount, notes, False) of a check-out; nothing for a check-in."""
    if tap.kind is TapKind.CHECKIN:
        notes = (
            [f"{passback.ALREADY_CHECKED_IN}: repeats a check-in, nothing held"] if repeat else []
        )
        return Decimal(0), notes, False
    if repeat:
        gate = tap.offline_amount or Decimal(0)
        return -gate, [f"{passback.ALREADY_CHECKED_OUT}: repeats an exit, nothing charged"], False
    if own is None or tap.offline_amount is None:
        return Decimal(0), [], False
    server = charged(own)
    difference = server - tap.offline_amount
    notes = (
        [f"priced {server} by the server, {tap.offline_amount} by the gate"] if difference else []
    )
    return difference, notes, False


def describe(c: Change) -> str:
    """One line of a change, for the reason of an ADJUSTED tap."""
    after = c.after
    if c.before is None or c.before.status is JourneyStatus.ACTIVE:
        return f"{after.status} journey {route(after)} priced {charged(after)}"
    before = c.before
    return (
        f"{before.status} journey {route(before)} re-priced from {charged(before)} to "
        f"{charged(after)} ({after.status} {route(after)})"
    )


def route(j: Journey) -> str:
    return f"{j.checkin_terminal_code or '?'}→{j.checkout_terminal_code or '?'}"
