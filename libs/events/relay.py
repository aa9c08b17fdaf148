"""The outbox relay: publishes the rows of the `outbox` table to RabbitMQ and marks them sent.

A row is marked sent only in the transaction that locked it and only after the broker
confirmed every message of its batch, so RabbitMQ being down means events wait, never that
they are lost (at-least-once: a crash between confirm and commit publishes a batch again,
which the consumers' inbox absorbs). `FOR UPDATE SKIP LOCKED` lets several replicas share
one outbox. The writing process wakes its relay right after each commit (libs/events/outbox.py),
so latency is milliseconds; a periodic poll finds rows written by other processes or left by
a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import NamedTuple

import psycopg
from aio_pika.abc import AbstractConnection, AbstractExchange
from prometheus_client import REGISTRY, Counter
from psycopg_pool import AsyncConnectionPool

from libs.events import bus, outbox

log = logging.getLogger(__name__)


def _counter(name: str, documentation: str) -> Counter:
    """Register a counter once, even when this module is imported again (tests, reloads)."""
    try:
        return Counter(name, documentation)
    except ValueError:  # already registered under this name
        return REGISTRY._names_to_collectors[name]  # type: ignore[return-value]


PUBLISHED = _counter("tiket_outbox_published_total", "Outbox events published and confirmed.")
FAILURES = _counter("tiket_outbox_publish_failures_total", "Outbox batches that failed to publish.")


class OutboxRow(NamedTuple):
    seq: int
    event_id: str
    event_type: str
    body: str
    traceparent: str | None


class Backoff:
    """Capped exponential delays: 0.2 s, 0.4 s, … 5 s, back to the start after a success."""

    def __init__(self, first: float = 0.2, cap: float = 5.0) -> None:
        self._first, self._cap = first, cap
        self._next = first

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self._cap)
        return delay

    def reset(self) -> None:
        self._next = self._first


class PublishFailed(Exception):
    """A batch was not (entirely) confirmed by the broker; its rows stay unsent."""


class OutboxRelay:
    """Publishes the outbox of one database. `published` and `failures` count confirmed
    events and failed batches since start."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        amqp_url: str,
        exchange_name: str,
        *,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        publish_timeout: float = 10.0,
    ) -> None:
        self._pool = pool
        self._amqp_url = amqp_url
        self._exchange_name = exchange_name
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._publish_timeout = publish_timeout
        self._connection: AbstractConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self.published = 0
        self.failures = 0

    async def start(self) -> None:
        """Run in the background; RabbitMQ need not be up yet."""
        if self._tasks:
            raise RuntimeError("relay already started")
        outbox.add_waker(self._wake.set)
        self._tasks = [asyncio.create_task(self._run(), name="outbox-relay")]

    async def stop(self) -> None:
        """Stop now and disconnect; a batch in flight is rolled back and stays unsent."""
        # The flag as well as cancel(): aiormq can turn a CancelledError into an error of its
        # own, and the loops must still end.
        self._stopping = True
        outbox.remove_waker(self._wake.set)
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._disconnect()

    async def purge_sent(self, older_than: timedelta) -> int:
        """Delete rows sent more than `older_than` ago; return how many."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < now() - %s",
                (older_than,),
            )
            return cur.rowcount

    async def _run(self) -> None:
        backoff = Backoff()
        while not self._stopping:
            self._wake.clear()
            try:
                while await self._relay_batch() == self._batch_size:
                    pass
            except Exception as exc:
                self._count_failure(exc)
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wake.wait()

    def _count_failure(self, exc: Exception) -> None:
        self.failures += 1
        FAILURES.inc()
        log.warning("outbox relay: %s; retrying with backoff", exc)

    async def _relay_batch(self) -> int:
        """Publish one batch of unsent rows; return how many there were."""
        async with self._pool.connection() as conn:
            try:
                async with conn.transaction():
                    rows = await self._lock_unsent(conn)
                    if not rows:
                        return 0
                    await self._publish(rows)
                    await conn.execute(
                        "UPDATE outbox SET sent_at = now() WHERE seq = ANY(%s)",
                        ([row.seq for row in rows],),
                    )
            except PublishFailed as exc:
                await self._record_failure(conn, rows, str(exc))
                raise
        self.published += len(rows)
        PUBLISHED.inc(len(rows))
        return len(rows)

    async def _lock_unsent(self, conn: psycopg.AsyncConnection) -> list[OutboxRow]:
        cur = await conn.execute(
            "SELECT seq, event_id::text, event_type, body::text, traceparent FROM outbox "
            "WHERE sent_at IS NULL ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED",
            (self._batch_size,),
        )
        return [OutboxRow(*row) for row in await cur.fetchall()]

    async def _publish(self, rows: list[OutboxRow]) -> None:
        """Publish a batch concurrently and wait for every confirm; PublishFailed when any
        of them failed (the connection is then dropped, to be reopened after a backoff)."""
        try:
            exchange = await self._ensure_exchange()
        except Exception as exc:
            raise PublishFailed(str(exc)) from exc
        results = await asyncio.gather(
            *(self._publish_one(exchange, row) for row in rows), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self._disconnect()
            first = errors[0]
            reason = str(first) or "no confirm in time"
            raise PublishFailed(
                f"{len(errors)} of {len(rows)} events not confirmed by RabbitMQ: "
                f"{type(first).__name__}: {reason}"
            )

    async def _publish_one(self, exchange: AbstractExchange, row: OutboxRow) -> None:
        message = bus.event_message(
            row.body.encode(),
            event_id=row.event_id,
            event_type=row.event_type,
            traceparent=row.traceparent,
        )
        # Not mandatory: an event type nobody subscribes to is not an error.
        await exchange.publish(
            message, row.event_type, mandatory=False, timeout=self._publish_timeout
        )

    async def _record_failure(
        self, conn: psycopg.AsyncConnection, rows: list[OutboxRow], error: str
    ) -> None:
        """Note the failure on the rows, for operators; never let this hide the failure."""
        try:
            async with conn.transaction():
                await conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = %s "
                    "WHERE seq = ANY(%s) AND sent_at IS NULL",
                    (error[:1000], [row.seq for row in rows]),
                )
        except psycopg.Error as exc:
            log.warning("outbox relay: could not record a publish failure: %s", exc)

    async def _ensure_exchange(self) -> AbstractExchange:
        if self._connection is None or self._connection.is_closed or self._exchange is None:
            await self._disconnect()
            self._connection = await bus.connect(
                self._amqp_url, robust=False, connect_timeout=self._publish_timeout
            )
            channel = await bus.open_channel(self._connection)
            self._exchange = await bus.declare_events_exchange(channel, self._exchange_name)
            log.info("outbox relay connected to %s", bus.redact(self._amqp_url))
        return self._exchange

    async def _disconnect(self) -> None:
        connection, self._connection, self._exchange = self._connection, None, None
        await bus.close_quietly(connection)
