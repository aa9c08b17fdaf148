"""What the event tests share: emitting events the way services do, a handler recording its
effects, the test's own exchange and queues, and ways to look at the outbox."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import Sequence
from contextlib import AsyncExitStack, suppress
from pathlib import Path

import aio_pika
import psycopg
from aio_pika.abc import AbstractIncomingMessage
from psycopg_pool import AsyncConnectionPool
from tiket.events.v1 import wallet_pb2
from yarl import URL

from libs.db.migrations import Track
from libs.db.transaction import in_transaction
from libs.events import bus
from libs.events.consumer import Consumer
from libs.events.envelope import CloudEvent, new_event
from libs.events.outbox import emit
from libs.events.relay import OutboxRelay
from libs.events.topology import ConsumerQueue, dead_letter_queue, retry_queue
from tests.support.tcp_proxy import TcpProxy

AMQP_URL = os.environ.get("TIKET_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
EFFECTS_TRACK = Track("events_test", Path(__file__).parent / "migrations_events_test")
EVENT_TYPE = "wallet.user_created"
SOURCE = "tiket.test"


class RolledBack(Exception):
    """Raised inside a unit of work to roll it back."""


async def emit_events(
    pool: AsyncConnectionPool, count: int = 1, *, commit: bool = True, event_type: str = EVENT_TYPE
) -> list[str]:
    """Emit `count` events in one transaction, the way services do (in_transaction, which
    wakes the relay after the commit); roll it back unless `commit`."""
    ids: list[str] = []

    async def work(conn: psycopg.AsyncConnection) -> None:
        for _ in range(count):
            user_id = f"u-{uuid.uuid4().hex[:8]}"
            data = wallet_pb2.UserCreated(user_id=user_id, card_id=f"c-{user_id}")
            ids.append((await emit(conn, SOURCE, event_type, user_id, data)).id)
        if not commit:
            raise RolledBack

    with suppress(RolledBack):
        await in_transaction(pool, work)
    return ids


def event_body(event_id: str | None = None) -> tuple[str, bytes]:
    event = new_event(SOURCE, EVENT_TYPE, "u-1", wallet_pb2.UserCreated(user_id="u-1"))
    if event_id:
        event = CloudEvent(event_id, event.source, event.type, event.time, "u-1", event.data)
    return event.id, event.to_json()


async def effect_counts(pool: AsyncConnectionPool) -> Counter[str]:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT event_id::text FROM effects")
        return Counter(row[0] for row in await cur.fetchall())


async def outbox_rows(pool: AsyncConnectionPool, ids: list[str]) -> list[tuple]:
    """(event_id, sent, attempts, last_error) of the given events."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT event_id::text, sent_at IS NOT NULL, attempts, last_error FROM outbox "
            "WHERE event_id = ANY(%s::uuid[]) ORDER BY seq",
            (ids,),
        )
        return await cur.fetchall()


async def leased(pool: AsyncConnectionPool, ids: list[str]) -> bool:
    """Whether every one of these events is unsent and under a lease that has not ended."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM outbox WHERE event_id = ANY(%s::uuid[])"
            " AND sent_at IS NULL AND claimed_until > now()",
            (ids,),
        )
        row = await cur.fetchone()
        return row is not None and row[0] == len(ids)


async def all_handled(pool: AsyncConnectionPool, ids: list[str]) -> bool:
    return set(ids) <= set(await effect_counts(pool))


async def all_sent(pool: AsyncConnectionPool) -> bool:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        row = await cur.fetchone()
        return row is not None and row[0] == 0


class Recorder:
    """A handler that writes one `effects` row per call, or fails while `failing`."""

    def __init__(
        self, *, failing: bool = False, delay: float = 0.0, raises: Exception | None = None
    ) -> None:
        self.calls = 0
        self.failing = failing
        self.delay = delay
        self.raises = raises or RuntimeError("the handler is broken")
        self.entered = asyncio.Event()

    async def __call__(self, event: CloudEvent, conn: psycopg.AsyncConnection) -> None:
        self.calls += 1
        self.entered.set()
        await asyncio.sleep(self.delay)
        if self.failing:
            raise self.raises
        await conn.execute(
            "INSERT INTO effects (consumer, event_id, user_id) VALUES (%s, %s, %s)",
            ("test", event.id, event.data.get("userId", "")),
        )


class Tap:
    """A plain queue on the exchange counting every delivery by message id."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self.seen[message.message_id or ""] += 1


class Broker:
    """The test's own exchange and queues, deleted at the end."""

    def __init__(self, connection: aio_pika.abc.AbstractConnection) -> None:
        self.connection = connection
        self.exchange_name = f"tiket.events.test.{uuid.uuid4().hex}"
        self.queues: list[str] = []

    def consumer_queue(self, *bindings: str) -> ConsumerQueue:
        """The declaration of a new consumer queue (its retry queue and DLQ are deleted at
        the end too); bound to wallet.* unless told otherwise."""
        name = f"test.{uuid.uuid4().hex[:12]}"
        self.queues += [name, retry_queue(name), dead_letter_queue(name)]
        return ConsumerQueue(name, bindings or ("wallet.*",))

    async def tap(self, pattern: str = "#") -> Tap:
        tap = Tap()
        name = f"test.tap.{uuid.uuid4().hex[:12]}"
        self.queues.append(name)
        channel = await self.connection.channel()
        exchange = await bus.declare_events_exchange(channel, self.exchange_name)
        queue = await channel.declare_queue(name, auto_delete=True)
        await queue.bind(exchange, pattern)
        await queue.consume(tap.on_message, no_ack=True)
        return tap

    async def publish(self, body: bytes, *, message_id: str) -> None:
        channel = await bus.open_channel(self.connection)
        exchange = await bus.declare_events_exchange(channel, self.exchange_name)
        message = bus.event_message(body, event_id=message_id, event_type=EVENT_TYPE)
        await exchange.publish(message, EVENT_TYPE, mandatory=True)
        await channel.close()

    async def message_count(self, queue_name: str) -> int:
        channel = await self.connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        await channel.close()
        return queue.declaration_result.message_count or 0

    async def cleanup(self) -> None:
        channel = await self.connection.channel()
        for name in self.queues:
            await channel.queue_delete(name)
        await channel.exchange_delete(self.exchange_name)
        await channel.close()


def through(proxy: TcpProxy, url: str = AMQP_URL) -> str:
    """`url` (AMQP or PostgreSQL) reaching its server through `proxy`."""
    return str(URL(url).with_host("127.0.0.1").with_port(proxy.port))


async def start_relay(
    running: AsyncExitStack,
    pool: AsyncConnectionPool,
    amqp_url: str,
    exchange: str,
    *,
    queues: Sequence[ConsumerQueue] = (),
    **kw: float,
) -> OutboxRelay:
    """A relay declaring `queues` (none: the test's consumers declare their own)."""
    relay = OutboxRelay(pool, amqp_url, exchange, queues=queues, **kw)  # type: ignore[arg-type]
    await relay.start()
    running.push_async_callback(relay.stop)
    return relay


async def start_consumer(
    running: AsyncExitStack,
    pool: AsyncConnectionPool,
    broker: Broker,
    handler: Recorder,
    *,
    queue: ConsumerQueue | None = None,
    amqp_url: str = AMQP_URL,
    **kw: float,
) -> Consumer:
    queue = queue or broker.consumer_queue()
    consumer = Consumer(
        queue,
        pool,
        amqp_url,
        broker.exchange_name,
        handler,
        **kw,  # type: ignore[arg-type]
    )
    await consumer.start()
    running.push_async_callback(consumer.stop)
    return consumer
