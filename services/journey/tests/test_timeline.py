"""The card's timeline (timeline.py) and its revision (revision.py), alone: pure functions,
no services."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.journey import revision, timeline
from services.journey.config import JourneyConfig
from services.journey.domain import (
    JourneyStatus,
    Pricing,
    Settlement,
    Tap,
    TapKind,
    TapState,
    journey_id_of,
)
from services.journey.timeline import PriceBook

CONFIG = JourneyConfig()
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
USER = uuid.uuid4()
MAX_FROM = {"A": Decimal(12_000), "B": Decimal(11_000)}
FARES = {("A", "E"): Decimal(12_000), ("A", "D"): Decimal(9_000), ("B", "C"): Decimal(6_000)}
MAX_TO = {"C": Decimal(10_000), "D": Decimal(9_000), "E": Decimal(12_000)}


def tap(kind: str, terminal: str, minutes: int) -> Tap:
    return Tap(
        tap_id=uuid.uuid4(),
        kind=TapKind.CHECKIN if kind == "in" else TapKind.CHECKOUT,
        card_id="CARD00000001",
        terminal_code=terminal,
        gate_code=f"{terminal}-GATE",
        tapped_at=T0 + timedelta(minutes=minutes),
        user_id=USER,
        journey_id=None,
        state=TapState.DONE,
        response=None,
        refusal_reason=None,
        refusal_message=None,
        created_at=T0,
    )


def book_for(taps: list[Tap]) -> PriceBook:
    """A book with every price the taps can ask for."""
    book = PriceBook()
    for t in taps:
        at = t.tapped_at
        book.known[("name", t.terminal_code)] = f"Terminal {t.terminal_code}"
        if t.terminal_code in MAX_FROM:
            book.known[("max_from", t.terminal_code, at)] = MAX_FROM[t.terminal_code]
        if t.terminal_code in MAX_TO:
            book.known[("max_to", t.terminal_code, at)] = MAX_TO[t.terminal_code]
        for (o, d), price in FARES.items():
            book.known[("fare", o, d, at)] = price
    return book


def replay(taps: list[Tap], held=None) -> timeline.Replay:
    book = book_for(taps)
    # fares are asked at the check-in time: every tap's time is in the book
    out = timeline.replay(taps, held or {}, book, CONFIG, T0)
    assert not book.missing
    return out


def test_the_issues_scenario_in_tap_order_whatever_the_input_order():
    a, e, b = tap("in", "A", 0), tap("out", "E", 30), tap("in", "B", 60)
    made = replay([b, e, a])
    first, second = made.journeys[journey_id_of(a.tap_id)], made.journeys[journey_id_of(b.tap_id)]
    assert (first.status, first.exit, first.fare) == (JourneyStatus.COMPLETED, e, Decimal(12_000))
    assert (second.status, second.held) == (JourneyStatus.ACTIVE, Decimal(11_000))
    assert made.placed[e.tap_id] == first.id


def test_an_exit_without_entry_is_incomplete_and_a_repeated_entry_is_ignored():
    out, entry, again = tap("out", "C", 0), tap("in", "A", 10), tap("in", "A", 10)
    again = replace(again, tapped_at=entry.tapped_at + timedelta(seconds=20))
    made = replay([out, entry, again])
    incomplete = made.journeys[journey_id_of(out.tap_id)]
    assert (incomplete.status, incomplete.fare) == (JourneyStatus.INCOMPLETE, Decimal(10_000))
    assert again.tap_id in made.repeats and journey_id_of(again.tap_id) not in made.journeys


def test_missing_prices_are_noted_with_stand_ins():
    a, d = tap("in", "A", 0), tap("out", "D", 10)
    book = PriceBook()
    timeline.replay([a, d], {}, book, CONFIG, T0)
    assert ("max_from", "A", a.tapped_at) in book.missing
    assert ("fare", "A", "D", a.tapped_at) in book.missing


def test_a_journey_open_past_the_maximum_trip_time_is_abandoned():
    a = tap("in", "A", 0)
    made = timeline.replay([a], {}, book_for([a]), CONFIG, T0 + timedelta(hours=3))
    assert made.journeys[journey_id_of(a.tap_id)].status is JourneyStatus.ABANDONED


def test_an_exit_after_the_maximum_trip_time_finds_the_journey_abandoned():
    """As online: the sweeper abandoned the journey, the exit is one without an entry — but
    an exit the record says completed it (answered before the sweeper's round) stands."""
    a, e = tap("in", "A", 0), tap("out", "E", 150)
    made = replay([a, e])
    journey, exit_ = made.journeys[journey_id_of(a.tap_id)], made.journeys[journey_id_of(e.tap_id)]
    assert (journey.status, journey.fare) == (JourneyStatus.ABANDONED, Decimal(12_000))
    assert (exit_.status, exit_.fare) == (JourneyStatus.INCOMPLETE, Decimal(12_000))
    answered = replace(e, journey_id=journey_id_of(a.tap_id))
    made = replay([a, answered])
    assert made.journeys[journey_id_of(a.tap_id)].status is JourneyStatus.COMPLETED
    assert journey_id_of(e.tap_id) not in made.journeys


def test_revision_refunds_a_paid_abandoned_journey_completed_later():
    a, d, b = tap("in", "A", 0), tap("out", "D", 30), tap("in", "B", 60)
    before_taps = [a, b]
    on_record = recorded(replay(before_taps), paid=True)  # A abandoned: 12,000 paid
    changes = revision.changes(replay([a, d, b]), on_record, T0)
    (change,) = changes
    assert change.after.status is JourneyStatus.COMPLETED
    assert change.after.settlement is Settlement.PAID
    assert change.adjustment == Decimal(-3_000)


def test_revision_cancels_the_incomplete_journey_a_late_entry_completes():
    c, b = tap("out", "C", 40), tap("in", "B", 0)
    on_record = recorded(replay([c]), paid=True)
    changes = {ch.after.id: ch for ch in revision.changes(replay([b, c]), on_record, T0)}
    cancelled = changes[journey_id_of(c.tap_id)]
    merged = changes[journey_id_of(b.tap_id)]
    assert (cancelled.after.status, cancelled.after.pricing) == (
        JourneyStatus.CANCELLED,
        Pricing.CANCELLED,
    )
    assert cancelled.adjustment == Decimal(-10_000)
    assert (merged.after.fare_charged, merged.settles) == (Decimal(6_000), True)


def recorded(made: timeline.Replay, *, paid: bool) -> dict:
    """The journeys of a replay as they would be on record, closed ones settled."""
    rows = {}
    for change in revision.changes(made, {}, T0):
        row = change.after
        if paid and row.status is not JourneyStatus.ACTIVE:
            row = replace(row, settlement=Settlement.PAID, remaining_balance=Decimal(0))
        rows[row.id] = row
    return rows
