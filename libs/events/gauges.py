"""The gauges of the event plumbing, refreshed by background jobs every few seconds (never
per event): the outbox backlog of a service's database and the depth of its consumers'
queues in RabbitMQ. What the alerts on stuck events read (helm/tiket prometheusrule.yaml)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractConnection
from psycopg_pool import AsyncConnectionPool

from libs.events import bus
from libs.events.topology import dead_letter_queue, retry_queue
from libs.periodic import Periodic
from libs.server.metrics import (
    CONSUMER_LAG,
    DLQ_MESSAGES,
    GAUGES_REFRESHED,
    OUTBOX_OLDEST_UNSENT,
    OUTBOX_UNSENT,
)

log = logging.getLogger(__name__)
INTERVAL_SECONDS = 10.0

# Each part reads one of the outbox's partial indexes (migration 0002), never the table's
# published rows: unclaimed rows by seq, leased ones by claimed_until. seq follows the
# order of writing, so the oldest unsent row is the one with the smallest seq.
BACKLOG = """
WITH unclaimed AS (
    SELECT count(*) AS n, min(seq) AS first FROM outbox
    WHERE sent_at IS NULL AND claimed_until IS NULL),
leased AS (
    SELECT count(*) AS n, min(seq) AS first FROM outbox
    WHERE sent_at IS NULL AND claimed_until IS NOT NULL)
SELECT unclaimed.n + leased.n,
       coalesce(extract(epoch FROM now() - (
           SELECT created_at FROM outbox WHERE seq = least(unclaimed.first, leased.first))), 0)
FROM unclaimed, leased
"""


def outbox_gauges(service: str, pool: AsyncConnectionPool, interval: float = INTERVAL_SECONDS):
    """A job refreshing tiket_outbox_unsent and tiket_outbox_oldest_unsent_seconds of
    `service` every `interval` seconds."""
    unsent, oldest = OUTBOX_UNSENT.labels(service), OUTBOX_OLDEST_UNSENT.labels(service)
    refreshed = GAUGES_REFRESHED.labels(service, "outbox")

    async def observe() -> int:
        async with pool.connection() as conn:
            cur = await conn.execute(BACKLOG)
            row = await cur.fetchone()
        assert row is not None
        unsent.set(row[0])
        oldest.set(float(row[1]))
        refreshed.set_to_current_time()
        return 0

    return Periodic(f"{service}-outbox-gauges", observe, interval)


class QueueGauges:
    """A job refreshing tiket_consumer_lag_messages and tiket_dlq_messages of `queues` (the
    consumers of this service) every `interval` seconds, over a connection of its own:
    a passive declare per queue, which counts what waits without touching it."""

    def __init__(
        self,
        service: str,
        queues: Sequence[str],
        amqp_url: str,
        interval: float = INTERVAL_SECONDS,
    ) -> None:
        self.queues = list(queues)
        # Only a service with consumers has this series: at 0 it means "never refreshed",
        # and TiketGaugesStale would fire forever for one that has nothing to count.
        self._refreshed = GAUGES_REFRESHED.labels(service, "queues") if queues else None
        self.amqp_url = amqp_url
        self._connection: AbstractConnection | None = None
        self._failing = False
        self._job = Periodic("consumer-queue-gauges", self.observe, interval)

    async def start(self) -> None:
        if self.queues:
            await self._job.start()

    async def stop(self) -> None:
        await self._job.stop()
        connection, self._connection = self._connection, None
        await bus.close_quietly(connection)

    async def observe(self) -> int:
        """Refresh the gauges; while RabbitMQ (or a queue, before its consumer first
        connected) is missing they keep their last values, and that is said once."""
        try:
            await self._observe()
        except Exception as exc:
            if not self._failing:
                log.warning("consumer queue gauges not refreshed: %s", exc)
            self._failing = True
            connection, self._connection = self._connection, None
            await bus.close_quietly(connection)
        else:
            self._failing = False
            if self._refreshed is not None:
                self._refreshed.set_to_current_time()
        return 0

    async def _observe(self) -> None:
        if self._connection is None or self._connection.is_closed:
            self._connection = await bus.connect(self.amqp_url, robust=False)
        # A channel per refresh: a queue not declared yet closes it (the broker's answer to a
        # passive declare of a missing queue), which must not end the next refresh.
        channel = await self._connection.channel()
        try:
            for queue in self.queues:
                lag = await _depth(channel, queue) + await _depth(channel, retry_queue(queue))
                CONSUMER_LAG.labels(queue).set(lag)
                DLQ_MESSAGES.labels(queue).set(await _depth(channel, dead_letter_queue(queue)))
        finally:
            if not channel.is_closed:
                await channel.close()


async def _depth(channel: aio_pika.abc.AbstractChannel, name: str) -> int:
    declared = await channel.declare_queue(name, passive=True)
    return declared.declaration_result.message_count or 0
