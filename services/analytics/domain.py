"""Rules of the analytics service, pure: local business days and hours, the busiest hour,
the monthly partitions of analytics_events, and the report rows (days without data read as
zeros)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from libs.events.envelope import BadEvent

# The booking service's events (ARCHITECTURE.md "Events"); they have no proto yet, so they
# are counted from the envelope, with `data.amount` (google.type.Money JSON) when present.
BOOKING_TYPES = (
    "booking.reservation_expired",
    "booking.confirmed",
    "booking.paid",
    "booking.cancelled",
    "booking.rescheduled",
    "booking.no_show",
)
MAX_RANGE_DAYS = 366
HOURS = range(24)
ZERO = Decimal("0.00")


def local_bucket(instant: datetime, zone: ZoneInfo) -> tuple[date, int]:
    """The business day and hour (0-23) of `instant` on a wall clock in `zone`."""
    try:
        local = instant.astimezone(zone)
    except (OverflowError, ValueError):
        raise BadEvent(f"{instant.isoformat()} has no local day in {zone.key}") from None
    return local.date(), local.hour


def peak(counts: Mapping[int, int]) -> tuple[int | None, int]:
    """(busiest hour, its count): the earliest of the hours with the most taps; (None, 0)
    when there were none."""
    best, most = None, 0
    for hour in sorted(counts):
        if counts[hour] > most:
            best, most = hour, counts[hour]
    return best, most


def range_days(start: date, end: date) -> int:
    """How many days the inclusive range covers."""
    return (end - start).days + 1


def days(start: date, end: date) -> Iterator[date]:
    for offset in range(range_days(start, end)):
        yield start + timedelta(days=offset)


# --- partitions --------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class MonthPartition:
    """The partition of analytics_events holding one calendar month of UTC instants. UTC,
    not the business time zone, so that the partitions never depend on configuration."""

    year: int
    month: int

    @classmethod
    def of(cls, instant: datetime) -> MonthPartition:
        utc = instant.astimezone(UTC)
        return cls(utc.year, utc.month)

    @property
    def name(self) -> str:
        return f"analytics_events_{self.year:04d}_{self.month:02d}"

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime | None:
        """The first instant after the month; None after December 9999 (MAXVALUE)."""
        following = self.next()
        return None if following is None else following.start

    def next(self) -> MonthPartition | None:
        if self.month < 12:
            return MonthPartition(self.year, self.month + 1)
        return MonthPartition(self.year + 1, 1) if self.year < 9999 else None


def partitions_ahead(now: datetime, months: int) -> list[MonthPartition]:
    """The partition of `now` and the `months` after it."""
    found: list[MonthPartition] = []
    current: MonthPartition | None = MonthPartition.of(now)
    while current is not None and len(found) <= months:
        found.append(current)
        current = current.next()
    return found


# --- reports -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TerminalDay:
    day: date
    terminal_code: str
    checkins: int = 0
    checkouts: int = 0
    unique_users: int = 0
    peak_hour: int | None = None
    busiest_hour_count: int = 0
    abandoned_journeys: int = 0
    incomplete_journeys: int = 0
    unfinished_fares: Decimal = ZERO


def terminal_days(
    terminal_code: str, start: date, end: date, found: list[TerminalDay]
) -> list[TerminalDay]:
    """One row per day of the range: the stored one, or zeros."""
    by_day = {row.day: row for row in found}
    return [by_day.get(day) or TerminalDay(day, terminal_code) for day in days(start, end)]


@dataclass(frozen=True)
class RouteTotals:
    origin_code: str
    destination_code: str
    trips: int
    revenue: Decimal
    duration_minutes_total: int
    timed_trips: int

    @property
    def average_duration_minutes(self) -> float | None:
        if not self.timed_trips:
            return None
        return self.duration_minutes_total / self.timed_trips


@dataclass(frozen=True)
class BookingTotals:
    event_type: str
    events: int = 0
    amount: Decimal = ZERO


@dataclass(frozen=True)
class BookingDay:
    day: date
    types: tuple[BookingTotals, ...]


def booking_days(
    start: date, end: date, found: Mapping[tuple[date, str], BookingTotals]
) -> list[BookingDay]:
    """One row per day of the range, each with every booking type (zeros when none)."""
    return [
        BookingDay(
            day,
            tuple(found.get((day, kind)) or BookingTotals(kind) for kind in BOOKING_TYPES),
        )
        for day in days(start, end)
    ]
