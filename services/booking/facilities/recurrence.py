"""Recurring series, pure: an RFC 5545 RRULE (FREQ=DAILY or WEEKLY with COUNT or UNTIL) checked
and expanded on the facility's wall clock, so that an occurrence keeps its local start time
across DST changes; each local start then becomes a UTC instant through the zone, and one that
a clock change skips is marked as not existing."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from dateutil.rrule import rrulestr

from libs.errors import FailedPrecondition, InvalidArgument

FIELD = "rrule"
# Two years of a weekly meeting; a daily one for about five months.
MAX_OCCURRENCES = 104
MAX_INTERVAL = 365
RULE_LENGTH = 500
ALLOWED = frozenset({"FREQ", "COUNT", "UNTIL", "INTERVAL", "BYDAY", "WKST"})
WEEKDAYS = frozenset({"MO", "TU", "WE", "TH", "FR", "SA", "SU"})
UNTIL = re.compile(r"(\d{8})(?:T(\d{6})(Z?))?")


@dataclass(frozen=True)
class Occurrence:
    """One occurrence: its start on the facility's wall clock (naive) and its UTC range. A
    local start that a clock change skips does not exist; its UTC start is then the reading
    with the offset before the change (RFC 5545)."""

    local_start: datetime
    start: datetime
    end: datetime
    exists: bool

    def as_json(self, zone: ZoneInfo, reason: str) -> dict[str, str]:
        """The occurrence left out for `reason`, as the series row keeps it."""
        local = self.start.astimezone(zone) if self.exists else self.local_start
        return {
            "start_time": self.start.isoformat(),
            "end_time": self.end.isoformat(),
            "local_start": local.isoformat(),
            "reason": reason,
        }


def parse_rule(text: str) -> dict[str, str]:
    """The rule's parts by name (an "RRULE:" prefix allowed, names in any case); InvalidArgument
    naming `rrule` unless it is FREQ=DAILY|WEEKLY with exactly one of COUNT (1..104) or UNTIL,
    and otherwise only INTERVAL, BYDAY (plain weekdays) and WKST."""
    body = text.strip().upper().removeprefix("RRULE:")
    if not body or len(text) > RULE_LENGTH:
        raise _invalid(f"is required, at most {RULE_LENGTH} characters")
    parts: dict[str, str] = {}
    for part in body.split(";"):
        name, equals, value = part.partition("=")
        if not equals or not value or name in parts:
            raise _invalid(f"{part!r} is not one NAME=VALUE part of an RRULE")
        if name not in ALLOWED:
            raise _invalid(f"{name} is not supported (only {', '.join(sorted(ALLOWED))})")
        parts[name] = value
    if parts.get("FREQ") not in ("DAILY", "WEEKLY"):
        raise _invalid("FREQ must be DAILY or WEEKLY")
    if ("COUNT" in parts) == ("UNTIL" in parts):
        raise _invalid("needs exactly one of COUNT and UNTIL")
    _number(parts, "COUNT", MAX_OCCURRENCES)
    _number(parts, "INTERVAL", MAX_INTERVAL)
    for name in ("BYDAY", "WKST"):
        days = parts.get(name, "MO").split(",")
        if not set(days) <= WEEKDAYS or (name == "WKST" and len(days) != 1):
            raise _invalid(f"{name} must name weekdays (MO … SU) without a number")
    if "UNTIL" in parts and not UNTIL.fullmatch(parts["UNTIL"]):
        raise _invalid("UNTIL must be YYYYMMDD, YYYYMMDDTHHMMSS or YYYYMMDDTHHMMSSZ")
    return parts


def expand(
    text: str, start: datetime, end: datetime, zone: ZoneInfo, latest: datetime
) -> list[Occurrence]:
    """The occurrences of the rule `text` whose first is [start, end) (UTC), on the wall clock
    of `zone`: each starts at the first's local time of day and lasts as long. InvalidArgument
    naming `rrule` when its UNTIL ends before the first, when the first is not an occurrence
    of the rule, when it yields more than MAX_OCCURRENCES, or when one starts after
    `latest`."""
    parts = parse_rule(text)
    first = start.astimezone(zone).replace(tzinfo=None)
    given_until = parts.get("UNTIL")
    if given_until is not None:
        until = _until(given_until, zone)
        if until < first:
            raise _invalid(
                f"UNTIL={given_until} ends before the rule's first occurrence, "
                f"first.start_time ({first:%a %Y-%m-%d %H:%M} local)"
            )
        parts["UNTIL"] = f"{until:%Y%m%dT%H%M%S}"
    rule = ";".join(f"{name}={value}" for name, value in parts.items())
    try:
        starts = list(itertools.islice(rrulestr(rule, dtstart=first), MAX_OCCURRENCES + 1))
    except (ValueError, TypeError) as exc:
        raise _invalid(f"is not a valid RRULE: {exc}") from None
    if not starts or starts[0] != first:
        raise _invalid(
            f"first.start_time ({first:%a %Y-%m-%d %H:%M} local) is not the rule's first occurrence"
        )
    if len(starts) > MAX_OCCURRENCES:
        raise _invalid(f"yields more than {MAX_OCCURRENCES} occurrences")
    occurrences = [_occurrence(local, end - start, zone) for local in starts]
    if occurrences[-1].start > latest:
        raise _invalid(f"has occurrences after {latest:%Y-%m-%d}, more than two years ahead")
    return occurrences


def gap_refusal(occurrence: Occurrence, zone: ZoneInfo) -> FailedPrecondition:
    """NONEXISTENT_LOCAL_TIME: a clock change skips the occurrence's local start."""
    return FailedPrecondition(
        "NONEXISTENT_LOCAL_TIME",
        f"{occurrence.local_start:%Y-%m-%d %H:%M} does not exist in {zone.key}: the clock "
        "change skips it",
    )


