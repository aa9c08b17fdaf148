"""Keeping the monthly partitions of the booking service's append-only tables ahead of time
(migration 0006 says which tables and why): once a day, the current month and the next
three exist. Safe on every replica at once (the SQL function takes an advisory lock)."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from libs.db.transaction import in_transaction
from libs.periodic import Periodic

TABLES = ("event_store", "booking_history")
MONTHS_AHEAD = 3
DAILY = 24 * 3600.0


async def keep_ahead(pool: AsyncConnectionPool) -> int:
    """Create the missing month partitions; how many were made."""

    async def work(conn: AsyncConnection) -> int:
        made = 0
        for table in TABLES:
            cur = await conn.execute(
                "SELECT create_month_partitions(%s, %s)", (table, MONTHS_AHEAD)
            )
            row = await cur.fetchone()
            made += row[0] if row else 0
        return made

    return await in_transaction(pool, work, pipeline=False)


def keeper(pool: AsyncConnectionPool, interval: float = DAILY) -> Periodic:
    async def run() -> int:
        await keep_ahead(pool)
        return 0  # never "a full batch": the next round is a day later

    return Periodic("booking-partitions", run, interval)
