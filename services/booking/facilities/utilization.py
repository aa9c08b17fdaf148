"""Utilization per local day, pure: a facility's open minutes come from its own weekly hours
in its zone (a day of a clock change is 23 or 25 hours long, so its hours are what they are
on the wall clock), booked minutes are the confirmed bookings clipped to those hours."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from services.booking.facilities.availability import Interval, local_instant, open_intervals
from services.booking.facilities.domain import OpeningWindow

MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class DayUse:
    day: date
    booked_minutes: int
    open_minutes: int

    @property
    def percent(self) -> float:
        if not self.open_minutes:
            return 0.0
        return round(100 * self.booked_minutes / self.open_minutes, 2)


def local_days(zone: ZoneInfo, start: datetime, end: datetime) -> list[tuple[date, Interval]]:
    """The local dates from `start`'s to that of the last instant before `end`, each with its
    whole local day [midnight, next midnight) in UTC."""
    first = start.astimezone(zone).date()
    last = (end - timedelta(microseconds=1)).astimezone(zone).date()
    days = []
    day = first
    while day <= last:
        days.append((day, (local_instant(day, 0, zone), local_instant(day, 1440, zone))))
        day += timedelta(days=1)
    return days


def daily_use(
    hours: Iterable[OpeningWindow],
    zone: ZoneInfo,
    start: datetime,
    end: datetime,
    booked: Sequence[Interval],
) -> list[DayUse]:
    """Booked and open minutes of each local day of [start, end). `booked` never overlap one
    another (the exclusion constraint)."""
    hours = list(hours)
    days = local_days(zone, start, end)
    segments: list[tuple[datetime, datetime, int]] = []
    open_minutes = [0] * len(days)
    for index, (_, (midnight, next_midnight)) in enumerate(days):
        for begin, finish in open_intervals(hours, zone, midnight, next_midnight):
            segments.append((begin, finish, index))
            open_minutes[index] += _minutes(finish - begin)
    ends = [finish for _, finish, _ in segments]
    booked_minutes = [0] * len(days)
    for given_begin, given_finish in booked:
        # In UTC: aware datetimes of one zone subtract as wall-clock times.
        begin, finish = given_begin.astimezone(UTC), given_finish.astimezone(UTC)
        at = bisect.bisect_right(ends, begin)
        while at < len(segments) and segments[at][0] < finish:
            seg_begin, seg_end, index = segments[at]
            overlap = min(finish, seg_end) - max(begin, seg_begin)
            if overlap > timedelta(0):
                booked_minutes[index] += _minutes(overlap)
            at += 1
    return [DayUse(day, booked_minutes[i], open_minutes[i]) for i, (day, _) in enumerate(days)]


def _minutes(length: timedelta) -> int:
    return int(length // MINUTE)
