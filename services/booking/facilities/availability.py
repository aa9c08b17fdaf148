"""When a facility is open and free, pure and DST-safe: weekly opening hours (local wall-clock
minutes) become UTC intervals day by day through the facility's zone, so a day of a clock
change is as long as it really is; free windows are the open intervals less the bookings that
hold time, on the 15-minute grid, merged into ranges."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.booking.facilities.domain import STEP, OpeningWindow

Interval = tuple[datetime, datetime]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def open_intervals(
    hours: Iterable[OpeningWindow], zone: ZoneInfo, start: datetime, end: datetime
) -> list[Interval]:
    """The facility's open time within [start, end), in UTC, merged. A local time that a
    clock change skips counts from the instant the clock jumps to; a repeated one from its
    first occurrence."""
    by_day: dict[int, list[OpeningWindow]] = {}
    for window in hours:
        by_day.setdefault(window.weekday, []).append(window)
    day = start.astimezone(zone).date() - timedelta(days=1)
    last = end.astimezone(zone).date()
    found: list[Interval] = []
    while day <= last:
        for window in by_day.get(day.isoweekday(), ()):
            opens = local_instant(day, window.open_minute, zone)
            closes = local_instant(day, window.close_minute, zone)
            opens, closes = max(opens, start), min(closes, end)
            if opens < closes:
                found.append((opens, closes))
        day += timedelta(days=1)
    return merge(found)


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, with touching or overlapping intervals joined."""
    merged: list[Interval] = []
    for begin, finish in sorted(intervals):
        if merged and begin <= merged[-1][1]:
            if finish > merged[-1][1]:
                merged[-1] = (merged[-1][0], finish)
        else:
            merged.append((begin, finish))
    return merged


def is_open(hours: Iterable[OpeningWindow], zone: ZoneInfo, start: datetime, end: datetime) -> bool:
    """Whether [start, end) lies wholly inside the opening hours."""
    return open_intervals(hours, zone, start, end) == [(start, end)]


def free_windows(
    open_time: Sequence[Interval],
    busy: Iterable[Interval],
    *,
    not_before: datetime,
    min_length: timedelta,
) -> list[Interval]:
    """The open time not covered by `busy`, from `not_before` on, on the 15-minute grid, in
    ranges of at least `min_length`."""
    blocked = merge(busy)
    windows: list[Interval] = []
    for begin, finish in open_time:
        cursor = ceil_step(max(begin, not_before))
        finish = floor_step(finish)
        for busy_begin, busy_end in blocked:
            if busy_end <= cursor:
                continue
            if busy_begin >= finish:
                break
            _keep(windows, cursor, floor_step(busy_begin), min_length)
            cursor = max(cursor, ceil_step(busy_end))
        _keep(windows, cursor, finish, min_length)
    return windows


def ceil_step(value: datetime) -> datetime:
    floor = floor_step(value)
    return floor if floor == value else floor + STEP


def floor_step(value: datetime) -> datetime:
    """The 15-minute boundary at or before `value`, in UTC: timedelta arithmetic, exact and a
    third of the cost of a round trip through a float timestamp (a week's search does it for
    every booking in the week)."""
    floored = value - (value - EPOCH) % STEP
    return floored if floored.tzinfo is UTC else floored.astimezone(UTC)


def on_step(value: datetime) -> bool:
    return floor_step(value) == value


def _keep(
    windows: list[Interval], begin: datetime, finish: datetime, min_length: timedelta
) -> None:
    if finish - begin >= min_length and finish > begin:
        windows.append((begin, finish))


def local_instant(day: date, minute: int, zone: ZoneInfo) -> datetime:
    """Local `minute` after midnight of `day` (1440: the next midnight) as a UTC instant."""
    local = datetime.combine(day, time()) + timedelta(minutes=minute)
    return local.replace(tzinfo=zone).astimezone(UTC)
