"""Use cases of the analytics service: recording an event (in the consumer's transaction,
beside its inbox record), keeping the partitions ahead, and the reports."""

from __future__ import annotations

from datetime import UTC, date, datetime

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from libs.db.transaction import after_commit, in_transaction, read
from libs.events.envelope import CloudEvent
from services.analytics import domain, store
from services.analytics.config import AnalyticsConfig
from services.analytics.domain import BookingDay, MonthPartition, RouteTotals, TerminalDay
from services.analytics.facts import facts_of


class AnalyticsApp:
    def __init__(self, pool: AsyncConnectionPool, config: AnalyticsConfig) -> None:
        self.pool = pool
        self.config = config
        # Months whose partition is known to exist (committed): their events skip the SQL
        # check, so the hot path is one INSERT per event. Filled after commits only, and
        # renewed by the partition job (a partition dropped by hand heals within its interval).
        self.known_partitions: set[MonthPartition] = set()

    async def record(self, event: CloudEvent, conn: AsyncConnection) -> None:
        """Store the event and add what it contributes to the daily figures. BadEvent when
        an event of a known type cannot be read (it ends in the dead-letter queue)."""
        facts = facts_of(event, self.config.time_zone, datetime.now(UTC))
        month = MonthPartition.of(facts.occurred_at)
        if month not in self.known_partitions:
            # In this transaction: should it roll back, no partition is wrongly assumed.
            await store.ensure_partition(conn, month)
            after_commit(lambda: self.known_partitions.add(month))
        await store.insert_event(conn, event, facts)
        if facts.tap is not None:
            await store.record_tap(conn, facts.tap)
        if facts.unfinished is not None:
            await store.record_unfinished(conn, facts.unfinished)
        if facts.trip is not None:
            await store.record_trip(conn, facts.trip)
        if facts.booking is not None:
            await store.record_booking(conn, facts.booking)
        if facts.revision is not None:
            await store.revise(conn, facts.revision)

    async def create_partitions_ahead(self) -> int:
        """The partitions of this month and the configured months after it; how many were
        missing (one transaction each, so a long DDL lock is never held)."""
        created, known = 0, set[MonthPartition]()
        for month in domain.partitions_ahead(datetime.now(UTC), self.config.partition_months_ahead):

            async def work(conn: AsyncConnection, month: MonthPartition = month) -> bool:
                return await store.ensure_partition(conn, month)

            created += await in_transaction(self.pool, work)
            known.add(month)
        self.known_partitions = known
        return created

    # --- reports -------------------------------------------------------------------------

    async def terminal_days(self, terminal_code: str, start: date, end: date) -> list[TerminalDay]:
        found = await read(self.pool, store.terminal_days, terminal_code, start, end)
        return domain.terminal_days(terminal_code, start, end, found)

    async def hourly_taps(
        self, terminal_code: str | None, start: date, end: date
    ) -> dict[int, int]:
        return await read(self.pool, store.hourly_taps, terminal_code, start, end)

    async def routes(
        self,
        start: date,
        end: date,
        origin_code: str | None,
        after: tuple[str, str] | None,
        limit: int,
    ) -> list[RouteTotals]:
        return await read(self.pool, store.routes, start, end, origin_code, after, limit)

    async def booking_days(self, start: date, end: date) -> list[BookingDay]:
        found = await read(self.pool, store.booking_totals, start, end)
        return domain.booking_days(start, end, found)
