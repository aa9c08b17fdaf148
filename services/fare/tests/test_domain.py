"""The pure rules: which version is in force, the max fare, what SetFare does to a timeline,
terminal updates and the believed status of a gate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from libs.errors import AlreadyExists, InvalidArgument
from services.fare import domain
from services.fare.domain import FareVersion, Gate, GateStatus, GateType, Terminal, TerminalFields

NOW = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def version(
    price: int,
    start: datetime,
    until: datetime | None = None,
    *,
    destination: str = "B",
    fare_id: int = 1,
) -> FareVersion:
    return FareVersion(fare_id, "A", destination, Decimal(price), start, until, "api", start)


TIMELINE = [
    version(5000, NOW - 48 * HOUR, NOW - HOUR, fare_id=1),
    version(5500, NOW - HOUR, NOW + HOUR, fare_id=2),
    version(6000, NOW + HOUR, fare_id=3),
]


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (NOW - 49 * HOUR, None),
        (NOW - 48 * HOUR, 1),  # the start is inside
        (NOW - HOUR, 2),  # the end is outside
        (NOW, 2),
        (NOW + HOUR, 3),
        (NOW + 1000 * HOUR, 3),
    ],
)
def test_version_at_picks_the_version_in_force(at, expected):
    found = domain.version_at(TIMELINE, at)
    assert (found.id if found else None) == expected


def test_version_at_ignores_retired_versions():
    retired = FareVersion(9, "A", "B", Decimal(1), NOW - HOUR, None, "api", NOW, is_active=False)
    assert domain.version_at([retired], NOW) is None


def test_max_fare_is_the_dearest_in_force_with_ties_to_the_first_code():
    versions = [
        version(7000, NOW - HOUR, destination="C", fare_id=1),
        version(9000, NOW - HOUR, NOW + HOUR, destination="D", fare_id=2),
        version(9000, NOW - HOUR, destination="AB", fare_id=3),
        version(20000, NOW + HOUR, destination="E", fare_id=4),
    ]
    assert domain.max_fare_at(versions, NOW).id == 3
    assert domain.max_fare_at(versions, NOW + 2 * HOUR).id == 4
    assert domain.max_fare_at(versions, NOW - 2 * HOUR) is None


def test_a_new_price_closes_the_version_in_force():
    change = domain.plan_fare_change(TIMELINE[:2], NOW + 30 * timedelta(minutes=1), Decimal(1), NOW)
    assert change.insert and change.close == TIMELINE[1] and change.previous == TIMELINE[1]


def test_the_same_price_changes_nothing():
    change = domain.plan_fare_change(TIMELINE, NOW + 2 * HOUR, Decimal(6000), NOW)
    assert not change.insert and change.unchanged == TIMELINE[2]


def test_a_version_scheduled_for_that_instant_is_replaced():
    change = domain.plan_fare_change(TIMELINE, NOW + HOUR, Decimal(6500), NOW)
    assert change.replace == TIMELINE[2] and change.close is None


def test_a_first_version_closes_nothing():
    change = domain.plan_fare_change([], NOW, Decimal(5000), NOW)
    assert change.insert and change.previous is None


def test_a_change_before_a_scheduled_version_runs_until_that_version_starts():
    change = domain.plan_fare_change(TIMELINE, NOW + 30 * timedelta(minutes=1), Decimal(1), NOW)
    assert change.close == TIMELINE[1] and change.until == TIMELINE[2].effective_from
    replaced = domain.plan_fare_change(TIMELINE, NOW - HOUR, Decimal(1), NOW - HOUR)
    assert replaced.replace == TIMELINE[1] and replaced.until == TIMELINE[2].effective_from
    last = domain.plan_fare_change(TIMELINE, NOW + 2 * HOUR, Decimal(1), NOW)
    assert last.close == TIMELINE[2] and last.until is None


def test_the_past_is_not_rewritten_beyond_the_tolerance():
    domain.plan_fare_change([], NOW - domain.PAST_TOLERANCE, Decimal(1), NOW)
    with pytest.raises(InvalidArgument) as err:
        domain.plan_fare_change([], NOW - domain.PAST_TOLERANCE - HOUR, Decimal(1), NOW)
    assert err.value.violations[0].field == "effective_from"


@pytest.mark.parametrize(("price", "ok"), [("0", True), ("99999999.99", True), ("-1", False)])
def test_price_bounds(price, ok):
    if ok:
        assert domain.check_price(Decimal(price)) == Decimal(price)
    else:
        with pytest.raises(InvalidArgument):
            domain.check_price(Decimal(price))
    with pytest.raises(InvalidArgument):
        domain.check_price(Decimal("100000000"))


def test_origin_must_differ_from_destination():
    with pytest.raises(InvalidArgument) as err:
        domain.check_pair("A", "A")
    assert err.value.violations[0].field == "destination_code"


def terminal(**fields) -> Terminal:
    values = dict(
        id=1,
        code="A",
        name="Utara",
        location=None,
        latitude=None,
        longitude=None,
        is_active=True,
        created_at=NOW,
        updated_at=NOW,
    )
    values.update(fields)
    return Terminal(**values)


def test_updated_fields_apply_only_the_mask_and_name_what_changed():
    wanted = TerminalFields("New name", "Jl. Baru", Decimal("-7.1"), Decimal("112.1"), False)
    fields, changed = domain.updated_fields(terminal(), wanted, ["coordinates", "name"])
    assert fields == TerminalFields("New name", None, Decimal("-7.1"), Decimal("112.1"), True)
    assert changed == ["coordinates", "name"]
    _, unchanged = domain.updated_fields(terminal(), wanted, ["location"])
    assert unchanged == ["location"]
    same = TerminalFields("Utara", None, None, None, True)
    assert domain.updated_fields(terminal(), same, ["name", "active"])[1] == []


def test_same_terminal_allows_a_retry_and_refuses_another_terminal():
    assert domain.same_terminal(terminal(), TerminalFields("Utara", None, None, None, True))
    with pytest.raises(AlreadyExists):
        domain.same_terminal(terminal(), TerminalFields("Other", None, None, None, True))


def test_a_silent_online_gate_is_believed_offline_but_maintenance_stays():
    gate = Gate(1, "A", "A-IN-1", GateType.ENTRY, GateStatus.ONLINE, NOW, NOW, NOW, stale=True)
    assert gate.status is GateStatus.OFFLINE
    resting = Gate(1, "A", "A-IN-1", GateType.ENTRY, GateStatus.MAINTENANCE, NOW, NOW, NOW, True)
    assert resting.status is GateStatus.MAINTENANCE
    fresh = Gate(1, "A", "A-IN-1", GateType.ENTRY, GateStatus.ONLINE, NOW, NOW, NOW, False)
    assert fresh.status is GateStatus.ONLINE


def test_same_fare_request_refuses_another_fare():
    first = version(5000, NOW)
    domain.same_fare_request(first, "A", "B", Decimal(5000), None)
    domain.same_fare_request(first, "A", "B", Decimal(5000), NOW)
    with pytest.raises(AlreadyExists):
        domain.same_fare_request(first, "A", "C", Decimal(5000), None)
    with pytest.raises(AlreadyExists):
        domain.same_fare_request(first, "A", "B", Decimal(5000), NOW + HOUR)
