"""The event pipeline against the real PostgreSQL and RabbitMQ: outbox → relay → exchange →
consumer (inbox, retries, dead letters). Every test has its own database, exchange and
queues, and removes them."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, suppress
from datetime import timedelta
from pathlib import Path

import aio_pika
import psycopg
import pytest
from aio_pika.abc import AbstractIncomingMessage
from psycopg_pool import AsyncConnectionPool
from tiket.events.v1 import wallet_pb2
from yarl import URL

from libs.db.database import open_pool
from libs.db.migrations import Track
from libs.db.transaction import in_statement, in_transaction
from libs.events import bus, retention
from libs.events.consumer import Consumer, dead_letter_queue, retry_queue
from libs.events.dead_letters import list_dead_letters, replay_dead_letters
from libs.events.envelope import CloudEvent, new_event
from libs.events.outbox import emit, staged_event
from libs.events.relay import OutboxRelay
from libs.events.tracks import EVENTS_TRACK
from tests.support.databases import temporary_database
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

AMQP_URL = os.environ.get("TIKET_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
EFFECTS_TRACK = Track("events_test", Path(__file__).parent / "migrations_events_test")
EVENT_TYPE = "wallet.user_created"
SOURCE = "tiket.test"

pytestmark = pytest.mark.timeout(30)


# --- helpers -------------------------------------------------------------------------------


class RolledBack(Exception):
    """Raised inside a unit of work to roll it back."""


async def emit_events(
    pool: AsyncConnectionPool, count: int = 1, *, commit: bool = True
) -> list[str]:
    """Emit `count` events in one transaction, the way services do (in_transaction, which
    wakes the relay after the commit); roll it back unless `commit`."""
    ids: list[str] = []

    async def work(conn: psycopg.AsyncConnection) -> None:
        for _ in range(count):
            user_id = f"u-{uuid.uuid4().hex[:8]}"
            data = wallet_pb2.UserCreated(user_id=user_id, card_id=f"c-{user_id}")
            ids.append((await emit(conn, SOURCE, EVENT_TYPE, user_id, data)).id)
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

    def __init__(self, *, failing: bool = False, delay: float = 0.0) -> None:
        self.calls = 0
        self.failing = failing
        self.delay = delay
        self.entered = asyncio.Event()

    async def __call__(self, event: CloudEvent, conn: psycopg.AsyncConnection) -> None:
        self.calls += 1
        self.entered.set()
        await asyncio.sleep(self.delay)
        if self.failing:
            raise RuntimeError("the handler is broken")
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

    def consumer_name(self) -> str:
        name = f"test.{uuid.uuid4().hex[:12]}"
        self.queues += [name, retry_queue(name), dead_letter_queue(name)]
        return name

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


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def database_url() -> Iterator[str]:
    with temporary_database([EVENTS_TRACK, EFFECTS_TRACK]) as url:
        yield url


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    pool = await open_pool(database_url, min_size=1, max_size=10)
    yield pool
    await pool.close()


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    connection = await bus.connect(AMQP_URL, robust=False)
    broker = Broker(connection)
    yield broker
    await broker.cleanup()
    await connection.close()


@pytest.fixture
async def running() -> AsyncIterator[AsyncExitStack]:
    """Relays and consumers registered here are stopped at the end, even on failure."""
    async with AsyncExitStack() as stack:
        yield stack


@pytest.fixture
async def rabbit_proxy() -> AsyncIterator[TcpProxy]:
    url = URL(AMQP_URL)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5672)
    await proxy.start()
    yield proxy
    await proxy.stop()


def through(proxy: TcpProxy) -> str:
    return str(URL(AMQP_URL).with_host("127.0.0.1").with_port(proxy.port))


async def start_relay(
    running: AsyncExitStack, pool: AsyncConnectionPool, amqp_url: str, exchange: str, **kw: float
) -> OutboxRelay:
    relay = OutboxRelay(pool, amqp_url, exchange, **kw)  # type: ignore[arg-type]
    await relay.start()
    running.push_async_callback(relay.stop)
    return relay


async def start_consumer(
    running: AsyncExitStack,
    pool: AsyncConnectionPool,
    broker: Broker,
    handler: Recorder,
    **kw: float,
) -> Consumer:
    consumer = Consumer(
        broker.consumer_name(),
        pool,
        AMQP_URL,
        broker.exchange_name,
        ["wallet.*"],
        handler,
        **kw,  # type: ignore[arg-type]
    )
    await consumer.start()
    running.push_async_callback(consumer.stop)
    return consumer


# --- tests ---------------------------------------------------------------------------------


async def test_committed_event_is_consumed_once_and_rolled_back_one_never_published(
    pool: AsyncConnectionPool, broker: Broker, running: AsyncExitStack
) -> None:
    tap = await broker.tap()
    recorder = Recorder()
    consumer = await start_consumer(running, pool, broker, recorder)
    # A poll interval far beyond the deadline below: only the after-commit wake-up can get
    # the event out in time.
    relay = await start_relay(running, pool, AMQP_URL, broker.exchange_name, poll_interval=60)
    await asyncio.sleep(0.2)  # let the relay drain the empty outbox and go to sleep

    [committed] = await emit_events(pool)
    [rolled_back] = await emit_events(pool, commit=False)
    [later] = await emit_events(pool)

    await wait_until(lambda: tap.seen[later] == 1, "the last committed event", within=2.0)
    await wait_until(lambda: consumer.handled == 2, "both committed events handled")
    # The relay marks a batch sent once RabbitMQ confirmed it, which may be after a consumer
    # got it.
    await wait_until(lambda: relay.published == 2, "the relay to mark both events sent")
    assert await effect_counts(pool) == Counter({committed: 1, later: 1})
    assert tap.seen == Counter({committed: 1, later: 1})
    assert rolled_back not in tap.seen
    assert [(r[0], r[1]) for r in await outbox_rows(pool, [committed, rolled_back, later])] == [
        (committed, True),
        (later, True),
    ]
    assert relay.published == 2
    assert recorder.calls == 2


async def test_events_wait_in_the_outbox_while_rabbitmq_is_unreachable(
    pool: AsyncConnectionPool, broker: Broker, running: AsyncExitStack, rabbit_proxy: TcpProxy
) -> None:
    await start_consumer(running, pool, broker, Recorder())
    relay = await start_relay(
        running, pool, through(rabbit_proxy), broker.exchange_name, poll_interval=0.5
    )
    [warmup] = await emit_events(pool)
    await wait_until(lambda: relay.published == 1, "the relay to publish through the proxy")

    rabbit_proxy.cut()
    ids = [event_id for _ in range(5) for event_id in await emit_events(pool)]
    await wait_until(lambda: relay.failures >= 2, "the relay to fail to publish")

    rows = await outbox_rows(pool, ids)
    assert [r[0] for r in rows] == ids
    assert not any(sent for _, sent, _, _ in rows)
    assert all(attempts >= 1 and error for _, _, attempts, error in rows)
    assert set(await effect_counts(pool)) == {warmup}

    rabbit_proxy.restore()
    await wait_until(lambda: all_sent(pool), "the outbox to drain after the restore", within=8)
    await wait_until(lambda: all_handled(pool, ids), "every event to be handled", within=3)
    assert await effect_counts(pool) == Counter({warmup: 1, **dict.fromkeys(ids, 1)})


async def test_a_stalled_broker_times_out_and_nothing_is_lost(
    pool: AsyncConnectionPool, broker: Broker, running: AsyncExitStack, rabbit_proxy: TcpProxy
) -> None:
    await start_consumer(running, pool, broker, Recorder())
    relay = await start_relay(
        running,
        pool,
        through(rabbit_proxy),
        broker.exchange_name,
        poll_interval=0.5,
        publish_timeout=0.5,
    )
    [warmup] = await emit_events(pool)
    await wait_until(lambda: relay.published == 1, "the relay to publish through the proxy")

    rabbit_proxy.stall()
    ids = await emit_events(pool, 3)
    await wait_until(lambda: relay.failures >= 1, "the publish to time out")
    assert not any(sent for _, sent, _, _ in await outbox_rows(pool, ids))

    rabbit_proxy.restore()
    await wait_until(lambda: all_handled(pool, ids), "every event to be handled", within=8)
    # A publish that timed out may still reach the broker: at-least-once, inbox absorbs it.
    assert await effect_counts(pool) == Counter({warmup: 1, **dict.fromkeys(ids, 1)})


async def test_a_consumer_recovers_from_a_lost_connection_without_double_effects(
    pool: AsyncConnectionPool, broker: Broker, running: AsyncExitStack, rabbit_proxy: TcpProxy
) -> None:
    recorder = Recorder(delay=0.3)
    consumer = Consumer(
        broker.consumer_name(),
        pool,
        through(rabbit_proxy),
        broker.exchange_name,
        ["wallet.*"],
        recorder,
    )
    await consumer.start()
    running.push_async_callback(consumer.stop)
    in_flight, body = event_body()
    await broker.publish(body, message_id=in_flight)
    await asyncio.wait_for(recorder.entered.wait(), 5)

    rabbit_proxy.cut()  # the handler in flight is interrupted, its transaction rolled back
    queued = []
    for _ in range(3):
        event_id, body = event_body()
        await broker.publish(body, message_id=event_id)
        queued.append(event_id)
    rabbit_proxy.restore()

    await wait_until(lambda: consumer.handled == 4, "every event after reconnecting")
    assert await effect_counts(pool) == Counter(dict.fromkeys([in_flight, *queued], 1))
    assert recorder.calls == 5  # the interrupted one came back
    assert await broker.message_count(consumer.name) == 0


async def test_a_duplicate_delivery_has_no_second_effect(
    pool: AsyncConnectionPool, broker: Broker, running: AsyncExitStack
) -> None:
    recorder = Recorder()
    consumer = await start_consumer(running, pool, broker, recorder)
    event_id, body = event_body()

    await broker.publish(body, message_id=event_id)
    await broker.publish(body, message_id=event_id)

    await wait_until(lambda: consumer.handled + consumer.duplicates == 2, "both deliveries")
    assert (consumer.handled, consumer.duplicates, recorder.calls) == (1, 1, 1)
    assert await effect_counts(pool) == Counter({event_id: 1})


async def test_a_failing_event_is_retried_then_dead_lettered_and_can_be_replayed(
    pool: AsyncConnectionPool, broker: Broker, running: AsyncExitStack
) -> None:
    recorder = Recorder(failing=True)
    consumer = await start_consumer(
        running, pool, broker, recorder, max_attempts=3, backoff_base=0.05
    )
    dlq = dead_letter_queue(consumer.name)
    event_id, body = event_body()

    await broker.publish(body, message_id=event_id)

    await wait_until(lambda: consumer.dead_lettered == 1, "the event to reach the DLQ")
    assert (recorder.calls, consumer.retried) == (3, 2)
    assert await effect_counts(pool) == Counter()
    for _ in range(2):  # listing leaves the messages in place
        [letter] = await list_dead_letters(AMQP_URL, dlq, limit=10)
        assert letter.event_id == event_id
        assert letter.event_type == EVENT_TYPE
        assert letter.routing_key == EVENT_TYPE
        assert letter.attempts == 3
        assert "RuntimeError: the handler is broken" in letter.error
        assert letter.failed_at
        assert letter.body == body
    assert await broker.message_count(dlq) == 1

    recorder.failing = False
    assert await replay_dead_letters(AMQP_URL, broker.exchange_name, dlq) == 1

    await wait_until(lambda: consumer.handled == 1, "the replayed event to be handled")
    assert await effect_counts(pool) == Counter({event_id: 1})
    assert recorder.calls == 4
    assert await list_dead_letters(AMQP_URL, dlq, limit=10) == []
    assert await broker.message_count(retry_queue(consumer.name)) == 0


async def test_a_replayed_event_gets_all_its_attempts_again(
    pool: AsyncConnectionPool, broker: Broker, running: AsyncExitStack
) -> None:
    recorder = Recorder(failing=True)
    consumer = await start_consumer(
        running, pool, broker, recorder, max_attempts=2, backoff_base=0.05
    )
    dlq = dead_letter_queue(consumer.name)
    event_id, body = event_body()
    await broker.publish(body, message_id=event_id)
    await wait_until(lambda: consumer.dead_lettered == 1, "the event to reach the DLQ")

    assert await replay_dead_letters(AMQP_URL, broker.exchange_name, dlq) == 1

    await wait_until(lambda: consumer.dead_lettered == 2, "the replayed event back in the DLQ")
    assert recorder.calls == 4
    [letter] = await list_dead_letters(AMQP_URL, dlq, limit=10)
    assert (letter.event_id, letter.attempts, letter.routing_key) == (event_id, 2, EVENT_TYPE)


async def test_two_relays_publish_every_event_exactly_once(
    pool: AsyncConnectionPool, broker: Broker, running: AsyncExitStack
) -> None:
    tap = await broker.tap()
    relays = [
        await start_relay(running, pool, AMQP_URL, broker.exchange_name, batch_size=7)
        for _ in range(2)
    ]

    batches = await asyncio.gather(*(emit_events(pool, 10) for _ in range(20)))
    ids = [event_id for batch in batches for event_id in batch]

    await wait_until(
        lambda: sum(relay.published for relay in relays) >= len(ids), "every event published"
    )
    assert await all_sent(pool)
    published = sum(relay.published for relay in relays)
    await wait_until(lambda: tap.seen.total() >= published, "every publish to reach the tap")
    assert published == len(ids) == 200
    assert tap.seen == Counter(dict.fromkeys(ids, 1))


async def test_confirmed_rows_are_marked_by_the_next_claim_or_on_stop(
    pool: AsyncConnectionPool, broker: Broker
) -> None:
    tap = await broker.tap()
    # A batch interval longer than the test: only the next batch's claim or stop() can mark.
    relay = OutboxRelay(pool, AMQP_URL, broker.exchange_name, batch_interval=30.0)
    await relay.start()
    try:
        first = await emit_events(pool, 2)
        await wait_until(lambda: tap.seen.total() >= 2, "the first batch to reach the tap")
        assert relay.published == 0  # confirmed, but its mark waits for the next claim
        assert [sent for _, sent, _, _ in await outbox_rows(pool, first)] == [False, False]
    finally:
        await relay.stop()

    assert relay.published == 2
    assert await all_sent(pool)
    assert tap.seen == Counter(dict.fromkeys(first, 1))


async def test_a_relay_leaves_the_rows_another_relay_leased_alone(
    pool: AsyncConnectionPool, broker: Broker, running: AsyncExitStack, rabbit_proxy: TcpProxy
) -> None:
    tap = await broker.tap()
    stalled = await start_relay(
        running,
        pool,
        through(rabbit_proxy),
        broker.exchange_name,
        publish_timeout=2.0,
        lease=4.0,
    )
    [warmup] = await emit_events(pool)
    await wait_until(lambda: stalled.published == 1, "the relay to publish through the proxy")
    rabbit_proxy.stall()
    ids = await emit_events(pool, 3)
    await wait_until(lambda: leased(pool, ids), "the stalled relay to lease the rows")

    other = await start_relay(running, pool, AMQP_URL, broker.exchange_name, poll_interval=0.05)
    await asyncio.sleep(0.5)  # ten polls, all well within the stalled publish's 2 s

    assert other.published == 0
    assert await leased(pool, ids)
    # The stalled publish times out and gives the rows back; the other relay takes them.
    await wait_until(lambda: other.published == 3, "the other relay to publish the rows")
    assert await all_sent(pool)
    await wait_until(lambda: tap.seen.total() >= 4, "every publish to reach the tap")
    assert tap.seen == Counter(dict.fromkeys([warmup, *ids], 1))


async def test_rows_leased_by_a_relay_that_died_are_published_once_the_lease_ends(
    pool: AsyncConnectionPool, broker: Broker, running: AsyncExitStack
) -> None:
    tap = await broker.tap()
    ids = await emit_events(pool, 3)
    dead = OutboxRelay(pool, AMQP_URL, broker.exchange_name, publish_timeout=1.0, lease=3.0)
    assert len(await dead._claim()) == 3  # and it dies before publishing them

    relay = await start_relay(running, pool, AMQP_URL, broker.exchange_name, poll_interval=0.1)
    await asyncio.sleep(1.0)
    assert relay.published == 0
    assert await leased(pool, ids)

    await wait_until(lambda: relay.published == 3, "the rows to be published", within=5)
    assert await all_sent(pool)
    await wait_until(lambda: tap.seen.total() >= 3, "every publish to reach the tap")
    assert tap.seen == Counter(dict.fromkeys(ids, 1))


async def test_a_failed_publish_gives_its_rows_back_to_be_retried(
    pool: AsyncConnectionPool, broker: Broker, running: AsyncExitStack, rabbit_proxy: TcpProxy
) -> None:
    tap = await broker.tap()
    rabbit_proxy.cut()
    # The default lease (60 s) would outlast this test: the retries below are only possible
    # because each failed attempt ends its lease.
    relay = await start_relay(running, pool, through(rabbit_proxy), broker.exchange_name)
    ids = await emit_events(pool, 3)

    await wait_until(lambda: relay.failures >= 3, "the relay to fail and retry")
    rows = await outbox_rows(pool, ids)
    assert not any(sent for _, sent, _, _ in rows)
    assert all(attempts >= 2 and "cannot connect" in error for _, _, attempts, error in rows)

    rabbit_proxy.restore()
    await wait_until(lambda: all_sent(pool), "the rows to be published after the restore")
    await wait_until(lambda: tap.seen.total() >= 3, "every publish to reach the tap")
    assert tap.seen == Counter(dict.fromkeys(ids, 1))


async def test_malformed_bodies_go_straight_to_the_dlq(
    pool: AsyncConnectionPool, broker: Broker, running: AsyncExitStack
) -> None:
    recorder = Recorder()
    consumer = await start_consumer(running, pool, broker, recorder)
    _, bad_id_body = event_body(event_id="not-a-uuid")

    await broker.publish(b"{not json", message_id="m-1")
    await broker.publish(bad_id_body, message_id="m-2")

    await wait_until(lambda: consumer.dead_lettered == 2, "both bodies in the DLQ")
    letters = await list_dead_letters(AMQP_URL, dead_letter_queue(consumer.name), limit=10)
    errors = {letter.event_id: letter.error for letter in letters}
    assert "not JSON" in errors["m-1"]
    assert "not a UUID" in errors["m-2"]
    assert all(letter.attempts == 0 for letter in letters)
    assert (recorder.calls, consumer.retried, consumer.handled) == (0, 0, 0)


async def test_stop_waits_for_the_handler_in_flight(
    pool: AsyncConnectionPool, broker: Broker
) -> None:
    recorder = Recorder(delay=0.3)
    consumer = Consumer(
        broker.consumer_name(), pool, AMQP_URL, broker.exchange_name, ["wallet.*"], recorder
    )
    await consumer.start()
    event_id, body = event_body()
    await broker.publish(body, message_id=event_id)
    await asyncio.wait_for(recorder.entered.wait(), 5)

    await consumer.stop()

    assert consumer.handled == 1
    assert await effect_counts(pool) == Counter({event_id: 1})
    assert await broker.message_count(consumer.name) == 0  # acked before the connection closed


async def test_retention_deletes_only_old_sent_outbox_rows_and_old_inbox_rows(
    pool: AsyncConnectionPool, broker: Broker, running: AsyncExitStack
) -> None:
    relay = await start_relay(running, pool, AMQP_URL, broker.exchange_name)
    sent = await emit_events(pool, 3)
    await wait_until(lambda: all_sent(pool), "the events to be sent")
    await relay.stop()
    unsent = await emit_events(pool)
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO inbox (consumer, event_id, event_type, handled_at)"
            " VALUES ('c', gen_random_uuid(), 't', now() - interval '2 days'),"
            "        ('c', gen_random_uuid(), 't', now())"
        )

    assert await retention.purge(pool, timedelta(hours=1)) == 1  # the old inbox row
    assert await retention.purge(pool, timedelta(0), batch=2) == 2 + 1  # a batch of each
    assert await retention.purge(pool, timedelta(0), batch=2) == 1
    assert await outbox_rows(pool, sent + unsent) == [(unsent[0], False, 0, None)]
    async with pool.connection() as conn:
        assert await (await conn.execute("SELECT count(*) FROM inbox")).fetchone() == (0,)


async def test_unreachable_rabbitmq_is_reported_clearly(pool: AsyncConnectionPool) -> None:
    url = "amqp://guest:s3cret@127.0.0.1:1/"
    with pytest.raises(bus.BusUnavailable, match=r"cannot connect to RabbitMQ at .*127\.0\.0\.1:1"):
        await bus.connect(url)
    consumer = Consumer("test.unreachable", pool, url, "tiket.events.test.x", ["#"], Recorder())
    with pytest.raises(bus.BusUnavailable) as raised:
        await consumer.start()
    assert "s3cret" not in str(raised.value)


async def test_dead_letter_commands_name_a_missing_queue() -> None:
    with pytest.raises(LookupError, match=r"no queue named 'test\.missing\.dlq'"):
        await list_dead_letters(AMQP_URL, "test.missing.dlq", limit=1)
    with pytest.raises(LookupError, match="no queue named"):
        await replay_dead_letters(AMQP_URL, "tiket.events.test.missing", "test.missing.dlq")


async def test_replay_names_a_missing_exchange(broker: Broker) -> None:
    dlq = dead_letter_queue(broker.consumer_name())
    channel = await broker.connection.channel()
    await channel.declare_queue(dlq, durable=True)
    with pytest.raises(LookupError, match="no exchange named"):
        await replay_dead_letters(AMQP_URL, f"{broker.exchange_name}.missing", dlq)


async def test_an_event_staged_outside_a_unit_of_work_is_refused(pool: AsyncConnectionPool) -> None:
    """Staged outside in_statement()/in_transaction(), its relay would not be woken after
    the commit and the event would wait for the next poll."""
    data = wallet_pb2.WalletMoneyMoved(user_id="u")
    with pytest.raises(RuntimeError, match="staged outside"):
        staged_event("/tiket/test", "wallet.topped_up", "u", data)

    async def stage(conn: psycopg.AsyncConnection) -> str:
        return staged_event("/tiket/test", "wallet.topped_up", "u", data)["event_type"]

    assert await in_statement(pool, stage) == "wallet.topped_up"
