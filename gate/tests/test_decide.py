"""The offline decision alone: no SQLite, no network."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gate.config import OfflineRules
from gate.decide import Card, Direction, LocalTap, Situation, decide

NOW = datetime(2025, 1, 15, 8, 30, tzinfo=UTC)
RULES = OfflineRules()
IN, OUT = Direction.CHECK_IN, Direction.CHECK_OUT


def card(**kw) -> Card:
    fields = {
        "status": "active",
        "available": Decimal(50_000),
        "exported_at": NOW - timedelta(seconds=5),
        "spent": Decimal(0),
        "pending_taps": 0,
        "last_tap": None,
    }
    return Card(**{**fields, **kw})


def at_gate(c: Card | None = None, max_fare: int | None = 12_000, age: float = 5) -> Situation:
    fare = None if max_fare is None else Decimal(max_fare)
    return Situation(c or card(), NOW - timedelta(seconds=age), fare)


def test_an_active_card_with_enough_balance_enters_holding_the_maximum_fare():
    verdict = decide(IN, at_gate(), RULES, NOW)
    assert verdict.open
    assert verdict.offline_amount == verdict.spend == Decimal(12_000)


def test_an_unknown_card_is_refused():
    situation = Situation(None, NOW, Decimal(12_000))
    assert decide(IN, situation, RULES, NOW).reason == "UNKNOWN_CARD"


@pytest.mark.parametrize("status", ["blocked", "suspended"])
def test_a_card_not_active_is_refused_both_ways(status):
    for direction in (IN, OUT):
        verdict = decide(direction, at_gate(card(status=status)), RULES, NOW)
        assert (verdict.open, verdict.reason) == (False, "USER_NOT_ACTIVE")


def test_what_this_gate_spent_offline_counts_against_the_balance():
    assert decide(IN, at_gate(card(available=Decimal(12_000))), RULES, NOW).open
    spent = card(available=Decimal(20_000), spent=Decimal(12_000))
    assert decide(IN, at_gate(spent), RULES, NOW).reason == "INSUFFICIENT_BALANCE"


def test_the_offline_floor_may_allow_a_little_debt():
    rules = replace(RULES, floor=Decimal(-5_000))
    assert decide(IN, at_gate(card(available=Decimal(8_000))), rules, NOW).open
    assert not decide(IN, at_gate(card(available=Decimal(6_000))), rules, NOW).open


def test_an_exit_needs_no_balance_and_reports_the_largest_fare_to_here():
    verdict = decide(OUT, at_gate(card(available=Decimal(0))), RULES, NOW)
    assert verdict.open
    assert verdict.offline_amount == Decimal(12_000)
    assert verdict.spend == 0


def test_no_fare_from_this_terminal_is_refused():
    assert decide(IN, at_gate(max_fare=None), RULES, NOW).reason == "NO_FARE"


def test_a_second_tap_the_same_way_within_the_window_is_refused():
    last = LocalTap(OUT, NOW - timedelta(seconds=30), Decimal(0))
    assert decide(OUT, at_gate(card(last_tap=last)), RULES, NOW).reason == "ALREADY_CHECKED_OUT"
    later = replace(last, tapped_at=NOW - timedelta(seconds=61))
    assert decide(OUT, at_gate(card(last_tap=later)), RULES, NOW).open


def test_a_local_trip_in_progress_refuses_a_second_entry_until_server_news():
    entered = LocalTap(IN, NOW - timedelta(minutes=10), Decimal(12_000))
    before = card(last_tap=entered, exported_at=NOW - timedelta(minutes=20))
    assert decide(IN, at_gate(before), RULES, NOW).reason == "ALREADY_CHECKED_IN"
    # The snapshot brought the card again after the entry: it has left somewhere else.
    news = replace(before, exported_at=NOW - timedelta(minutes=5))
    assert decide(IN, at_gate(news), RULES, NOW).open
    # A trip older than the longest one is over.
    old = replace(before, last_tap=replace(entered, tapped_at=NOW - timedelta(hours=3)))
    assert decide(IN, at_gate(old), RULES, NOW).open


def test_too_many_offline_taps_of_one_card_are_refused():
    full = card(pending_taps=RULES.max_offline_taps)
    assert decide(OUT, at_gate(full), RULES, NOW).reason == "TOO_MANY_OFFLINE_TAPS"


def test_a_snapshot_too_old_or_never_loaded_decides_nothing():
    stale = at_gate(age=RULES.snapshot_max_age.total_seconds() + 1)
    assert decide(IN, stale, RULES, NOW).reason == "SNAPSHOT_STALE"
    never = Situation(card(), None, Decimal(12_000))
    assert decide(IN, never, RULES, NOW).reason == "NO_SNAPSHOT"