def occurrence_refusal(
    number: int, occurrence: Occurrence, zone: ZoneInfo, refusal: FailedPrecondition
) -> FailedPrecondition:
    """`refusal` of occurrence `number` (1-based) as the series' refusal, naming the
    occurrence's local time range."""
    local = occurrence.local_start
    finish = occurrence.end.astimezone(zone)
    return FailedPrecondition(
        refusal.reason,
        f"occurrence {number} of the series, {local:%a %Y-%m-%d %H:%M} to "
        f"{finish:%Y-%m-%d %H:%M} local time ({zone.key}), cannot be booked: {refusal.message}",
    )


def _occurrence(local: datetime, length: timedelta, zone: ZoneInfo) -> Occurrence:
    start = local.replace(tzinfo=zone).astimezone(UTC)  # fold 0: before the change
    exists = start.astimezone(zone).replace(tzinfo=None) == local
    return Occurrence(local, start, start + length, exists)


def _until(value: str, zone: ZoneInfo) -> datetime:
    """UNTIL on the facility's wall clock: a UTC time converted, a floating time as it is, a
    date to the end of that day (UNTIL is inclusive)."""
    match = UNTIL.fullmatch(value)
    assert match is not None  # parse_rule checked it
    day, clock, utc = match.groups()
    try:
        if clock is None:
            return datetime.combine(date.fromisoformat(day), time.max)
        moment = datetime.strptime(day + clock, "%Y%m%d%H%M%S")
        if utc:
            return moment.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise _invalid(f"UNTIL {value} is not a valid date or time") from None
    return moment


def _number(parts: dict[str, str], name: str, highest: int) -> None:
    value = parts.get(name)
    if value is not None and not (value.isdigit() and 1 <= int(value) <= highest):
        raise _invalid(f"{name} must be 1..{highest}")


def _invalid(description: str) -> InvalidArgument:
    return InvalidArgument.field(FIELD, description)
