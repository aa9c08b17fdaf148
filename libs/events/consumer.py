"""Idempotent event consumers with bounded retries and a dead-letter queue.

Each consumer owns three durable queues:

* `<name>`: bound to its routing-key patterns on the events exchange;
* `<name>.retry`: failed deliveries wait here for their backoff (per-message `expiration`),
  then RabbitMQ dead-letters them back to `<name>` through the default exchange;
* `<name>.dlq`: deliveries that failed `max_attempts` times, or could not be parsed, kept
  for an operator to list and replay (`tiket dlq`).

The handler runs in the transaction that records the event id in the `inbox` table, so a
redelivered event is acknowledged without a second effect. A delivery is acknowledged only
after its effect committed, or after the broker confirmed its copy in the retry or
dead-letter queue: nothing is acked and dropped.

Only the event's own failures spend its attempts. When the database or Redis cannot be
reached (libs/outages.py) the consumer stops taking deliveries, gives back those in
flight (requeued, attempts untouched) and resumes once a probe connection succeeds, so a
failover of any length dead-letters nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import aio_pika
import psycopg
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
    HeadersType,
)
from psycopg_pool import AsyncConnectionPool

from libs import tracing
from libs.db.transaction import in_transaction
from libs.events import bus, topology
from libs.events.envelope import BadEvent, CloudEvent, MalformedEvent, parse
from libs.events.relay import Backoff
from libs.events.topology import dead_letter_queue, retry_queue
from libs.outages import is_outage

log = logging.getLogger(__name__)

Handler = Callable[[CloudEvent, psycopg.AsyncConnection], Awaitable[None]]
Prepare = Callable[[CloudEvent], Awaitable[None]]

ATTEMPT = "x-tiket-attempt"
LAST_ERROR = "x-tiket-last-error"
ERROR = "x-tiket-error"
ATTEMPTS = "x-tiket-attempts"
ORIGINAL_ROUTING_KEY = "x-tiket-original-routing-key"
FAILED_AT = "x-tiket-failed-at"
# Headers describing one trip through retry/DLQ; a replayed event starts without them.
FAILURE_HEADERS = (ATTEMPT, LAST_ERROR, ERROR, ATTEMPTS, ORIGINAL_ROUTING_KEY, FAILED_AT)
BROKER_HEADER_PREFIXES = ("x-death", "x-first-death", "x-last-death")
MAX_ERROR_CHARS = 500
PROBE_TIMEOUT = 5.0


class Consumer:
    """Consumes the events matching `bindings` into `handler`. `handled`, `duplicates`,
    `retried` and `dead_lettered` count deliveries since start, `paused_times` the outages
    it waited out.

    `queue`: its name, the patterns it is bound to and those it took once and no longer
    does, unbound when it declares the queue (libs/events/topology.py).

    `prepare`, when given, runs before the inbox transaction, for work too large for one
    transaction (a fan-out in chunks, each committed on its own). It runs again on every
    delivery of the event until the inbox records it, so it must skip what it already did."""

    def __init__(
        self,
        queue: topology.ConsumerQueue,
        pool: AsyncConnectionPool,
        amqp_url: str,
        exchange_name: str,
        handler: Handler,
        *,
        prepare: Prepare | None = None,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        prefetch: int = 50,
    ) -> None:
        self.name = queue.name
        self._declaration = queue
        self._pool = pool
        self._amqp_url = amqp_url
        self._exchange_name = exchange_name
        self._handler = handler
        self._prepare = prepare
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._prefetch = prefetch
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._in_flight: set[asyncio.Task[object]] = set()
        self._outage: asyncio.Task[None] | None = None
        self._outage_backoff = Backoff(first=0.5, cap=5.0)
        self.handled = 0
        self.duplicates = 0
        self.retried = 0
        self.dead_lettered = 0
        self.paused_times = 0

    async def start(self) -> None:
        """Declare the queues and start consuming; BusUnavailable when RabbitMQ is down.
        Later connection losses are recovered by the robust connection."""
        self._connection = await bus.connect(self._amqp_url)
        try:
            self._channel = await bus.open_channel(self._connection)
            await self._channel.set_qos(prefetch_count=self._prefetch)
            exchange = await bus.declare_events_exchange(self._channel, self._exchange_name)
            self._queue = await topology.declare_queue(self._channel, exchange, self._declaration)
            self._consumer_tag = await self._queue.consume(self._on_message)
        except BaseException:
            await bus.close_quietly(self._connection)
            raise
        log.info("consumer %s started on %s", self.name, ", ".join(self._declaration.bindings))

    async def stop(self) -> None:
        """Stop consuming, let the handlers in flight finish, and disconnect."""
        if self._outage is not None:
            self._outage.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._outage
        await self._stop_consuming()
        while self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        await bus.close_quietly(self._connection)

    async def _stop_consuming(self) -> None:
        """No more deliveries; those already sent to us still reach _on_message."""
        tag, self._consumer_tag = self._consumer_tag, None
        if self._queue is not None and tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(tag)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            await self._process(message)
        except Exception:
            # The delivery stays unacked or was requeued: the broker will bring it back.
            log.exception("consumer %s: delivery %s not settled", self.name, message.message_id)
        finally:
            self._in_flight.discard(task)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        try:
            event = _parse(message.body)
        except MalformedEvent as exc:
            log.error("consumer %s: malformed event to the DLQ: %s", self.name, exc)
            await self._settle_by_republishing(message, self._dead_letter(message, str(exc), 0))
            return
        # Logs and the events the handler emits name the event's trace (libs/tracing.py).
        traceparent = _traceparent(message.headers)
        if not tracing.enabled():
            tracing.begin(event.id, traceparent)
            await self._deliver(message, event)
            return
        _, span = tracing.begin_span(
            f"{event.type} process",
            "CONSUMER",
            event.id,
            traceparent,
            {
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "process",
                "messaging.consumer.group.name": self.name,
                "messaging.rabbitmq.destination.routing_key": event.type,
                "messaging.message.id": event.id,
            },
        )
        error: str | None = "not settled"
        try:
            error = await self._deliver(message, event)
        finally:
            tracing.end_span(span, error=error)

    async def _deliver(self, message: AbstractIncomingMessage, event: CloudEvent) -> str | None:
        """Handle the event and settle its delivery; why the handler failed, if it did."""
        try:
            if self._prepare is not None:
                await self._prepare(event)
            duplicate = await self._handle(event)
        except Exception as exc:
            if is_outage(exc):
                await self._wait_out_outage(message, exc)
                return _describe(exc)
            await self._settle_by_republishing(message, self._after_failure(message, event, exc))
            return _describe(exc)
        await message.ack()
        self._outage_backoff.reset()
        if duplicate:
            self.duplicates += 1
        else:
            self.handled += 1
        return None

    async def _handle(self, event: CloudEvent) -> bool:
        """Record the event in the inbox and apply it, in one transaction; True when it had
        been handled before (then nothing is applied)."""

        async def work(conn: psycopg.AsyncConnection) -> bool:
            cur = await conn.execute(
                "INSERT INTO inbox (consumer, event_id, event_type) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING RETURNING 1",
                (self.name, event.id, event.type),
            )
            if await cur.fetchone() is None:
                return True
            await self._handler(event, conn)
            return False

        # Not pipelined: each statement here waits for the one before (the inbox insert
        # decides whether the handler runs at all), and psycopg's pipeline mode then costs a
        # third more CPU per event (bench/fanout.py: 2.0 -> 1.4 ms per event).
        return await in_transaction(self._pool, work, pipeline=False)

    async def _wait_out_outage(self, message: AbstractIncomingMessage, exc: Exception) -> None:
        """Not the event's fault: stop consuming (once) and give the delivery back as it
        came, attempts untouched; consuming resumes when the database answers again."""
        if self._outage is None:
            self.paused_times += 1
            log.warning(
                "consumer %s: a dependency is unavailable (%s); pausing until it answers",
                *(self.name, _describe(exc)),
            )
            self._outage = asyncio.create_task(self._resume_after_outage())
            await self._stop_consuming()
        with contextlib.suppress(Exception):
            await message.nack(requeue=True)

    async def _resume_after_outage(self) -> None:
        """Probe the database with growing pauses (they keep growing over outages in a row,
        such as a Redis outage, which this probe cannot see) until it answers, then consume
        again."""
        while True:
            await asyncio.sleep(self._outage_backoff.next())
            try:
                async with self._pool.connection(timeout=PROBE_TIMEOUT) as conn:
                    await conn.execute("SELECT 1")
            except Exception as exc:
                log.info("consumer %s: still unavailable: %s", self.name, _describe(exc))
                continue
            assert self._queue is not None
            try:
                self._consumer_tag = await self._queue.consume(self._on_message)
            except Exception as exc:  # RabbitMQ lost meanwhile: the robust channel comes back
                log.info("consumer %s: cannot resume yet: %s", self.name, _describe(exc))
                continue
            break
        self._outage = None
        log.info("consumer %s resumed", self.name)

    def _after_failure(
        self, message: AbstractIncomingMessage, event: CloudEvent, exc: Exception
    ) -> tuple[str, aio_pika.Message]:
        """Where a failed delivery goes next: the retry queue, or the DLQ when spent or when
        its data breaks its contract (BadEvent: a retry would fail alike)."""
        attempts = int_header(message.headers, ATTEMPT) + 1
        error = _describe(exc)
        if isinstance(exc, BadEvent):
            log.error(
                "consumer %s: %s %s breaks its contract, to the DLQ without retries: %s",
                *(self.name, event.type, event.id, error),
            )
            return self._dead_letter(message, error, attempts)
        if attempts >= self._max_attempts:
            log.error(
                "consumer %s: %s %s failed %d times, to the DLQ: %s",
                *(self.name, event.type, event.id, attempts, error),
            )
            return self._dead_letter(message, error, attempts)
        delay = min(self._backoff_max, self._backoff_base * 2 ** (attempts - 1))
        log.warning(
            "consumer %s: %s %s failed (attempt %d of %d), retry in %.2fs: %s",
            *(self.name, event.type, event.id, attempts, self._max_attempts, delay, error),
        )
        headers = _carried_headers(message)
        headers.update({ATTEMPT: attempts, LAST_ERROR: error})
        return retry_queue(self.name), copy_message(message, headers, expiration=delay)

    def _dead_letter(
        self, message: AbstractIncomingMessage, error: str, attempts: int
    ) -> tuple[str, aio_pika.Message]:
        headers = _carried_headers(message)
        headers.update(
            {
                ERROR: error,
                ATTEMPTS: attempts,
                FAILED_AT: datetime.now(UTC).isoformat(),
            }
        )
        return dead_letter_queue(self.name), copy_message(message, headers)

    async def _settle_by_republishing(
        self, message: AbstractIncomingMessage, target: tuple[str, aio_pika.Message]
    ) -> None:
        """Put the copy in its queue, and only once the broker confirmed it, ack the original.
        When the copy cannot be placed the original is requeued instead."""
        queue_name, copy = target
        assert self._channel is not None
        try:
            await self._channel.default_exchange.publish(copy, queue_name, mandatory=True)
        except Exception:
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
            raise
        await message.ack()
        if queue_name == dead_letter_queue(self.name):
            self.dead_lettered += 1
        else:
            self.retried += 1


def _parse(body: bytes) -> CloudEvent:
    """The envelope, with an id the inbox can hold (a UUID)."""
    event = parse(body)
    try:
        uuid.UUID(event.id)
    except ValueError:
        raise MalformedEvent(f"event id {event.id!r} is not a UUID") from None
    return event


def _traceparent(headers: HeadersType) -> str | None:
    value = headers.get("traceparent")
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return value if isinstance(value, str) else None


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def int_header(headers: HeadersType, name: str) -> int:
    try:
        return int(headers.get(name) or 0)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0


def _carried_headers(message: AbstractIncomingMessage) -> HeadersType:
    """The delivery's headers minus the broker's dead-lettering history, plus the routing key
    it was first published with (after a retry it arrives routed by queue name)."""
    headers = {
        key: value
        for key, value in message.headers.items()
        if not key.startswith(BROKER_HEADER_PREFIXES)
    }
    headers.setdefault(ORIGINAL_ROUTING_KEY, message.routing_key or "")
    return headers


def copy_message(
    message: AbstractIncomingMessage, headers: HeadersType, *, expiration: float | None = None
) -> aio_pika.Message:
    """A persistent copy of a delivery with new headers (`expiration` in seconds)."""
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        expiration=expiration,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )


class StartsWhenReachable:
    """Runs a consumer beside a server without making RabbitMQ a start-up dependency: the
    first connection is retried in the background (later losses the consumer recovers by
    itself). What a service puts in its Wiring.background."""

    def __init__(self, consumer: Consumer, retry_seconds: float = 2.0) -> None:
        self.consumer = consumer
        self.retry_seconds = retry_seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._connect(), name=f"start {self.consumer.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()

    async def _connect(self) -> None:
        while True:
            try:
                await self.consumer.start()
                return
            except bus.BusUnavailable as exc:
                log.warning(
                    "%s; consumer %s retries in %.0f s", exc, self.consumer.name, self.retry_seconds
                )
                await asyncio.sleep(self.retry_seconds)
