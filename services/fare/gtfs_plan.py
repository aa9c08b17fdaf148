"""What a GTFS Fares v2 feed means for tiket's fare matrix: its areas mapped to terminals, its
leg rules resolved to one price per origin–destination pair, and every rule left out listed
with the reason. Pure.

Area -> terminal, first match wins:
1. `area_terminals` given with the import (area_id -> terminal code);
2. the area_id is a terminal code (`A`);
3. the area's stops (stop_areas.txt) carry exactly one terminal code as their stop_code.

A rule becomes a fare when it names both areas, both map to different terminals, its product
has one price in IDR that tiket can store, and it has no time-of-day restriction (a timeframe
group covering the whole day is no restriction: tiket has one fare per pair at a time). Of
several rules for one pair the highest rule_priority wins; rules tied at the top with
different prices are all left out.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal

from libs.errors import InvalidArgument
from services.fare.domain import MAX_PRICE
from services.fare.gtfs import Feed, LegRule

CURRENCY = "IDR"


@dataclass(frozen=True)
class PlannedFare:
    origin: str
    destination: str
    price: Decimal
    rule: str  # "fare_leg_rules.txt:3"


@dataclass(frozen=True)
class Skip:
    rule: str
    reason: str


@dataclass(frozen=True)
class Plan:
    fares: list[PlannedFare]
    skipped: list[Skip]
    # area_id -> terminal code, for the areas that map to one
    areas: dict[str, str]


def plan(feed: Feed, terminals: Collection[str], explicit: Mapping[str, str]) -> Plan:
    """Resolve `feed` against the terminal codes that exist."""
    areas = map_areas(feed, terminals, explicit)
    skipped: list[Skip] = []
    candidates: dict[tuple[str, str], list[tuple[LegRule, Decimal]]] = {}
    for rule in feed.rules:
        reason, pair, price = _resolve(rule, feed, areas)
        if reason is not None:
            skipped.append(Skip(_tag(rule), reason))
        else:
            candidates.setdefault(pair, []).append((rule, price))
    fares = []
    for (origin, destination), found in sorted(candidates.items()):
        top = max(rule.priority for rule, _ in found)
        winners = [(r, p) for r, p in found if r.priority == top]
        prices = {p for _, p in winners}
        if len(prices) > 1:
            lines = ", ".join(_tag(r) for r, _ in winners)
            for rule, _ in winners:
                skipped.append(
                    Skip(_tag(rule), f"conflicting prices for {origin}->{destination}: {lines}")
                )
        else:
            first = winners[0][0]
            fares.append(PlannedFare(origin, destination, prices.pop(), _tag(first)))
            for rule, _ in winners[1:]:
                skipped.append(Skip(_tag(rule), f"same fare as {_tag(first)}"))
        for rule, _ in found:
            if rule.priority < top:
                skipped.append(Skip(_tag(rule), f"overridden by a rule with rule_priority {top}"))
    skipped.sort(key=by_line)
    return Plan(fares, skipped, areas)


def by_line(skip: Skip) -> tuple[str, int]:
    """Sort key: file, then line number."""
    file, _, line = skip.rule.partition(":")
    return file, int(line)


def map_areas(
    feed: Feed, terminals: Collection[str], explicit: Mapping[str, str]
) -> dict[str, str]:
    for area_id, code in explicit.items():
        if area_id not in feed.areas:
            raise InvalidArgument.field(
                f"area_terminals[{area_id}]", "the feed has no such area in areas.txt"
            )
        if code not in terminals:
            raise InvalidArgument.field(f"area_terminals[{area_id}]", f"no terminal {code!r}")
    mapped = {}
    for area_id in feed.areas:
        if area_id in explicit:
            mapped[area_id] = explicit[area_id]
        elif area_id in terminals:
            mapped[area_id] = area_id
        else:
            codes = {feed.stops[s].stop_code for s in feed.stop_areas.get(area_id, [])}
            known = sorted(codes & set(terminals))
            if len(known) == 1:
                mapped[area_id] = known[0]
    return mapped


def _resolve(
    rule: LegRule, feed: Feed, areas: dict[str, str]
) -> tuple[str | None, tuple[str, str], Decimal]:
    """(reason to skip, or None; the pair; the price)."""
    nothing = ("", ""), Decimal(0)
    if not rule.from_area_id or not rule.to_area_id:
        side = "from_area_id" if not rule.from_area_id else "to_area_id"
        return f"no {side}: tiket prices trips between two named areas", *nothing
    for group in (rule.from_timeframe, rule.to_timeframe):
        frames = feed.timeframes.get(group, [])
        if group and not any(f.whole_day for f in frames):
            hours = ", ".join(f.describe() for f in frames)
            return (
                f"time-of-day fare (timeframe group {group}: {hours}); tiket has one fare "
                "per pair at a time",
                *nothing,
            )
    for area_id in (rule.from_area_id, rule.to_area_id):
        if area_id not in areas:
            return (
                f"area {area_id!r} maps to no terminal (its id is no terminal code, none of "
                "its stops has one as stop_code, and area_terminals does not name it)",
                *nothing,
            )
    origin, destination = areas[rule.from_area_id], areas[rule.to_area_id]
    if origin == destination:
        return f"both areas map to terminal {origin}: a trip ends at another terminal", *nothing
    products = feed.products[rule.product_id]
    currencies = sorted({p.currency for p in products})
    if currencies != [CURRENCY]:
        return (
            f"fare product {rule.product_id!r} is priced in {', '.join(currencies)}; "
            f"tiket prices in {CURRENCY}",
            *nothing,
        )
    amounts = sorted({p.amount for p in products})
    if len(amounts) > 1:
        return (
            f"fare product {rule.product_id!r} has several prices (per fare medium: "
            f"{', '.join(map(str, amounts))}); tiket has one",
            *nothing,
        )
    price = amounts[0]
    if price < 0:
        return f"negative amount {price} (a transfer discount) is not a fare", *nothing
    if price > MAX_PRICE:
        return f"amount {price} exceeds the largest fare {MAX_PRICE}", *nothing
    return None, (origin, destination), price


def _tag(rule: LegRule) -> str:
    return f"fare_leg_rules.txt:{rule.line}"
