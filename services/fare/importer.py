"""Importing the fare matrix of a GTFS Fares v2 feed: all or nothing, in one transaction, and
idempotent (a pair whose version in force at the import's instant already has the feed's
price is left alone, so the same feed twice writes nothing the second time)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from libs.errors import InvalidArgument
from services.fare import gtfs, gtfs_plan, store
from services.fare.app import run_fare_change, write_fare
from services.fare.cache import FareCache
from services.fare.gtfs_plan import Skip

SOURCE = "gtfs"


@dataclass(frozen=True)
class ImportedFare:
    origin: str
    destination: str
    price: Decimal
    previous_price: Decimal | None
    fare_id: int
    rule: str


@dataclass(frozen=True)
class ImportReport:
    imported: list[ImportedFare]
    skipped: list[Skip]
    effective_from: datetime
    areas: dict[str, str]
    dry_run: bool


class _DryRun(Exception):
    """Rolls the import back after it has been worked out."""

    def __init__(self, report: ImportReport) -> None:
        super().__init__("dry run")
        self.report = report


def read(feed: bytes) -> gtfs.Feed:
    """The feed's records; INVALID_ARGUMENT naming file, line and field when malformed."""
    try:
        return gtfs.read_feed(feed)
    except gtfs.GtfsError as exc:
        raise InvalidArgument.field("feed", str(exc)) from None


class GtfsImporter:
    def __init__(self, pool: AsyncConnectionPool, cache: FareCache) -> None:
        self.pool = pool
        self.cache = cache

    async def run(
        self,
        feed_zip: bytes,
        effective_from: datetime | None,
        area_terminals: Mapping[str, str],
        *,
        dry_run: bool,
        changed_by: str,
    ) -> ImportReport:
        feed = read(feed_zip)

        async def work(conn: AsyncConnection) -> ImportReport:
            report = await _apply(conn, feed, effective_from, area_terminals, changed_by, dry_run)
            if dry_run:
                raise _DryRun(report)
            return report

        try:
            report = await run_fare_change(self.pool, work)
        except _DryRun as done:
            return done.report
        if report.imported:
            await self.cache.changed()
        return report


async def _apply(
    conn: AsyncConnection,
    feed: gtfs.Feed,
    effective_from: datetime | None,
    area_terminals: Mapping[str, str],
    changed_by: str,
    dry_run: bool,
) -> ImportReport:
    terminals = {t.code: t for t in await store.terminals(conn)}
    plan = gtfs_plan.plan(feed, terminals.keys(), area_terminals)
    now = await store.now(conn)
    # Every origin locked, in one order, before the first change: a concurrent SetFare or
    # import waits rather than interleaving with this one.
    for origin_id in sorted({terminals[f.origin].id for f in plan.fares}):
        now = await store.lock_origin(conn, origin_id)
    at = effective_from or now
    versions = await store.versions_from(conn, sorted({f.origin for f in plan.fares}))
    imported, skipped = [], list(plan.skipped)
    for fare in plan.fares:
        result = await write_fare(
            conn,
            terminals[fare.origin],
            terminals[fare.destination],
            fare.price,
            at,
            now,
            source=SOURCE,
            request_id=None,
            changed_by=changed_by,
            versions=versions.get((fare.origin, fare.destination), []),
        )
        if not result.changed:
            reason = f"unchanged: {fare.origin}->{fare.destination} is already {fare.price}"
            skipped.append(Skip(fare.rule, reason))
            continue
        previous = result.previous.price if result.previous else None
        imported.append(
            ImportedFare(
                fare.origin, fare.destination, fare.price, previous, result.fare.id, fare.rule
            )
        )
    skipped.sort(key=gtfs_plan.by_line)
    return ImportReport(imported, skipped, at, plan.areas, dry_run)
