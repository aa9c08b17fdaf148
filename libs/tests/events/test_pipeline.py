"""The event pipeline against the real PostgreSQL and RabbitMQ: outbox → relay → exchange →
consumer (inbox, leases, lost connections, retention)."""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import AsyncExitStack
from datetime import timedelta

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from tiket.events.v1 import wallet_pb2

from libs.db.transaction import in_statement
from libs.events import bus, retention
from libs.events.consumer import Consumer
from libs.events.outbox import staged_event
from libs.events.relay import OutboxRelay
from libs.events.topology import ConsumerQueue
from libs.tests.events.support import (
    AMQP_URL,
    Broker,
    Recorder,
    all_handled,
    all_sent,
    effect_counts,
    emit_events,
    event_body,
    leased,
    outbox_rows,
    start_consumer,
    start_relay,
    through,
)
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(30)


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
    consumer = await start_consumer(running, pool, broker, recorder, amqp_url=through(rabbit_proxy))
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
    relay = OutboxRelay(pool, AMQP_URL, broker.exchange_name, queues=(), batch_interval=30.0)
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
    dead = OutboxRelay(
        pool, AMQP_URL, broker.exchange_name, queues=(), publish_timeout=1.0, lease=3.0
    )
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


async def test_stop_waits_for_the_handler_in_flight(
    pool: AsyncConnectionPool, broker: Broker
) -> None:
    recorder = Recorder(delay=0.3)
    queue = broker.consumer_queue()
    consumer = Consumer(queue, pool, AMQP_URL, broker.exchange_name, recorder)
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
    await broker.tap()
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
    queue = ConsumerQueue("test.unreachable", ("#",))
    consumer = Consumer(queue, pool, url, "tiket.events.test.x", Recorder())
    with pytest.raises(bus.BusUnavailable) as raised:
        await consumer.start()
    assert "s3cret" not in str(raised.value)


async def test_an_event_staged_outside_a_unit_of_work_is_refused(pool: AsyncConnectionPool) -> None:
    """Staged outside in_statement()/in_transaction(), its relay would not be woken after
    the commit and the event would wait for the next poll."""
    data = wallet_pb2.WalletMoneyMoved(user_id="u")
    with pytest.raises(RuntimeError, match="staged outside"):
        staged_event("/tiket/test", "wallet.topped_up", "u", data)

    async def stage(conn: psycopg.AsyncConnection) -> str:
        return staged_event("/tiket/test", "wallet.topped_up", "u", data)["event_type"]

    assert await in_statement(pool, stage) == "wallet.topped_up"
