"""Opening hours and free windows, pure: DST days are as long as they really are, bookings are
cut out on the 15-minute grid, adjacent windows merge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from services.booking.facilities.availability import free_windows, is_open, open_intervals
from services.booking.facilities.domain import OpeningWindow

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
