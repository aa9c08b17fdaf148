"""Weekly opening windows -> slot times, read on the clinic's wall clock. Pure.

DST-safe: a wall-clock time the zone skips (clocks forward) or shows twice (clocks back) has
no single instant, so a slot starting or ending at one is left out, and so is a slot whose
real length differs from its nominal one because a clock change falls inside it. Both are
counted as skipped; zones without DST (Asia/Jakarta) never skip."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from libs.errors import InvalidArgument

MAX_DAYS = 92
MAX_SLOTS = 2000


@dataclass(frozen=True, order=True)
class Window:
    weekday: int  # date.weekday(): 0 Monday … 6 Sunday
    start: time
    end: time


@dataclass(frozen=True)
class PlannedSlot:
    day: date  # the local date
    start: datetime  # UTC
    end: datetime


def check_windows(windows: Sequence[Window], field: str = "windows") -> None:
    """Each window starts before it ends; windows of one weekday do not overlap."""
    if not windows:
        raise InvalidArgument.field(field, "at least one window is required")
    for i, window in enumerate(windows):
        if window.start >= window.end:
            raise InvalidArgument.field(f"{field}[{i}].end", "must be after start")
    ordered = sorted(enumerate(windows), key=lambda item: item[1])
    for (_, before), (i, after) in pairwise(ordered):
        if after.weekday == before.weekday and after.start < before.end:
            raise InvalidArgument.field(f"{field}[{i}]", "overlaps another window of its day")


def plan(
    first: date,
    last: date,
    windows: Sequence[Window],
    minutes: int,
    zone: ZoneInfo,
    not_before: datetime,
) -> tuple[list[PlannedSlot], int]:
    """The slots of every day of [first, last] (start order) starting after `not_before`,
    and how many were skipped for a clock change. InvalidArgument past MAX_SLOTS."""
    length = timedelta(minutes=minutes)
    planned: list[PlannedSlot] = []
    skipped = 0
    day = first
    while day <= last:
        for window in sorted(w for w in windows if w.weekday == day.weekday()):
            wall = datetime.combine(day, window.start)
            closing = datetime.combine(day, window.end)
            while wall + length <= closing:
                start, end = instant(wall, zone), instant(wall + length, zone)
                if start is None or end is None or end - start != length:
                    skipped += 1
                elif start > not_before:
                    planned.append(PlannedSlot(day, start, end))
                    if len(planned) > MAX_SLOTS:
                        raise InvalidArgument.field(
                            "windows", f"the schedule makes more than {MAX_SLOTS} slots"
                        )
                wall += length
        day += timedelta(days=1)
    return planned, skipped


def instant(wall: datetime, zone: ZoneInfo) -> datetime | None:
    """The UTC instant a naive wall-clock time in `zone` names; None when it names none or
    two (PEP 495: the two folds then have different offsets)."""
    earlier, later = wall.replace(tzinfo=zone, fold=0), wall.replace(tzinfo=zone, fold=1)
    if earlier.utcoffset() != later.utcoffset():
        return None
    return earlier.astimezone(UTC)
