"""The anti-passback rules alone (services/journey/passback.py): pure, no I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from services.journey import config, domain, passback
from services.journey.domain import JourneyStatus, TapKind, Terminal
from services.journey.tests.test_domain import CFG, T0, active, recorded, tap

WINDOW = CFG.anti_passback
TERMINAL_E = Terminal("E", "Terminal Pusat", True)


def entry_at(terminal: str, offset: timedelta) -> domain.Tap:
    return replace(
        recorded(tap(TapKind.CHECKIN, terminal, f"{terminal}-ENTRY-01")), tapped_at=T0 + offset
    )


def exit_at(terminal: str, offset: timedelta) -> domain.Tap:
    return replace(
        recorded(tap(TapKind.CHECKOUT, terminal, f"{terminal}-EXIT-01")), tapped_at=T0 + offset
    )


@pytest.mark.parametrize(
    ("terminal", "offset", "repeats"),
    [
        ("A", timedelta(seconds=1), True),
        ("A", timedelta(seconds=59), True),
        ("A", -timedelta(seconds=30), True),  # a late upload placed before the check-in
        ("A", WINDOW, False),
        ("A", timedelta(minutes=5), False),
        ("D", timedelta(seconds=5), False),  # another terminal: a new entry
    ],
)
def test_an_entry_repeats_the_check_in_at_its_terminal_within_the_window(terminal, offset, repeats):
    assert passback.repeats_entry(active(at=T0), entry_at(terminal, offset), WINDOW) is repeats


def completed(at=T0) -> domain.Journey:
    journey = active(at=at - timedelta(minutes=30))
    return replace(
        journey,
        status=JourneyStatus.COMPLETED,
        checkout_terminal_code="E",
        checkout_terminal_name="Terminal Pusat",
        checkout_time=at,
    )


def incomplete(at=T0) -> domain.Journey:
    request = tap(TapKind.CHECKOUT, "E", "E-EXIT-01")
    return domain.incomplete(request, completed().user_id, at, TERMINAL_E, Decimal(12_000))


@pytest.mark.parametrize("ended", [completed, incomplete], ids=["completed", "incomplete"])
@pytest.mark.parametrize(
    ("terminal", "offset", "repeats"),
    [
        ("E", timedelta(seconds=8), True),
        ("E", -timedelta(seconds=8), True),
        ("E", WINDOW + timedelta(seconds=1), False),
        ("B", timedelta(seconds=8), False),
    ],
)
def test_an_exit_repeats_the_check_out_at_its_terminal_within_the_window(
    ended, terminal, offset, repeats
):
    assert passback.repeats_exit(ended(), exit_at(terminal, offset), WINDOW) is repeats


def test_an_abandoned_journey_is_no_check_out_to_repeat():
    abandoned = replace(completed(), status=JourneyStatus.ABANDONED)
    assert not passback.repeats_exit(abandoned, exit_at("E", timedelta(seconds=1)), WINDOW)
    assert not passback.repeats_exit(None, exit_at("E", timedelta(seconds=1)), WINDOW)


def test_the_refusals_name_their_reason_and_the_passage():
    entered, left = active(at=T0), completed()
    assert passback.already_checked_in(entered).reason == "ALREADY_CHECKED_IN"
    assert "Terminal Utara" in passback.already_checked_in(entered).message
    assert passback.already_checked_out(left).reason == "ALREADY_CHECKED_OUT"
    assert "Terminal Pusat" in passback.already_checked_out(left).message


def test_the_window_is_a_setting():
    assert config.load({}).anti_passback == timedelta(seconds=60)
    loaded = config.load({"TIKET_JOURNEY_ANTI_PASSBACK_SECONDS": "15"})
    assert loaded.anti_passback == timedelta(seconds=15)
