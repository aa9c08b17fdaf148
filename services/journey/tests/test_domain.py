"""The journey rules alone: pricing, the same-terminal window, penalties, gate types, tap
times, retries of a tap, and the settings that tune them."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from libs.config import ConfigError
from libs.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from services.journey import config, domain
from services.journey.domain import (
    Gate,
    GateType,
    JourneyStatus,
    Pricing,
    Settlement,
    TapKind,
    TapRequest,
    TapState,
    Terminal,
)

CFG = config.JourneyConfig()
T0 = datetime(2025, 1, 15, 8, 30, tzinfo=UTC)
TERMINAL_A = Terminal("A", "Terminal Utara", True)


def tap(kind: TapKind = TapKind.CHECKOUT, terminal: str = "E", gate: str = "E-EXIT-01", **kw):
    values = {"tap_id": uuid.uuid4(), "card_id": "CARD0001", "tapped_at": None, **kw}
    return TapRequest(
        kind, values["tap_id"], values["card_id"], terminal, gate, values["tapped_at"]
    )


def active(held: int = 12_000, at: datetime = T0) -> domain.Journey:
    entry = tap(TapKind.CHECKIN, "A", "A-ENTRY-01")
    return domain.new_journey(entry, uuid.uuid4(), at, TERMINAL_A, Decimal(held))


# --- pricing ------------------------------------------------------------------------------


def test_a_trip_costs_the_fare_in_force_at_check_in():
    price = domain.checkout_price(
        active().entry, "E", T0 + timedelta(minutes=40), Decimal(9_000), CFG
    )
    assert price == (Decimal(9_000), Pricing.FARE, {})


def test_a_trip_never_costs_more_than_was_held():
    amount, pricing, notes = domain.checkout_price(
        active().entry, "E", T0 + timedelta(minutes=40), Decimal(13_000), CFG
    )
    assert (amount, pricing) == (Decimal(12_000), Pricing.FARE)
    assert notes == {"fare_capped_from": "13000"}


def test_a_pair_without_a_fare_costs_the_held_maximum():
    price = domain.checkout_price(active().entry, "Q", T0 + timedelta(minutes=5), None, CFG)
    assert price == (Decimal(12_000), Pricing.NO_FARE, {})


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (timedelta(minutes=1), (CFG.same_terminal_fare, Pricing.SAME_TERMINAL)),
        (CFG.same_terminal_window, (CFG.same_terminal_fare, Pricing.SAME_TERMINAL)),
        (CFG.same_terminal_window + timedelta(seconds=1), (12_000, Pricing.SAME_TERMINAL_LATE)),
    ],
)
def test_exit_at_the_entry_terminal_costs_the_minimum_within_the_window(after, expected):
    amount, pricing, _ = domain.checkout_price(active().entry, "A", T0 + after, None, CFG)
    assert (amount, pricing) == (Decimal(expected[0]), expected[1])


def test_the_minimum_fare_and_window_are_settings():
    tuned = replace(CFG, same_terminal_window=timedelta(minutes=5), same_terminal_fare=Decimal(0))
    assert (
        domain.checkout_price(active().entry, "A", T0 + timedelta(minutes=4), None, tuned)[0] == 0
    )
    late = domain.checkout_price(active().entry, "A", T0 + timedelta(minutes=6), None, tuned)
    assert late[1] is Pricing.SAME_TERMINAL_LATE


def test_the_minimum_fare_never_exceeds_the_hold():
    small = active(held=1_000)
    assert domain.checkout_price(small.entry, "A", T0, None, CFG)[0] == Decimal(1_000)


def test_a_gate_clock_behind_the_entry_is_moved_after_it():
    journey = active()
    closing = domain.completing(journey.entry, tap(), T0 - timedelta(minutes=3), "Pusat", None, CFG)
    assert closing.checkout_time == T0 + domain.CLOCK_ADJUSTMENT
    assert "gate_clock_adjusted_from" in closing.metadata


def test_abandoned_journeys_are_charged_their_held_fare():
    closing = domain.abandoning(active(held=9_000), "no exit within 2:00:00")
    assert (closing.status, closing.fare, closing.pricing) == (
        JourneyStatus.ABANDONED,
        Decimal(9_000),
        Pricing.ABANDONED,
    )


def test_an_exit_without_entry_is_an_incomplete_journey_with_the_penalty():
    request = tap()
    journey = domain.incomplete(
        request, uuid.uuid4(), T0, Terminal("E", "Pusat", True), Decimal(12_000)
    )
    assert journey.id == request.journey_id
    assert (journey.status, journey.settlement) == (JourneyStatus.INCOMPLETE, Settlement.PENDING)
    assert journey.checkin_time is None and journey.hold_reference is None
    assert (journey.fare_charged, journey.pricing) == (Decimal(12_000), Pricing.NO_ENTRY_PENALTY)
    assert domain.closed_by_tap(journey)


def test_only_closings_asked_for_by_a_tap_are_undone_on_refusal():
    journey = replace(active(), status=JourneyStatus.ABANDONED, settlement=Settlement.PENDING)
    assert not domain.closed_by_tap(journey)


# --- taps ---------------------------------------------------------------------------------


def test_the_journey_id_and_hold_reference_follow_from_the_tap():
    request = tap(TapKind.CHECKIN)
    again = replace(request, tapped_at=T0)
    assert request.journey_id == again.journey_id
    assert domain.hold_reference(request.journey_id) == f"journey-{request.journey_id}"
    assert tap().journey_id != request.journey_id


@pytest.mark.parametrize(
    ("gate_type", "entry_ok", "exit_ok"),
    [
        (GateType.ENTRY, True, False),
        (GateType.EXIT, False, True),
        (GateType.BIDIRECTIONAL, True, True),
    ],
)
def test_gate_types(gate_type, entry_ok, exit_ok):
    gate = Gate("A", "A-X-01", gate_type)
    for check, ok in ((domain.require_entry_gate, entry_ok), (domain.require_exit_gate, exit_ok)):
        if ok:
            check(gate)
        else:
            with pytest.raises(FailedPrecondition) as err:
                check(gate)
            assert err.value.reason == "WRONG_GATE_TYPE"


def test_a_gate_in_maintenance_refuses_taps_of_either_direction():
    gate = Gate("D", "D-BI-01", GateType.BIDIRECTIONAL, in_service=False)
    for check in (domain.require_entry_gate, domain.require_exit_gate):
        with pytest.raises(FailedPrecondition) as err:
            check(gate)
        assert err.value.reason == "GATE_OUT_OF_SERVICE"


def test_a_closed_terminal_refuses_entry():
    with pytest.raises(FailedPrecondition) as err:
        domain.require_open(Terminal("A", "Terminal Utara", False))
    assert err.value.reason == "TERMINAL_CLOSED"


@pytest.mark.parametrize(
    ("offset", "ok"),
    [
        (timedelta(0), True),
        (CFG.max_clock_skew, True),
        (CFG.max_clock_skew + timedelta(seconds=1), False),
        (-CFG.max_tap_age + timedelta(seconds=1), True),
        (-CFG.max_tap_age - timedelta(seconds=1), False),
    ],
)
def test_tap_times_within_the_clock_skew_and_the_offline_age(offset, ok):
    if ok:
        assert domain.check_tap_time(T0 + offset, T0, CFG) == T0 + offset
    else:
        with pytest.raises(InvalidArgument) as err:
            domain.check_tap_time(T0 + offset, T0, CFG)
        assert err.value.violations[0].field == "tapped_at"
    assert domain.check_tap_time(None, T0, CFG) is None


def recorded(request: TapRequest) -> domain.Tap:
    return domain.Tap(
        request.tap_id,
        request.kind,
        request.card_id,
        request.terminal_code,
        request.gate_code,
        T0,
        uuid.uuid4(),
        None,
        TapState.PENDING,
        None,
        None,
        None,
        T0,
    )


def test_a_retry_of_a_tap_is_the_same_tap_and_another_tap_is_refused():
    request = tap()
    first = recorded(request)
    assert domain.same_tap(first, request) is first  # no tapped_at: the first clock holds
    assert domain.same_tap(first, replace(request, tapped_at=T0)) is first
    for other in (
        replace(request, tapped_at=T0 + timedelta(seconds=1)),
        replace(request, card_id="CARD0002"),
        replace(request, gate_code="E-EXIT-02"),
        replace(request, kind=TapKind.CHECKIN),
    ):
        with pytest.raises(AlreadyExists):
            domain.same_tap(first, other)


def test_a_refused_tap_gives_its_refusal_again():
    refused = replace(
        recorded(tap()), state=TapState.REFUSED, refusal_reason="X", refusal_message="m"
    )
    error = domain.refusal_of(refused)
    assert (error.reason, error.message) == ("X", "m")


# --- texts and settings -------------------------------------------------------------------


def test_settings_from_the_environment():
    loaded = config.load(
        {
            "TIKET_JOURNEY_MAX_TRIP_SECONDS": "3600",
            "TIKET_JOURNEY_SAME_TERMINAL_FARE": "3500",
            "TIKET_JOURNEY_NO_ENTRY_PENALTY": "20000.50",
            "TIKET_JOURNEY_ACTIVE_TRIP_CACHE": "off",
        }
    )
    assert loaded.max_trip == timedelta(hours=1)
    assert loaded.hold_ttl == timedelta(hours=2)
    assert loaded.same_terminal_fare == Decimal("3500.00")
    assert loaded.no_entry_penalty == Decimal("20000.50")
    assert not loaded.active_trip_cache
    assert config.load({}) == CFG


@pytest.mark.parametrize(
    "env",
    [
        {"TIKET_JOURNEY_MAX_TRIP_SECONDS": "-1"},
        {"TIKET_JOURNEY_SAME_TERMINAL_FARE": "1.001"},
        {"TIKET_JOURNEY_NO_ENTRY_PENALTY": "NaN"},
        {"TIKET_JOURNEY_ACTIVE_TRIP_CACHE": "maybe"},
        {"TIKET_JOURNEY_MAX_TRIP_SECONDS": "80000", "TIKET_JOURNEY_HOLD_MARGIN_SECONDS": "9000"},
    ],
)
def test_bad_settings_name_the_variable(env):
    with pytest.raises(ConfigError) as err:
        config.load(env)
    assert "TIKET_JOURNEY_" in str(err.value)
