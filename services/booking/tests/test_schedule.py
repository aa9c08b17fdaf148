"""Weekly windows -> slot instants on the clinic's wall clock, across clock changes (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from libs.errors import InvalidArgument
from services.booking.schedule import MAX_SLOTS, Window, check_windows, plan

BERLIN = ZoneInfo("Europe/Berlin")
JAKARTA = ZoneInfo("Asia/Jakarta")
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
SUNDAY = 6


def local_starts(slots, zone: ZoneInfo) -> list[str]:
    return [s.start.astimezone(zone).strftime("%a %d %H:%M %Z") for s in slots]


def test_a_weekly_series_keeps_its_local_time_across_the_spring_change() -> None:
    # Clocks go forward in Berlin on Sunday 28 March 2027, 02:00 -> 03:00.
    daily_nine = [Window(d, time(9), time(10)) for d in range(7)]
    slots, skipped = plan(date(2027, 3, 26), date(2027, 3, 29), daily_nine, 30, BERLIN, LONG_AGO)
    assert skipped == 0
    assert local_starts(slots, BERLIN) == [
        "Fri 26 09:00 CET", "Fri 26 09:30 CET",
        "Sat 27 09:00 CET", "Sat 27 09:30 CET",
        "Sun 28 09:00 CEST", "Sun 28 09:30 CEST",
        "Mon 29 09:00 CEST", "Mon 29 09:30 CEST",
    ]  # fmt: skip
    # 09:00 local is 08:00 UTC before the change and 07:00 UTC after it.
    assert slots[0].start.hour == 8 and slots[-2].start.hour == 7
    assert all(s.day == s.start.astimezone(BERLIN).date() for s in slots)


def test_slots_a_clock_change_would_cut_or_repeat_are_skipped() -> None:
    night = [Window(SUNDAY, time(1), time(4))]
    spring, skipped = plan(date(2027, 3, 28), date(2027, 3, 28), night, 60, BERLIN, LONG_AGO)
    # 02:00 does not exist on 28 March 2027: neither 01:00-02:00 nor 02:00-03:00 is made.
    assert local_starts(spring, BERLIN) == ["Sun 28 03:00 CEST"]
    assert skipped == 2
    autumn, skipped = plan(date(2027, 10, 31), date(2027, 10, 31), night, 60, BERLIN, LONG_AGO)
    # 02:00-03:00 happens twice on 31 October 2027: both slots touching it are left out.
    assert local_starts(autumn, BERLIN) == ["Sun 31 03:00 CET"]
    assert skipped == 2
    assert all(s.end - s.start == timedelta(hours=1) for s in spring + autumn)


def test_a_zone_without_dst_never_skips_and_past_starts_are_left_out() -> None:
    morning = [Window(d, time(8), time(9)) for d in range(7)]
    now = datetime(2027, 1, 4, 1, 15, tzinfo=UTC)  # Monday 08:15 in Jakarta (UTC+7)
    slots, skipped = plan(date(2027, 1, 4), date(2027, 1, 5), morning, 15, JAKARTA, now)
    assert skipped == 0
    assert local_starts(slots, JAKARTA)[0] == "Mon 04 08:30 WIB"
    assert len(slots) == 2 + 4
    assert all(s.start > now for s in slots)


def test_a_remainder_shorter_than_a_slot_is_left_out() -> None:
    slots, _ = plan(date(2027, 1, 4), date(2027, 1, 4), [Window(0, time(9), time(10, 50))],
                    30, JAKARTA, LONG_AGO)  # fmt: skip
    assert len(slots) == 3


def test_overlapping_or_empty_windows_are_refused_naming_the_window() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_windows([Window(0, time(9), time(12)), Window(0, time(11), time(13))])
    assert caught.value.violations[0].field == "windows[1]"
    with pytest.raises(InvalidArgument) as caught:
        check_windows([Window(2, time(12), time(9))])
    assert caught.value.violations[0].field == "windows[0].end"
    with pytest.raises(InvalidArgument):
        check_windows([])
    check_windows([Window(0, time(9), time(12)), Window(1, time(11), time(13))])


def test_a_schedule_past_the_slot_limit_is_refused() -> None:
    every_day = [Window(d, time(0), time(23, 59)) for d in range(7)]
    with pytest.raises(InvalidArgument) as caught:
        plan(date(2027, 1, 1), date(2027, 3, 1), every_day, 5, JAKARTA, LONG_AGO)
    assert str(MAX_SLOTS) in caught.value.message
