"""Terminals, gates and effective-dated fares: records and the rules that decide a request.
Pure: no I/O, no clock (callers pass `now`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from libs.errors import AlreadyExists, InvalidArgument

# fares.price is NUMERIC(10,2) (seed 004).
MAX_PRICE = Decimal("99999999.99")
# How far in the past SetFare's effective_from may lie: clock skew between a client and us.
# More would re-price taps that were already priced at the old fare.
PAST_TOLERANCE = timedelta(seconds=5)


class GateType(StrEnum):
    ENTRY = "entry"
    EXIT = "exit"
    BIDIRECTIONAL = "bidirectional"


class GateStatus(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    MAINTENANCE = "maintenance"
    ERROR = "error"


@dataclass(frozen=True)
class Terminal:
    id: int
    code: str
    name: str
    location: str | None
    latitude: Decimal | None
    longitude: Decimal | None
    is_active: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class TerminalFields:
    """What a client sets on a terminal (create, or the masked fields of an update)."""

    name: str
    location: str | None
    latitude: Decimal | None
    longitude: Decimal | None
    is_active: bool


@dataclass(frozen=True)
class Gate:
    id: int
    terminal_code: str
    gate_code: str
    gate_type: GateType
    # What the gate last reported or staff last set.
    reported_status: GateStatus
    last_heartbeat: datetime
    created_at: datetime
    updated_at: datetime
    # Computed by the query that read the gate: the heartbeat is older than the threshold.
    stale: bool = False

    @property
    def status(self) -> GateStatus:
        """What to believe: an online gate that stopped beating is offline."""
        if self.stale and self.reported_status is GateStatus.ONLINE:
            return GateStatus.OFFLINE
        return self.reported_status


@dataclass(frozen=True)
class FareVersion:
    """The fare of one pair over [effective_from, effective_until)."""

    id: int
    origin: str
    destination: str
    price: Decimal
    effective_from: datetime
    effective_until: datetime | None
    source: str
    created_at: datetime
    is_active: bool = True

    def in_force_at(self, at: datetime) -> bool:
        return self.effective_from <= at and (
            self.effective_until is None or at < self.effective_until
        )


@dataclass(frozen=True)
class FareChange:
    """What SetFare does to a pair's timeline. Exactly one of `unchanged` and `insert` holds:
    either the request changes nothing, or a new version is inserted after `close` is ended
    at its start, or after `replace` (scheduled to start at that very instant) is retired.
    The new version ends at `until`, the start of the next version already scheduled (None:
    none is, and it runs until changed)."""

    unchanged: FareVersion | None = None
    close: FareVersion | None = None
    replace: FareVersion | None = None
    until: datetime | None = None

    @property
    def insert(self) -> bool:
        return self.unchanged is None

    @property
    def previous(self) -> FareVersion | None:
        return self.unchanged or self.close or self.replace


@dataclass(frozen=True)
class FareSet:
    """The answer to SetFare."""

    fare: FareVersion
    previous: FareVersion | None
    changed: bool


def version_at(versions: Iterable[FareVersion], at: datetime) -> FareVersion | None:
    """The active version in force at `at` (at most one: the database forbids overlaps)."""
    return next((v for v in versions if v.is_active and v.in_force_at(at)), None)


def max_fare_at(versions: Iterable[FareVersion], at: datetime) -> FareVersion | None:
    """Of the versions in force at `at` (one per destination), the dearest; ties go to the
    first destination code, so the answer does not depend on row order."""
    in_force = sorted(
        (v for v in versions if v.is_active and v.in_force_at(at)), key=lambda v: v.destination
    )
    return max(in_force, key=lambda v: v.price, default=None)  # max() keeps the first of ties


def plan_fare_change(
    versions: Sequence[FareVersion], effective_from: datetime, price: Decimal, now: datetime
) -> FareChange:
    """Decide SetFare for one pair whose active versions are `versions`.

    - effective_from more than PAST_TOLERANCE before `now` is refused: history is not
      rewritten.
    - When the version in force at effective_from already has `price`, nothing changes.
    - A version scheduled to start exactly at effective_from is replaced (a scheduled change
      corrected); otherwise the version in force then is closed at effective_from.
    - The new version runs until the next version already scheduled after effective_from
      starts: a change set before a scheduled one drops nothing, and a version scheduled by
      mistake (a far-off year) never stops the pair's fare from being changed meanwhile.
    """
    if effective_from < now - PAST_TOLERANCE:
        raise InvalidArgument.field(
            "effective_from",
            f"{effective_from.isoformat()} is in the past; a fare changes from now on "
            "(taps already priced are never re-priced)",
        )
    active = [v for v in versions if v.is_active]
    until = min(
        (v.effective_from for v in active if v.effective_from > effective_from), default=None
    )
    current = version_at(active, effective_from)
    if current is not None and current.price == price:
        return FareChange(unchanged=current)
    if current is not None and current.effective_from == effective_from:
        return FareChange(replace=current, until=until)
    return FareChange(close=current, until=until)


def check_price(price: Decimal, field: str = "price") -> Decimal:
    if price < 0:
        raise InvalidArgument.field(field, "must not be negative")
    if price > MAX_PRICE:
        raise InvalidArgument.field(field, f"must not exceed {MAX_PRICE}")
    return price


def check_pair(origin: str, destination: str) -> None:
    if origin == destination:
        raise InvalidArgument.field(
            "destination_code", f"equals origin_code {origin}: a trip ends at another terminal"
        )


def check_coordinates(latitude: Decimal | None, longitude: Decimal | None, field: str) -> None:
    if latitude is None or longitude is None:
        return
    if not -90 <= latitude <= 90:
        raise InvalidArgument.field(f"{field}.latitude", "must be between -90 and 90")
    if not -180 <= longitude <= 180:
        raise InvalidArgument.field(f"{field}.longitude", "must be between -180 and 180")


# Field of UpdateTerminal's mask -> attribute(s) of TerminalFields it sets.
UPDATABLE = {
    "name": ("name",),
    "location": ("location",),
    "coordinates": ("latitude", "longitude"),
    "active": ("is_active",),
}


def updated_fields(
    current: Terminal, wanted: TerminalFields, mask: Sequence[str]
) -> tuple[TerminalFields, list[str]]:
    """The terminal's fields after setting the masked ones from `wanted`, and the names of
    the masked fields whose value changes."""
    values = {
        "name": current.name,
        "location": current.location,
        "latitude": current.latitude,
        "longitude": current.longitude,
        "is_active": current.is_active,
    }
    changed = []
    for path in mask:
        attributes = UPDATABLE[path]
        new = {a: getattr(wanted, a) for a in attributes}
        if any(values[a] != new[a] for a in attributes):
            changed.append(path)
        values.update(new)
    return TerminalFields(**values), changed


def same_terminal(existing: Terminal, wanted: TerminalFields) -> Terminal:
    """A retried CreateTerminal returns the terminal; another terminal under the same code is
    refused."""
    if (
        existing.name != wanted.name
        or existing.location != wanted.location
        or existing.latitude != wanted.latitude
        or existing.longitude != wanted.longitude
        or existing.is_active != wanted.is_active
    ):
        raise AlreadyExists(f"terminal {existing.code} already exists ({existing.name})")
    return existing


def same_gate(existing: Gate, gate_type: GateType) -> Gate:
    if existing.gate_type is not gate_type:
        raise AlreadyExists(
            f"gate {existing.gate_code} of terminal {existing.terminal_code} already exists "
            f"as an {existing.gate_type} gate"
        )
    return existing


def same_fare_request(
    first: FareVersion,
    origin: str,
    destination: str,
    price: Decimal,
    effective_from: datetime | None,
) -> None:
    """A retried SetFare returns the first result; the same request_id for another fare (or
    another instant, when one was given) is refused."""
    if (first.origin, first.destination, first.price) != (origin, destination, price) or (
        effective_from is not None and effective_from != first.effective_from
    ):
        raise AlreadyExists(
            f"request_id already set fare {first.origin}->{first.destination} to {first.price} "
            f"from {first.effective_from.isoformat()}"
        )
