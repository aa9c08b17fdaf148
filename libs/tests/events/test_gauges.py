"""The gauges of the event plumbing (libs/events/gauges.py): the outbox backlog and the age
of its oldest event, and what waits in a consumer's queues and its dead-letter queue."""

from __future__ import annotations

import time

import aio_pika
import pytest
from prometheus_client import REGISTRY
from psycopg_pool import AsyncConnectionPool

from libs.events import topology
from libs.events.gauges import QueueGauges, outbox_gauges
from libs.tests.events.support import AMQP_URL, EVENT_TYPE, Broker, emit_events, event_body

pytestmark = pytest.mark.timeout(30)


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_the_outbox_backlog_and_the_age_of_its_oldest_event(
    pool: AsyncConnectionPool,
) -> None:
    job = outbox_gauges("gauges-test", pool)
    before = time.time()
    await job.work()
    assert gauge("tiket_outbox_unsent", service="gauges-test") == 0
    refreshed = gauge(
        "tiket_gauges_refreshed_timestamp_seconds", service="gauges-test", job="outbox"
    )
    assert refreshed is not None and refreshed >= before
    assert gauge("tiket_outbox_oldest_unsent_seconds", service="gauges-test") == 0

    ids = await emit_events(pool, 3)
    async with pool.connection() as conn:
        # One written five minutes ago, one leased by a relay: both still unsent.
        await conn.execute(
            "UPDATE outbox SET created_at = now() - interval '5 minutes' WHERE event_id = %s",
            (ids[0],),
        )
        await conn.execute(
            "UPDATE outbox SET claimed_until = now() + interval '1 minute' WHERE event_id = %s",
            (ids[1],),
        )
    await job.work()
    assert gauge("tiket_outbox_unsent", service="gauges-test") == 3
    assert gauge("tiket_outbox_oldest_unsent_seconds", service="gauges-test") >= 300

    async with pool.connection() as conn:
        await conn.execute("UPDATE outbox SET sent_at = now(), claimed_until = NULL")
    await job.work()
    assert gauge("tiket_outbox_unsent", service="gauges-test") == 0
    assert gauge("tiket_outbox_oldest_unsent_seconds", service="gauges-test") == 0


async def test_consumer_lag_and_dead_letters_are_counted_in_place(broker: Broker) -> None:
    queue = broker.consumer_queue(EVENT_TYPE)
    channel = await broker.connection.channel(publisher_confirms=True)
    exchange = await topology.declare(channel, broker.exchange_name, [queue])
    for _ in range(2):
        event_id, body = event_body()
        await exchange.publish(aio_pika.Message(body, message_id=event_id), EVENT_TYPE)
    dlq = topology.dead_letter_queue(queue.name)
    await channel.default_exchange.publish(aio_pika.Message(b"{}"), dlq)
    await channel.close()

    gauges = QueueGauges("test", [queue.name], AMQP_URL)
    try:
        await gauges.observe()
        await gauges.observe()  # counting takes nothing out of the queues
    finally:
        await gauges.stop()
    assert gauge("tiket_consumer_lag_messages", queue=queue.name) == 2
    assert gauge("tiket_gauges_refreshed_timestamp_seconds", service="test", job="queues")
    assert gauge("tiket_dlq_messages", queue=queue.name) == 1
    assert await broker.message_count(queue.name) == 2


async def test_a_queue_not_declared_yet_leaves_the_gauges_alone(broker: Broker) -> None:
    gauges = QueueGauges("test-undeclared", ["test.never-declared"], AMQP_URL)
    try:
        assert await gauges.observe() == 0
    finally:
        await gauges.stop()
    assert gauge("tiket_dlq_messages", queue="test.never-declared") is None
    # Never refreshed: the refresh time stays at 0, so the GaugesStale alert can fire.
    labels = {"service": "test-undeclared", "job": "queues"}
    assert gauge("tiket_gauges_refreshed_timestamp_seconds", **labels) == 0


def test_a_service_without_consumers_has_no_queue_refresh_series() -> None:
    """The user, journey and booking services consume nothing: a refresh time stuck at 0
    for them would keep TiketGaugesStale firing in every cluster."""
    QueueGauges("test-no-consumers", [], AMQP_URL)
    labels = {"service": "test-no-consumers", "job": "queues"}
    assert gauge("tiket_gauges_refreshed_timestamp_seconds", **labels) is None
