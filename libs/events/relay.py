"""The outbox relay: publishes the rows of the `outbox` table to RabbitMQ and marks them sent.

Each batch is one autocommit statement, then the publish, with no transaction open across
network I/O:

1. claim: lease the oldest unsent rows nobody holds by setting `claimed_until = now() +
   lease`, in one UPDATE over a `FOR UPDATE SKIP LOCKED` subquery, so concurrent claims never
   take the same row. While a lease holds no other replica touches the rows, so several
   replicas share one outbox. The same statement clears leases that have ended (their
   holder died), which makes those rows claimable again, and marks the previous batch sent;
2. publish the rows with publisher confirms;
3. once the broker confirmed every message, the rows are due to be marked sent (clearing the
   lease): by the next claim, which comes with the next batch or at most `batch_interval`
   later, which halves the relay's statements under load.
   When a publish fails, one statement notes the attempt and the error and clears the lease
   instead, so the rows are retried after a backoff (by this relay or another).

Every message is published mandatory: an event no queue is bound to comes back (basic.return)
instead of being confirmed into nothing. The rest of its batch is marked sent; the returned
rows keep their lease for a growing delay (`unroutable_delay`, doubling per attempt up to
`unroutable_delay_max`), with the reason in `last_error`, and are published again once it
ends, by any relay. So that a consumer that never ran yet still gets the events written
before it started, each relay declares every registered consumer's queues
(libs/events/topology.py) when it starts and whenever it connects.

RabbitMQ being down means events wait, never that they are lost. Delivery is at-least-once,
which the consumers' inbox absorbs: a relay that dies between claim and mark leaves rows
that are published (again) once their lease has ended; stopping marks what was confirmed.
The claim and the mark commit without waiting for a WAL flush (ASYNC_COMMIT). The writing
process wakes its relay right after each commit (libs/events/outbox.py); while events keep
coming it relays at most one batch per `batch_interval` (25 ms), so that the commits right
behind share a batch, and a periodic poll finds rows written by other processes or whose
lease ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import NamedTuple

from aio_pika.abc import AbstractConnection, AbstractExchange
from aiormq.exceptions import PublishError
from prometheus_client import REGISTRY, Counter
from psycopg_pool import AsyncConnectionPool

from libs import tracing
from libs.events import bus, outbox, topology
from libs.server.metrics import OUTBOX_EVENTS

log = logging.getLogger(__name__)


def _counter(name: str, documentation: str) -> Counter:
    """Register a counter once, even when this module is imported again (tests, reloads)."""
    try:
        return Counter(name, documentation)
    except ValueError:  # already registered under this name
        return REGISTRY._names_to_collectors[name]  # type: ignore[return-value]


PUBLISHED = _counter("tiket_outbox_published_total", "Outbox events published and confirmed.")
FAILURES = _counter("tiket_outbox_publish_failures_total", "Outbox batches that failed to publish.")
UNROUTABLE = _counter(
    "tiket_outbox_unroutable_total", "Outbox events RabbitMQ returned: no queue is bound to them."
)


# Appended to the WHERE of the claim and of the mark: they commit asynchronously, without
# waiting for (and paying for) a WAL flush. Losing one in a PostgreSQL crash costs nothing but
# a duplicate: a lost lease lets another relay publish those rows too, a lost mark has them
# published again, and consumers' inboxes absorb both.
ASYNC_COMMIT = "set_config('synchronous_commit', 'off', true) IS NOT NULL"


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
    """Publishes the outbox of one database. `published`, `failures` and `unroutable` count
    confirmed events, failed batches and returned events since start.

    `queues`: the consumer queues it declares; by default every registered service's."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        amqp_url: str,
        exchange_name: str,
        *,
        queues: Sequence[topology.ConsumerQueue] | None = None,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        publish_timeout: float = 10.0,
        lease: float = 60.0,
        batch_interval: float = 0.025,
        unroutable_delay: float = 1.0,
        unroutable_delay_max: float = 300.0,
    ) -> None:
        # The lease must outlast everything between claim and mark, or another relay could
        # take the rows of a publish still in flight: the broker work of a batch (connecting
        # included) is cut off after publish_timeout, so a lease well beyond it is safe.
        if lease <= publish_timeout:
            raise ValueError(f"lease ({lease} s) must exceed publish_timeout ({publish_timeout} s)")
        self._pool = pool
        self._amqp_url = amqp_url
        self._exchange_name = exchange_name
        self._queues = topology.registered(exchange_name) if queues is None else queues
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._publish_timeout = publish_timeout
        self._lease = timedelta(seconds=lease)
        self._batch_interval = batch_interval
        self._unroutable_delay = (unroutable_delay, unroutable_delay_max)
        self._last_batch = -batch_interval
        self._confirmed: list[int] = []  # seqs published and confirmed, not yet marked sent
        self._connection: AbstractConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self.published = 0
        self.failures = 0
        # tiket_outbox_events_total's series by event type, looked up once each.
        self._published_of: dict[str, Counter] = {}
        self.unroutable = 0

    async def start(self) -> None:
        """Run in the background; RabbitMQ need not be up yet."""
        if self._tasks:
            raise RuntimeError("relay already started")
        outbox.add_waker(self._wake.set)
        self._tasks = [asyncio.create_task(self._run(), name="outbox-relay")]

    async def stop(self) -> None:
        """Stop now and disconnect; the rows of a batch in flight stay unsent and are given
        back at once, those already confirmed are marked sent."""
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
        await self._mark_confirmed()

    async def _run(self) -> None:
        backoff = Backoff()
        loop = asyncio.get_running_loop()
        await self._declare_topology()
        while not self._stopping:
            self._wake.clear()
            self._last_batch = loop.time()
            try:
                while await self._relay_batch() == self._batch_size:
                    pass
            except Exception as exc:
                self._count_failure(exc)
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            # Rows confirmed but not yet marked are marked by the next claim: soon.
            wait = self._batch_interval if self._confirmed else self._poll_interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
                    # While events keep coming, at most one batch per batch_interval: those
                    # right behind the first join its batch, which saves a statement each
                    # (in bench/taps.py 5 ms gave 92 rides/s, 25 ms 127). After a quiet
                    # spell the first event goes at once.
                    if (due := self._last_batch + self._batch_interval - loop.time()) > 0:
                        await asyncio.sleep(due)

    async def _declare_topology(self) -> None:
        """Connect once at start, which declares the consumer queues before any consumer
        ran. Should RabbitMQ be unreachable, the first publish connects (and declares)."""
        try:
            async with asyncio.timeout(self._publish_timeout):
                await self._ensure_exchange()
        except Exception as exc:
            log.warning("outbox relay: queues not declared at start (%s); will on connecting", exc)
            await self._disconnect()

    def _count_failure(self, exc: Exception) -> None:
        self.failures += 1
        FAILURES.inc()
        log.warning("outbox relay: %s; retrying with backoff", exc)

    async def _relay_batch(self) -> int:
        """Mark the last batch sent and publish the next batch of unsent rows; return how
        many there were."""
        rows = await self._claim()
        if not rows:
            return 0
        seqs = [row.seq for row in rows]
        try:
            returned = await self._publish(rows)
        except PublishFailed as exc:
            await self._release(seqs, str(exc))
            raise
        except BaseException:  # stopped mid-batch: let another relay have the rows now
            await self._release(seqs, None)
            raise
        if returned:
            await self._defer(returned)
        self._confirmed = [seq for seq in seqs if seq not in returned]
        for row in rows:
            if row.seq not in returned:
                self._published(row.event_type).inc()
        return len(rows)

    async def _claim(self) -> list[OutboxRow]:
        """Mark the confirmed rows sent and lease the oldest unsent rows nobody holds; they
        come back in `seq` order. Leases that ended are given back on the way, for the next
        claim (see migration 0002). One statement: the CTEs touch disjoint rows (ours are
        leased, the claim takes unleased ones, `ended` skips ours)."""
        confirmed = self._confirmed
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "WITH marked AS ("
                " UPDATE outbox SET sent_at = now(), claimed_until = NULL"
                f"  WHERE seq = ANY(%(confirmed)s) AND {ASYNC_COMMIT}),"
                " ended AS ("
                " UPDATE outbox SET claimed_until = NULL WHERE seq IN ("
                "  SELECT seq FROM outbox WHERE sent_at IS NULL AND claimed_until < now()"
                "   AND seq <> ALL(%(confirmed)s) FOR UPDATE SKIP LOCKED))"
                " UPDATE outbox SET claimed_until = now() + %(lease)s WHERE seq IN ("
                "  SELECT seq FROM outbox WHERE sent_at IS NULL AND claimed_until IS NULL"
                f"  ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED) AND {ASYNC_COMMIT}"
                " RETURNING seq, event_id::text, event_type, body::text, traceparent",
                {"confirmed": confirmed, "lease": self._lease, "limit": self._batch_size},
            )
            rows = await cur.fetchall()
        self._count_marked(confirmed)
        return sorted(OutboxRow(*row) for row in rows)

    async def _mark_confirmed(self) -> None:
        """Mark the confirmed rows sent on their own (on stop). Best effort: rows left
        unmarked are published again once their lease ends, which the inboxes absorb."""
        if not (confirmed := self._confirmed):
            return
        try:
            async with self._pool.connection() as conn:
                await conn.execute(
                    "UPDATE outbox SET sent_at = now(), claimed_until = NULL"
                    f" WHERE seq = ANY(%s) AND {ASYNC_COMMIT}",
                    (confirmed,),
                )
        except Exception as exc:
            log.warning("outbox relay: could not mark %d sent events: %s", len(confirmed), exc)
            return
        self._count_marked(confirmed)

    def _count_marked(self, seqs: list[int]) -> None:
        self._confirmed = []
        self.published += len(seqs)
        PUBLISHED.inc(len(seqs))

    async def _publish(self, rows: list[OutboxRow]) -> dict[int, str]:
        """Publish a batch concurrently and wait for every confirm, all within
        publish_timeout (connecting included: the lease relies on it); the rows RabbitMQ
        returned as unroutable, by seq, with why. PublishFailed when anything else failed
        (the connection is then dropped, to be reopened after a backoff)."""
        try:
            async with asyncio.timeout(self._publish_timeout):
                exchange = await self._ensure_exchange()
                results = await asyncio.gather(
                    *(self._publish_one(exchange, row) for row in rows), return_exceptions=True
                )
        except TimeoutError:
            failure = f"RabbitMQ did not confirm within {self._publish_timeout} s"
        except Exception as exc:
            failure = str(exc)  # BusUnavailable names the broker and the reason
        else:
            returned = {
                row.seq: _unroutable(result)
                for row, result in zip(rows, results, strict=True)
                if isinstance(result, PublishError)
            }
            errors = [
                r
                for r in results
                if isinstance(r, BaseException) and not isinstance(r, PublishError)
            ]
            if not errors:
                return returned
            failure = (
                f"{len(errors)} of {len(rows)} events not confirmed by RabbitMQ: "
                f"{type(errors[0]).__name__}: {errors[0]}"
            )
        await self._disconnect()
        raise PublishFailed(failure)

    async def _publish_one(self, exchange: AbstractExchange, row: OutboxRow) -> None:
        if tracing.enabled():
            await self._publish_traced(exchange, row)
            return
        await self._send(exchange, row, row.traceparent)

    async def _send(self, exchange: AbstractExchange, row: OutboxRow, traceparent: str | None):
        message = bus.event_message(
            row.body.encode(),
            event_id=row.event_id,
            event_type=row.event_type,
            traceparent=traceparent,
        )
        # Mandatory: routed to no queue, it comes back as PublishError (on_return_raises).
        await exchange.publish(message, row.event_type, mandatory=True, timeout=None)

    async def _publish_traced(self, exchange: AbstractExchange, row: OutboxRow) -> None:
        """The publish under a producer span, child of the span that wrote the event (its
        row's traceparent); the message carries the producer span's context."""
        span = tracing.producer_span(
            f"{row.event_type} publish",
            row.traceparent,
            {
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "send",
                "messaging.destination.name": self._exchange_name,
                "messaging.rabbitmq.destination.routing_key": row.event_type,
                "messaging.message.id": row.event_id,
            },
        )
        error = "cancelled"
        try:
            await self._send(exchange, row, tracing.traceparent_of(span))
            error = None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            tracing.end_span(span, error=error)

    def _published(self, event_type: str) -> Counter:
        series = self._published_of.get(event_type)
        if series is None:
            series = self._published_of[event_type] = OUTBOX_EVENTS.labels(event_type)
        return series

    async def _defer(self, returned: dict[int, str]) -> None:
        """Keep returned rows unsent, leased for a delay that doubles with each attempt, and
        say why on each. Best effort: should this fail, the claim's lease runs out and the
        rows are published again all the same."""
        self.unroutable += len(returned)
        UNROUTABLE.inc(len(returned))
        first, cap = self._unroutable_delay
        log.warning(
            "outbox relay: %d event(s) routed to no queue, kept for a retry: %s",
            *(len(returned), next(iter(returned.values()))),
        )
        try:
            async with self._pool.connection() as conn:
                await conn.execute(
                    "UPDATE outbox o SET attempts = o.attempts + 1, last_error = r.error,"
                    "  claimed_until = now() + make_interval(secs => least(%s::float8,"
                    "   %s * power(2, least(o.attempts, 30))))"
                    " FROM unnest(%s::bigint[], %s::text[]) AS r(seq, error)"
                    " WHERE o.seq = r.seq AND o.sent_at IS NULL",
                    (cap, first, list(returned), list(returned.values())),
                )
        except Exception as exc:
            log.warning(
                "outbox relay: could not defer %d unroutable events: %s", len(returned), exc
            )

    async def _release(self, seqs: list[int], error: str | None) -> None:
        """End the lease of unsent rows so they are retried without waiting for it to run
        out, noting a publish failure on them for operators. Best effort: never let this hide
        the failure (the lease ends by itself)."""
        try:
            async with self._pool.connection() as conn:
                await conn.execute(
                    "UPDATE outbox SET claimed_until = NULL, attempts = attempts + %s,"
                    " last_error = coalesce(%s, last_error)"
                    " WHERE seq = ANY(%s) AND sent_at IS NULL",
                    (0 if error is None else 1, error[:1000] if error else None, seqs),
                )
        except Exception as exc:
            log.warning("outbox relay: could not give back a batch: %s", exc)

    async def _ensure_exchange(self) -> AbstractExchange:
        if self._connection is None or self._connection.is_closed or self._exchange is None:
            await self._disconnect()
            self._connection = await bus.connect(
                self._amqp_url, robust=False, connect_timeout=self._publish_timeout
            )
            channel = await bus.open_channel(self._connection)
            self._exchange = await topology.declare(channel, self._exchange_name, self._queues)
            log.info("outbox relay connected to %s", bus.redact(self._amqp_url))
        return self._exchange

    async def _disconnect(self) -> None:
        connection, self._connection, self._exchange = self._connection, None, None
        await bus.close_quietly(connection)


def _unroutable(returned: PublishError) -> str:
    delivery = returned.message.delivery
    return (
        f"unroutable: RabbitMQ returned it ({delivery.reply_code} {delivery.reply_text}): "
        f"no queue is bound to routing key {delivery.routing_key!r}"
    )
