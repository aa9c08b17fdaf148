"""The RRULE of a facility series, pure (no server): which rules are taken, and their expansion
on the facility's wall clock across DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from libs.errors import FailedPrecondition, InvalidArgument
from services.booking.facilities.recurrence import (
    MAX_OCCURRENCES,
    expand,
    gap_refusal,
    occurrence_refusal,
    parse_rule,
)

BERLIN = ZoneInfo("Europe/Berlin")
LATEST = datetime(2030, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def local(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=BERLIN).astimezone(UTC)


def test_a_weekly_series_keeps_its_local_time_across_the_spring_change() -> None:
    start = local(2027, 3, 18, 9, 0)  # a Thursday; the clocks go forward on Sunday 28 March
    found = expand("FREQ=WEEKLY;COUNT=4", start, start + HOUR, BERLIN, LATEST)
    assert [o.local_start.hour for o in found] == [9, 9, 9, 9]
    assert [o.start.hour for o in found] == [8, 8, 7, 7]  # UTC
    assert [o.start.day for o in found] == [18, 25, 1, 8]
    assert all(o.exists and o.end - o.start == HOUR for o in found)


def test_a_daily_series_across_the_autumn_change_keeps_its_local_time() -> None:
    start = local(2027, 10, 30, 18, 30)
    found = expand("RRULE:FREQ=DAILY;COUNT=2", start, start + 2 * HOUR, BERLIN, LATEST)
    assert [(o.start.hour, o.start.minute) for o in found] == [(16, 30), (17, 30)]
    assert [o.local_start.hour for o in found] == [18, 18]


def test_a_start_the_clock_skips_is_marked_not_existing() -> None:
    start = local(2027, 3, 27, 2, 30)
    found = expand("FREQ=DAILY;COUNT=3", start, start + HOUR, BERLIN, LATEST)
    assert [o.exists for o in found] == [True, False, True]
    refusal = gap_refusal(found[1], BERLIN)
    assert refusal.reason == "NONEXISTENT_LOCAL_TIME" and "2027-03-28 02:30" in refusal.message


def test_until_is_inclusive_in_utc_as_a_date_and_as_a_floating_time() -> None:
    start = local(2027, 3, 18, 9, 0)
    for until in ("20270401T070000Z", "20270401", "20270401T090000"):
        found = expand(f"FREQ=WEEKLY;UNTIL={until}", start, start + HOUR, BERLIN, LATEST)
        assert [o.start.day for o in found] == [18, 25, 1], until


def test_byday_and_interval() -> None:
    start = local(2027, 3, 1, 9, 0)  # a Monday
    rule = "freq=weekly;interval=2;byday=MO,WE;count=4"
    found = expand(rule, start, start + HOUR, BERLIN, LATEST)
    assert [o.local_start.day for o in found] == [1, 3, 15, 17]


@pytest.mark.parametrize(
    "rule",
    [
        "",
        "FREQ=MONTHLY;COUNT=2",
        "FREQ=HOURLY;COUNT=2",
        "FREQ=WEEKLY",
        "FREQ=WEEKLY;COUNT=2;UNTIL=20270401T000000Z",
        f"FREQ=DAILY;COUNT={MAX_OCCURRENCES + 1}",
        "FREQ=DAILY;COUNT=0",
        "FREQ=DAILY;COUNT=-1",
        "FREQ=DAILY;COUNT=x",
        "FREQ=DAILY;INTERVAL=0;COUNT=2",
        "FREQ=DAILY;BYHOUR=3;COUNT=2",
        "FREQ=WEEKLY;BYDAY=1MO;COUNT=2",
        "FREQ=WEEKLY;COUNT=2;COUNT=3",
        "FREQ=WEEKLY;;COUNT=2",
        "DTSTART:20270101T000000\nRRULE:FREQ=DAILY;COUNT=2",
        "FREQ=DAILY;UNTIL=2027-04-01",
        "FREQ=DAILY;UNTIL=20271340",
        "nonsense",
    ],
)
def test_other_rules_are_refused_naming_rrule(rule: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_rule(rule)
        expand(rule, local(2027, 3, 18, 9), local(2027, 3, 18, 10), BERLIN, LATEST)
    assert [v.field for v in refused.value.violations] == ["rrule"]


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        ("FREQ=WEEKLY;BYDAY=MO;COUNT=2", "not the rule's first occurrence"),
        ("FREQ=DAILY;UNTIL=20270101", "UNTIL=20270101 ends before the rule's first occurrence"),
        ("FREQ=DAILY;UNTIL=20270318T075900Z", "UNTIL=20270318T075900Z ends before the rule's"),
        ("FREQ=DAILY;UNTIL=20300101", f"more than {MAX_OCCURRENCES} occurrences"),
        ("FREQ=WEEKLY;INTERVAL=52;COUNT=4", "more than two years ahead"),
    ],
)
def test_expansions_that_cannot_be_a_series_are_refused_naming_rrule(rule: str, says: str) -> None:
    start = local(2027, 3, 18, 9, 0)  # a Thursday
    with pytest.raises(InvalidArgument) as refused:
        expand(rule, start, start + HOUR, BERLIN, LATEST)
    assert [v.field for v in refused.value.violations] == ["rrule"]
    assert says in refused.value.message


def test_at_most_max_occurrences_are_taken() -> None:
    start = local(2027, 3, 18, 9, 0)
    rule = f"FREQ=WEEKLY;COUNT={MAX_OCCURRENCES}"
    assert len(expand(rule, start, start + HOUR, BERLIN, LATEST)) == MAX_OCCURRENCES


def test_an_occurrences_refusal_names_its_local_range() -> None:
    start = local(2027, 3, 18, 9, 0)
    third = expand("FREQ=WEEKLY;COUNT=4", start, start + HOUR, BERLIN, LATEST)[2]
    refusal = occurrence_refusal(3, third, BERLIN, FailedPrecondition("TIME_CONFLICT", "taken"))
    assert refusal.reason == "TIME_CONFLICT"
    assert "occurrence 3" in refusal.message
    assert "2027-04-01 09:00 to 2027-04-01 10:00 local time (Europe/Berlin)" in refusal.message
