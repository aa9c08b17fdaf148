"""Reading the GTFS Fares v2 files tiket uses from a feed zip, validated, with every error
naming the file, line and field. Pure: bytes in, records out.

Files: stops.txt, areas.txt, stop_areas.txt, fare_products.txt, fare_leg_rules.txt and, when
present, timeframes.txt (https://gtfs.org/documentation/schedule/reference/). Other files and
columns are ignored. What the records mean for tiket's fare matrix is gtfs_plan.py's job.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

REQUIRED_FILES = (
    "stops.txt",
    "areas.txt",
    "stop_areas.txt",
    "fare_products.txt",
    "fare_leg_rules.txt",
)
OPTIONAL_FILES = ("timeframes.txt",)
MAX_FILE_BYTES = 8 * 1024 * 1024
# The largest slimmed feed one ImportGtfsFares takes, and so the fare service's largest
# request: the fare files of a network of some thousands of stops and a few hundred areas
# come to 2-3 MB compressed, close to gRPC's default 4 MB; files at MAX_FILE_BYTES each,
# compressed as CSV text does (3-5 times), fit.
MAX_UPLOAD_BYTES = 16 * 1024 * 1024
AMOUNT = re.compile(r"^-?\d+(\.\d+)?$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
TIME = re.compile(r"^(\d{1,2}):([0-5]\d):([0-5]\d)$")


class GtfsError(ValueError):
    """A feed tiket cannot read. `line` counts from 1 (the header); None for a whole file."""

    def __init__(
        self, file: str, message: str, *, line: int | None = None, field: str | None = None
    ) -> None:
        self.file, self.line, self.field, self.message = file, line, field, message
        where = file + (f" line {line}" if line is not None else "")
        where += f", field {field}" if field else ""
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Stop:
    stop_id: str
    stop_code: str
    line: int


@dataclass(frozen=True)
class FareProduct:
    product_id: str
    amount: Decimal
    currency: str
    media_id: str
    line: int


@dataclass(frozen=True)
class Timeframe:
    group_id: str
    start: timedelta
    end: timedelta
    line: int

    @property
    def whole_day(self) -> bool:
        return self.start == timedelta(0) and self.end == timedelta(hours=24)

    def describe(self) -> str:
        return f"{_clock(self.start)}-{_clock(self.end)}"


@dataclass(frozen=True)
class LegRule:
    line: int
    product_id: str
    from_area_id: str
    to_area_id: str
    from_timeframe: str
    to_timeframe: str
    priority: int


@dataclass
class Feed:
    stops: dict[str, Stop] = field(default_factory=dict)
    # area_id -> area_name
    areas: dict[str, str] = field(default_factory=dict)
    # area_id -> its stop ids
    stop_areas: dict[str, list[str]] = field(default_factory=dict)
    # fare_product_id -> one product per fare medium
    products: dict[str, list[FareProduct]] = field(default_factory=dict)
    rules: list[LegRule] = field(default_factory=list)
    # timeframe_group_id -> its timeframes
    timeframes: dict[str, list[Timeframe]] = field(default_factory=dict)


def read_feed(data: bytes) -> Feed:
    """The validated records of a feed zip; GtfsError at the first problem."""
    files = _members(data)
    feed = Feed()
    for row in _rows(files, "stops.txt", ["stop_id"]):
        stop_id = _unique(row, "stop_id", feed.stops)
        feed.stops[stop_id] = Stop(stop_id, row.get("stop_code"), row.line)
    for row in _rows(files, "areas.txt", ["area_id"]):
        feed.areas[_unique(row, "area_id", feed.areas)] = row.get("area_name")
    for row in _rows(files, "stop_areas.txt", ["area_id", "stop_id"]):
        area_id = _reference(row, "area_id", feed.areas, "areas.txt")
        stop_id = _reference(row, "stop_id", feed.stops, "stops.txt")
        feed.stop_areas.setdefault(area_id, []).append(stop_id)
    for row in _rows(files, "fare_products.txt", ["fare_product_id", "amount", "currency"]):
        product = _product(row)
        variants = feed.products.setdefault(product.product_id, [])
        if any(p.media_id == product.media_id for p in variants):
            raise row.error("fare_product_id", f"{product.product_id!r} is defined twice")
        variants.append(product)
    if "timeframes.txt" in files:
        for row in _rows(files, "timeframes.txt", ["timeframe_group_id"]):
            frame = _timeframe(row)
            feed.timeframes.setdefault(frame.group_id, []).append(frame)
    for row in _rows(files, "fare_leg_rules.txt", ["fare_product_id"]):
        feed.rules.append(_rule(row, feed))
    return feed


def slim(data: bytes) -> bytes:
    """The feed with only the files read_feed reads: what the CLI uploads."""
    files = _members(data)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return out.getvalue()


# --- files and rows ----------------------------------------------------------------------------


def _members(data: bytes) -> dict[str, bytes]:
    """The wanted files of the zip, by name (found at its root or in one folder)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise GtfsError("feed", "is not a zip file") from None
    found: dict[str, bytes] = {}
    with archive:
        by_name: dict[str, list[zipfile.ZipInfo]] = {}
        for info in archive.infolist():
            by_name.setdefault(info.filename.rsplit("/", 1)[-1], []).append(info)
        for name in (*REQUIRED_FILES, *OPTIONAL_FILES):
            candidates = by_name.get(name, [])
            if len(candidates) > 1:
                raise GtfsError(name, "appears more than once in the zip")
            if not candidates:
                if name in REQUIRED_FILES:
                    raise GtfsError(name, "is missing from the feed")
                continue
            found[name] = _read_member(archive, candidates[0], name)
    return found


