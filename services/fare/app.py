"""Use cases of fares: effective-dated changes (one transaction each, with fare.updated in
the outbox and the cache generation renewed after the commit), lookups through the cache,
listing and the gates' snapshot."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool

from libs.db.transaction import in_transaction, read
from libs.errors import Aborted, AlreadyExists, NotFound, found, not_found
from services.fare import domain, events, store
from services.fare.cache import FareCache, origin_key, pair_key
from services.fare.domain import FareSet, FareVersion, Terminal

T = TypeVar("T")


class FareApp:
    def __init__(self, pool: AsyncConnectionPool, cache: FareCache) -> None:
        self.pool = pool
        self.cache = cache

    # --- changes -----------------------------------------------------------------------------

    async def set_fare(
        self,
        origin: str,
        destination: str,
        price: Decimal,
        effective_from: datetime | None,
        *,
        request_id: str | None,
        changed_by: str,
    ) -> FareSet:
        async def work(conn: AsyncConnection) -> FareSet:
            o, d = await pair_terminals(conn, origin, destination)
            now = await store.lock_origin(conn, o.id)
            if request_id and (first := await store.fare(conn, "request_id", request_id)):
                domain.same_fare_request(first, origin, destination, price, effective_from)
                return FareSet(first, await store.replaced_by(conn, first.id), changed=True)
            return await write_fare(
                conn,
                o,
                d,
                price,
                effective_from or now,
                now,
                source="api",
                request_id=request_id,
                changed_by=changed_by,
            )

        result = await run_fare_change(self.pool, work, request_id)
        if result.changed:
            await self.cache.changed()
        return result

    # --- lookups -----------------------------------------------------------------------------

    async def get_fare(self, origin: str, destination: str, at: datetime) -> FareVersion:
        versions = await self.cache.versions(
            pair_key(origin, destination),
            lambda: read(self.pool, store.pair_versions, origin, destination),
        )
        in_force = domain.version_at(versions, at)
        if in_force is None:
            await self._require_terminals(origin, destination)
            raise NotFound(
                f"no fare from {origin} to {destination} in force at {at.isoformat()}",
                resource_type="fare",
                resource_name=f"{origin}/{destination}",
            )
        return in_force

    async def get_max_fare(self, origin: str, at: datetime) -> FareVersion:
        versions = await self.cache.versions(
            origin_key(origin), lambda: read(self.pool, store.origin_versions, origin)
        )
        dearest = domain.max_fare_at(versions, at)
        if dearest is None:
            await self._require_terminals(origin)
            raise NotFound(
                f"no fare from {origin} in force at {at.isoformat()}",
                resource_type="fare",
                resource_name=f"{origin}/*",
            )
        return dearest

    async def list_fares(
        self,
        origin: str | None,
        destination: str | None,
        in_force_at: datetime | None,
        include_inactive: bool,
        after: tuple[str, str, datetime, int] | None,
        limit: int,
    ) -> list[FareVersion]:
        return await read(
            self.pool,
            store.list_fares,
            origin,
            destination,
            in_force_at,
            include_inactive,
            after,
            limit,
        )

    async def export_snapshot(
        self, terminal_code: str | None
    ) -> AsyncIterator[Terminal | FareVersion | tuple[datetime, int, int]]:
        """Every terminal, then the fares in force now or scheduled (only those from or to
        `terminal_code` when given), then (generated_at, terminals, fares): one snapshot,
        read whole in one short transaction and then streamed from memory, so a gate that
        reads slowly holds no database connection (the matrix is bounded by terminals²: a
        few MB for a network of a hundred stations)."""
        if terminal_code is not None:
            await self._require_terminals(terminal_code)

        async def snapshot(conn: AsyncConnection):
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            generated_at = await store.now(conn)
            terminals = await store.terminals(conn)
            return generated_at, terminals, await store.current_and_scheduled(conn, terminal_code)

        generated_at, terminals, versions = await in_transaction(
            self.pool, snapshot, pipeline=False
        )
        for terminal in terminals:
            yield terminal
        for version in versions:
            yield version
        yield generated_at, len(terminals), len(versions)

    async def _require_terminals(self, *codes: str) -> None:
        """NOT_FOUND naming the first unknown terminal among `codes`."""
        known = {t.code for t in await read(self.pool, store.terminals, codes)}
        for code in codes:
            if code not in known:
                raise not_found("terminal", code)


async def pair_terminals(
    conn: AsyncConnection, origin: str, destination: str
) -> tuple[Terminal, Terminal]:
    found_by_code = {t.code: t for t in await store.terminals(conn, [origin, destination])}
    return (
        found(found_by_code.get(origin), "terminal", origin),
        found(found_by_code.get(destination), "terminal", destination),
    )


async def write_fare(
    conn: AsyncConnection,
    origin: Terminal,
    destination: Terminal,
    price: Decimal,
    effective_from: datetime,
    now: datetime,
    *,
    source: str,
    request_id: str | None,
    changed_by: str,
    versions: list[FareVersion] | None = None,
) -> FareSet:
    """Apply one fare change to a pair whose origin is locked (store.lock_origin; `now`: the
    clock read then). `versions`: the pair's active versions, when the caller read them
    after taking the lock (an import reads every pair's at once); else they are read here."""
    if versions is None:
        versions = await store.pair_versions(conn, origin.code, destination.code)
    change = domain.plan_fare_change(versions, effective_from, price, now)
    if change.unchanged is not None:
        return FareSet(change.unchanged, None, changed=False)
    previous = change.previous
    if change.close is not None:
        await store.close_version(conn, change.close.id, effective_from)
        previous = replace(change.close, effective_until=effective_from)
    if change.replace is not None:
        await store.retire_version(conn, change.replace.id)
        previous = replace(change.replace, is_active=False)
    fare_id, created_at = await store.insert_version(
        conn,
        origin.id,
        destination.id,
        price,
        effective_from,
        change.until,
        replaces_id=previous.id if previous else None,
        source=source,
        request_id=request_id,
        created_by=changed_by,
    )
    new = FareVersion(
        fare_id,
        origin.code,
        destination.code,
        price,
        effective_from,
        change.until,
        source,
        created_at,
    )
    names = {origin.code: origin.name, destination.code: destination.name}
    await events.fare_updated(conn, new, previous, names, changed_by)
    return FareSet(new, previous, changed=True)


async def run_fare_change(
    pool: AsyncConnectionPool,
    work: Callable[[AsyncConnection], Awaitable[T]],
    request_id: str | None = None,
) -> T:
    """in_transaction for fare changes: the constraint errors a lost race can still raise
    become statuses a client can act on."""
    try:
        return await in_transaction(pool, work)
    except errors.ExclusionViolation as exc:
        # The pair lock makes this unreachable; the constraint is the last line of defence.
        raise Aborted(f"a concurrent fare change of this pair won; retry: {exc}") from exc
    except errors.UniqueViolation as exc:
        # Only fares.request_id is unique among what a fare change inserts.
        raise AlreadyExists(f"request_id {request_id!r} was already used for another fare") from exc
