"""Retention of the event tables: outbox rows once published and inbox rows once handled
are kept for `older_than` (for operators tracing an event), then deleted in batches, so
neither table grows with every event ever written. The inbox must outlive any redelivery
it guards against: RabbitMQ redelivers within seconds or minutes, a retention of days is
far beyond that."""

from __future__ import annotations

from datetime import timedelta

from psycopg_pool import AsyncConnectionPool

from libs.periodic import Periodic

BATCH = 5_000


async def purge(pool: AsyncConnectionPool, older_than: timedelta, batch: int = BATCH) -> int:
    """Delete up to `batch` sent outbox rows and `batch` inbox rows older than `older_than`;
    return how many rows went (a full batch of either means more may be waiting)."""
    async with pool.connection() as conn:
        sent = await conn.execute(
            "DELETE FROM outbox WHERE seq IN ("
            " SELECT seq FROM outbox WHERE sent_at < now() - %s ORDER BY sent_at LIMIT %s)",
            (older_than, batch),
        )
        handled = await conn.execute(
            "DELETE FROM inbox WHERE (consumer, event_id) IN ("
            " SELECT consumer, event_id FROM inbox WHERE handled_at < now() - %s"
            " ORDER BY handled_at LIMIT %s)",
            (older_than, batch),
        )
    return sent.rowcount + handled.rowcount


def retention_job(pool: AsyncConnectionPool, older_than: timedelta, interval: float) -> Periodic:
    """The background job every service runs on its own database."""

    async def work() -> int:
        return await purge(pool, older_than)

    return Periodic("event-retention", work, interval)
