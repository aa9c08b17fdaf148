"""Input checks shared by the API layers. Each raises InvalidArgument naming the field."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from google.protobuf.message import Message
from google.type import timeofday_pb2

from libs import paging
from libs.errors import InvalidArgument

CARD_ID = re.compile(r"^[A-Z0-9]{8,20}$")
TERMINAL_CODE = re.compile(r"^[A-Z]{1,3}$")
# Unique per terminal, not across terminals: a gate is (terminal code, gate code).
GATE_CODE = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,19}$")
NOT_OUR_TOKEN = "is not a token from a previous response"
# IANA zone names: Area/Location[/Sub], UTC, Etc/GMT+7 …
TIME_ZONE = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+){0,2}$")
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50


@contextlib.contextmanager
def within(prefix: str) -> Iterator[None]:
    """Name the fields of an InvalidArgument raised inside as fields of `prefix` (a nested
    message: `first.start_time`, `taps[3].tap_id`)."""
    try:
        yield
    except InvalidArgument as exc:
        raise InvalidArgument(
            *(replace(v, field=f"{prefix}.{v.field}") for v in exc.violations)
        ) from None


def uuid_field(value: str, field: str) -> uuid.UUID:
    if not value:
        raise InvalidArgument.field(field, "is required")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument.field(field, f"{_clip(value)!r} is not a UUID") from None


def pattern_field(value: str, field: str, pattern: re.Pattern[str], hint: str) -> str:
    if not value:
        raise InvalidArgument.field(field, "is required")
    if not pattern.fullmatch(value):
        raise InvalidArgument.field(field, f"{_clip(value)!r} does not match {hint}")
    return value


def card_id_field(value: str, field: str = "card_id") -> str:
    return pattern_field(value, field, CARD_ID, "^[A-Z0-9]{8,20}$")


def terminal_code_field(value: object, field: str = "terminal_code") -> str:
    """A terminal code; `value` may come out of a decoded page token, hence any type."""
    if not isinstance(value, str):
        raise InvalidArgument.field(field, NOT_OUR_TOKEN)
    return pattern_field(value, field, TERMINAL_CODE, "^[A-Z]{1,3}$")


def gate_code_field(value: object, field: str = "gate_code") -> str:
    """A gate code; `value` may come out of a decoded page token, hence any type."""
    if not isinstance(value, str):
        raise InvalidArgument.field(field, NOT_OUR_TOKEN)
    return pattern_field(value, field, GATE_CODE, "^[A-Z0-9][A-Z0-9-]{0,19}$")


def text_field(value: str, field: str, *, max_len: int, required: bool = False) -> str | None:
    """Strip `value`; None when empty and optional."""
    value = value.strip()
    if not value:
        if required:
            raise InvalidArgument.field(field, "is required")
        return None
    if len(value) > max_len:
        raise InvalidArgument.field(field, f"is {len(value)} characters; at most {max_len}")
    if any(ord(c) < 32 for c in value):
        raise InvalidArgument.field(field, "must not contain control characters")
    return value


def required_text_field(value: str, field: str, *, max_len: int) -> str:
    """text_field for a field that must be given."""
    checked = text_field(value, field, max_len=max_len, required=True)
    assert checked is not None
    return checked


def key_field(value: str, field: str, *, max_len: int = 100) -> str:
    """An idempotency key or reference: required, printable, bounded."""
    return required_text_field(value, field, max_len=max_len)


def page_size_field(value: int, field: str = "page_size") -> int:
    if value < 0 or value > MAX_PAGE_SIZE:
        raise InvalidArgument.field(field, f"must be between 0 and {MAX_PAGE_SIZE}")
    return value or DEFAULT_PAGE_SIZE


def _clip(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[:limit] + "…"


def duration_field(message: Message, field: str) -> timedelta | None:
    """The Duration `field` of `message` if set; InvalidArgument when it is out of range."""
    if not message.HasField(field):
        return None
    try:
        return getattr(message, field).ToTimedelta()
    except (OverflowError, ValueError):
        raise InvalidArgument.field(field, "is not a valid duration") from None


def timestamp_field(message: Message, field: str) -> datetime | None:
    """The Timestamp `field` of `message` as an aware UTC datetime if set; InvalidArgument
    when it is not a valid Timestamp (years 1-9999, nanos 0-999,999,999) or outside what a
    datetime holds."""
    if not message.HasField(field):
        return None
    ts = getattr(message, field)
    invalid = InvalidArgument.field(field, "is not a valid timestamp")
    if not 0 <= ts.nanos <= 999_999_999:
        raise invalid
    try:
        value = ts.ToDatetime(tzinfo=UTC)
    except (OverflowError, ValueError):
        raise invalid from None
    if not 1 <= value.year <= 9999:
        raise invalid
    return value


def optional_uuid_field(value: str, field: str) -> uuid.UUID | None:
    """uuid_field for a field that may be left empty (None)."""
    return uuid_field(value, field) if value else None


def int_field(value: int, field: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InvalidArgument.field(field, f"must be between {low} and {high}")
    return value


def date_field(message: Message, field: str) -> date:
    """The required google.type.Date `field` of `message` as a date (a full calendar date:
    no year, month or day left zero)."""
    if not message.HasField(field):
        raise InvalidArgument.field(field, "is required")
    value = getattr(message, field)
    try:
        return date(value.year, value.month, value.day)
    except (ValueError, OverflowError):
        raise InvalidArgument.field(
            field, f"{value.year:04d}-{value.month:02d}-{value.day:02d} is not a calendar date"
        ) from None


def date_range_field(
    message: Message, first: str, last: str, *, max_days: int
) -> tuple[date, date]:
    """The inclusive range of the Date fields `first` and `last`, at most `max_days` long."""
    start, end = date_field(message, first), date_field(message, last)
    if end < start:
        raise InvalidArgument.field(last, f"must not be before {first}")
    days = (end - start).days + 1
    if days > max_days:
        raise InvalidArgument.field(last, f"the range covers {days} days; at most {max_days}")
    return start, end


def time_of_day_field(value: timeofday_pb2.TimeOfDay, field: str) -> time:
    """A google.type.TimeOfDay within one day (24:00 is refused)."""
    try:
        return time(value.hours, value.minutes, value.seconds, value.nanos // 1000)
    except (ValueError, OverflowError):
        raise InvalidArgument.field(
            field, f"{value.hours:02d}:{value.minutes:02d}:{value.seconds:02d} is not a time of day"
        ) from None


def time_zone_field(value: str, field: str = "time_zone") -> ZoneInfo:
    """An IANA time zone this machine's zone database knows, e.g. Asia/Jakarta."""
    if not value:
        raise InvalidArgument.field(field, "is required")
    if len(value) > 64 or not TIME_ZONE.fullmatch(value):
        raise InvalidArgument.field(field, f"{_clip(value)!r} is not an IANA time zone name")
    if value not in _iana_zones():
        raise InvalidArgument.field(field, f"{value!r} is not a known time zone")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidArgument.field(field, f"{value!r} is not a known time zone") from None


@cache
def _iana_zones() -> frozenset[str]:
    """Canonical IANA zone names: not the machine's `localtime`, tzdata's `Factory`, or the
    posix/ and right/ copies some systems ship."""
    return frozenset(
        name
        for name in available_timezones()
        if name not in ("Factory", "localtime") and not name.startswith(("posix", "right/"))
    )


def time_id_token_field(token: str, field: str = "page_token") -> tuple[datetime, uuid.UUID] | None:
    """The (timestamp, UUID) key of a keyset page token made by
    libs.paging.encode(timestamp.isoformat(), id); None for the first page."""
    key = paging.decode(token, 2, field)
    if key is None:
        return None
    if all(isinstance(part, str) for part in key):
        try:
            at, row_id = datetime.fromisoformat(key[0]), uuid.UUID(key[1])
        except ValueError:
            pass
        else:
            if at.tzinfo is not None:
                return at, row_id
    raise InvalidArgument.field(field, NOT_OUR_TOKEN)
