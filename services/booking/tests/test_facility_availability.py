"""Opening hours and free windows, pure: DST days are as long as they really are, bookings are
cut out on the 15-minute grid, adjacent windows merge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from services.booking.facilities.availability import (
    ceil_step,
    floor_step,
    free_windows,
    is_open,
    open_intervals,
)
from services.booking.facilities.domain import OpeningWindow
from services.booking.facilities.utilization import daily_use, local_days

BERLIN = ZoneInfo("Europe/Berlin")
ALL_DAY = [OpeningWindow(day, 0, 1440) for day in range(1, 8)]


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_a_clock_change_day_is_as_long_as_it_is() -> None:
    sunday = OpeningWindow(7, 0, 1440)
    spring = datetime(2027, 3, 28, tzinfo=BERLIN)
    autumn = datetime(2027, 10, 31, tzinfo=BERLIN)
    for day, hours in ((spring, 23), (autumn, 25)):
        ((start, end),) = open_intervals([sunday], BERLIN, day, day + timedelta(days=1, hours=6))
        assert end - start == timedelta(hours=hours)


def test_windows_of_a_day_and_across_midnight_merge() -> None:
    hours = [OpeningWindow(1, 480, 720), OpeningWindow(1, 720, 1440), OpeningWindow(2, 0, 120)]
    monday = datetime(2027, 3, 22, tzinfo=BERLIN)
    found = open_intervals(hours, BERLIN, monday, monday + timedelta(days=2))
    assert found == [(monday + timedelta(hours=8), monday + timedelta(days=1, hours=2))]
    assert is_open(hours, BERLIN, monday + timedelta(hours=23), monday + timedelta(hours=25))
    assert not is_open(hours, BERLIN, monday + timedelta(hours=7), monday + timedelta(hours=9))


def test_bookings_are_cut_out_and_short_rests_dropped() -> None:
    open_time = [(utc(2030, 1, 1, 8), utc(2030, 1, 1, 12))]
    busy = [
        (utc(2030, 1, 1, 9), utc(2030, 1, 1, 10)),
        (utc(2030, 1, 1, 10, 15), utc(2030, 1, 1, 11)),
    ]
    found = free_windows(
        open_time, busy, not_before=utc(2030, 1, 1, 8, 7), min_length=timedelta(minutes=30)
    )
    assert found == [
        (utc(2030, 1, 1, 8, 15), utc(2030, 1, 1, 9)),
        (utc(2030, 1, 1, 11), utc(2030, 1, 1, 12)),
    ]


def test_utilization_days_are_as_long_as_their_wall_clock() -> None:
    """Open all day on Sundays and 09:00-17:00 on Mondays; Berlin's autumn Sunday has 25
    hours (01:00-04:00 local lasts 4). A booking over midnight counts on each day for its open
    part only."""
    hours = [OpeningWindow(7, 0, 1440), OpeningWindow(1, 540, 1020)]
    sunday = datetime(2027, 10, 31, tzinfo=BERLIN)
    booked = [
        (sunday + timedelta(hours=1), sunday + timedelta(hours=4)),  # 01:00-04:00: 4 real hours
        (sunday + timedelta(hours=22), sunday + timedelta(days=1, hours=10)),
    ]
    days = daily_use(hours, BERLIN, sunday, sunday + timedelta(days=2), booked)
    assert [(d.day.isoformat(), d.booked_minutes, d.open_minutes) for d in days] == [
        ("2027-10-31", 240 + 120, 1500),
        ("2027-11-01", 60, 480),
    ]
    assert days[1].percent == 12.5
    assert local_days(BERLIN, sunday, sunday + timedelta(hours=1))[0][0] == sunday.date()


ZONES = [
    "UTC",
    "Asia/Jakarta",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Europe/Berlin",
    "America/St_Johns",
]


@given(
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1)),
    st.sampled_from(ZONES),
)
def test_steps_are_the_15_minute_utc_grid_whatever_the_zone_of_the_value(
    naive: datetime, zone: str
) -> None:
    value = naive.replace(tzinfo=UTC).astimezone(ZoneInfo(zone))
    floor, ceil = floor_step(value), ceil_step(value)
    assert floor.tzinfo is UTC and ceil.tzinfo is UTC
    assert floor <= value <= ceil and ceil - floor in (timedelta(0), timedelta(minutes=15))
    assert floor.minute % 15 == 0 and (floor.second, floor.microsecond) == (0, 0)
    assert (ceil == floor) is (value == floor)