# What zipfile raises for a member it cannot give back: corrupt or truncated data (BadZipFile,
# zlib.error, EOFError), an encrypted member (RuntimeError), an unknown compression method
# (NotImplementedError).
_UNREADABLE = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> bytes:
    """The member's bytes; GtfsError when it is too large or cannot be read. zipfile stops
    at the declared size, so a member that lies about it fails its CRC check instead of
    inflating without bound."""
    if info.file_size > MAX_FILE_BYTES:
        raise GtfsError(name, f"is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
    try:
        return archive.read(info)
    except _UNREADABLE as exc:
        raise GtfsError(name, f"cannot be read from the zip ({_why(exc)})") from None


def _why(exc: Exception) -> str:
    if isinstance(exc, RuntimeError) and "encrypted" in str(exc):
        return "it is encrypted; tiket reads unencrypted feeds only"
    if isinstance(exc, NotImplementedError):
        return "its compression method is not supported; use deflate"
    return f"corrupt data: {exc}"


@dataclass(frozen=True)
class _Row:
    file: str
    line: int
    values: dict[str, str]

    def get(self, name: str) -> str:
        return self.values.get(name, "")

    def error(self, name: str, message: str) -> GtfsError:
        return GtfsError(self.file, message, line=self.line, field=name)


def _rows(files: dict[str, bytes], name: str, required: list[str]) -> Iterator[_Row]:
    try:
        text = files[name].decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise GtfsError(name, f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise GtfsError(name, "is empty; it needs a header line") from None
    except csv.Error as exc:
        raise GtfsError(name, f"is not CSV: {exc}", line=1) from None
    for column in required:
        if column not in header:
            raise GtfsError(
                name, "required column is missing from the header", line=1, field=column
            )
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise GtfsError(name, f"is not CSV: {exc}", line=reader.line_num) from None
        if not any(v.strip() for v in values):
            continue
        if len(values) > len(header):
            raise GtfsError(
                name,
                f"has {len(values)} fields, the header names {len(header)}",
                line=reader.line_num,
            )
        row = _Row(
            name, reader.line_num, {h: v.strip() for h, v in zip(header, values, strict=False)}
        )
        for column in required:
            if not row.get(column):
                raise row.error(column, "is required")
        yield row


def _unique(row: _Row, name: str, seen: dict[str, object]) -> str:
    value = row.get(name)
    if value in seen:
        raise row.error(name, f"{value!r} is defined twice")
    return value


def _reference(row: _Row, name: str, known: dict[str, object], target: str) -> str:
    value = row.get(name)
    if value not in known:
        raise row.error(name, f"{value!r} is not in {target}")
    return value


# --- fields --------------------------------------------------------------------------------


def _product(row: _Row) -> FareProduct:
    raw = row.get("amount")
    if not AMOUNT.fullmatch(raw):
        raise row.error("amount", f"{raw!r} is not a decimal amount")
    amount = Decimal(raw)
    if amount != amount.quantize(Decimal("0.01")):
        raise row.error("amount", f"{raw!r} has more than two decimal places")
    currency = row.get("currency")
    if not CURRENCY.fullmatch(currency):
        raise row.error("currency", f"{currency!r} is not an ISO 4217 code such as IDR")
    return FareProduct(
        row.get("fare_product_id"), amount, currency, row.get("fare_media_id"), row.line
    )


def _timeframe(row: _Row) -> Timeframe:
    start, end = row.get("start_time"), row.get("end_time")
    if bool(start) != bool(end):
        missing = "end_time" if start else "start_time"
        raise row.error(missing, "start_time and end_time are set together or not at all")
    if not start:
        return Timeframe(row.get("timeframe_group_id"), timedelta(0), timedelta(hours=24), row.line)
    begins, ends = _time(row, "start_time"), _time(row, "end_time")
    if ends <= begins:
        raise row.error("end_time", f"{end} is not after start_time {start}")
    return Timeframe(row.get("timeframe_group_id"), begins, ends, row.line)


def _time(row: _Row, name: str) -> timedelta:
    raw = row.get(name)
    match = TIME.fullmatch(raw)
    if not match:
        raise row.error(name, f"{raw!r} is not a time HH:MM:SS")
    value = timedelta(hours=int(match[1]), minutes=int(match[2]), seconds=int(match[3]))
    if value > timedelta(hours=24):
        raise row.error(name, f"{raw} is after 24:00:00")
    return value


def _rule(row: _Row, feed: Feed) -> LegRule:
    _reference(row, "fare_product_id", feed.products, "fare_products.txt")
    for name in ("from_area_id", "to_area_id"):
        if row.get(name):
            _reference(row, name, feed.areas, "areas.txt")
    for name in ("from_timeframe_group_id", "to_timeframe_group_id"):
        if row.get(name):
            _reference(row, name, feed.timeframes, "timeframes.txt")
    raw_priority = row.get("rule_priority") or "0"
    if not raw_priority.isdigit():
        raise row.error("rule_priority", f"{raw_priority!r} is not a non-negative integer")
    return LegRule(
        line=row.line,
        product_id=row.get("fare_product_id"),
        from_area_id=row.get("from_area_id"),
        to_area_id=row.get("to_area_id"),
        from_timeframe=row.get("from_timeframe_group_id"),
        to_timeframe=row.get("to_timeframe_group_id"),
        priority=int(raw_priority),
    )


def _clock(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
