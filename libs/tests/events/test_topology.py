"""The queues exist before the first event: the relay declares every registered consumer's
queue and bindings, and publishes mandatory, so an event nobody's queue takes stays unsent
(its reason on the outbox row) and is retried instead of vanishing."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from psycopg_pool import AsyncConnectionPool

from libs.events import bus, topology
from libs.events.relay import OutboxRelay
from libs.events.topology import dead_letter_queue, delete_queues, retry_queue
from libs.tests.events.support import (
    AMQP_URL,
    Broker,
    Recorder,
    all_handled,
    all_sent,
    effect_counts,
    emit_events,
    outbox_rows,
    start_consumer,
    start_relay,
)
from services import registry
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def registry_queues(broker: Broker) -> AsyncIterator[None]:
    """Every registered service's consumer queues on the test's exchange are deleted at the
    end."""
    yield
    for service in registry.SERVICES:
        for name in registry.consumer_queues(service, broker.exchange_name):
            await delete_queues(AMQP_URL, name)


async def test_events_emitted_before_any_consumer_ran_wait_in_its_queue(
    pool: AsyncConnectionPool,
    broker: Broker,
    running: AsyncExitStack,
    registry_queues: None,
) -> None:
    """A relay as every service starts it (no topology given: the registry's): the events
    of a fresh deployment, written before analytics ever started, reach it once it does."""
    relay = OutboxRelay(pool, AMQP_URL, broker.exchange_name)
    await relay.start()
    running.push_async_callback(relay.stop)
    ids = await emit_events(pool, 3)
    await wait_until(lambda: all_sent(pool), "the relay to publish the events")

    [analytics] = registry.consumer_queues("analytics", broker.exchange_name)
    await start_consumer(
        running, pool, broker, Recorder(), queue=topology.ConsumerQueue(analytics, ("#",))
    )

    await wait_until(lambda: all_handled(pool, ids), "the events to reach the late consumer")
    assert await effect_counts(pool) == Counter(dict.fromkeys(ids, 1))


async def test_an_unroutable_event_stays_unsent_with_its_reason_and_is_retried(
    pool: AsyncConnectionPool, broker: Broker, running: AsyncExitStack
) -> None:
    """No queue takes `nobody.listens`: it stays in the outbox with why, while the routed
    event of the same batch is sent; once a queue is bound to it, a retry delivers it."""
    wallet = broker.consumer_queue()
    relay = await start_relay(
        running, pool, AMQP_URL, broker.exchange_name, queues=[wallet], unroutable_delay=0.2
    )
    [routed] = await emit_events(pool)
    [lost] = await emit_events(pool, event_type="nobody.listens")
    await wait_until(lambda: relay.unroutable >= 2, "the relay to retry the unroutable event")

    rows = dict((r[0], r[1:]) for r in await outbox_rows(pool, [routed, lost]))
    assert rows[routed][0] is True
    sent, attempts, error = rows[lost]
    assert (sent, attempts >= 2) == (False, True)
    assert "unroutable" in error and "NO_ROUTE" in error and "nobody.listens" in error

    late = broker.consumer_queue("nobody.#")
    consumer = await start_consumer(running, pool, broker, Recorder(), queue=late)
    await wait_until(lambda: all_sent(pool), "the retry to publish it")
    await wait_until(lambda: consumer.handled == 1, "the late queue to receive it")
    assert await effect_counts(pool) == Counter({lost: 1})


async def test_applying_the_topology_declares_every_queue_binding_retry_queue_and_dlq(
    broker: Broker, registry_queues: None
) -> None:
    """What `tiket up` does once before starting the services."""
    declared = registry.topology(broker.exchange_name)
    await topology.apply(AMQP_URL, broker.exchange_name, declared)
    await topology.apply(AMQP_URL, broker.exchange_name, declared)  # idempotent
    assert {"notification", "analytics"} <= {q.name.split(".")[0] for q in declared}
    for queue in declared:
        for name in (queue.name, retry_queue(queue.name), dead_letter_queue(queue.name)):
            assert await broker.message_count(name) == 0  # declared (passive would fail)

    assert await takers(broker, declared, "journey.checked_out") == {"notification", "analytics"}


async def test_a_retired_binding_is_unbound_when_the_queue_is_declared_again(
    broker: Broker, registry_queues: None
) -> None:
    """A deployment whose notification queue was bound to `wallet.*` (before issue 18):
    once the topology is declared again, a ride's hold events reach analytics alone, while
    a top-up still reaches both."""
    declared = registry.topology(broker.exchange_name)
    as_before = [topology.ConsumerQueue(q.name, (*q.bindings, *q.retired)) for q in declared]
    await topology.apply(AMQP_URL, broker.exchange_name, as_before)
    assert await takers(broker, as_before, "wallet.hold_placed") == {"notification", "analytics"}

    await topology.apply(AMQP_URL, broker.exchange_name, declared)
    await topology.apply(AMQP_URL, broker.exchange_name, declared)  # unbinding twice: no-op
    assert await takers(broker, declared, "wallet.hold_placed") == {"analytics"}
    assert await takers(broker, declared, "wallet.hold_captured") == {"analytics"}
    assert await takers(broker, declared, "wallet.topped_up") == {"notification", "analytics"}


async def takers(broker: Broker, queues: list[topology.ConsumerQueue], event_type: str) -> set[str]:
    """The services whose queues one `event_type` event, published and confirmed, lands in
    (the queues are purged afterwards)."""
    channel = await bus.open_channel(broker.connection)
    exchange = await channel.get_exchange(broker.exchange_name, ensure=True)
    message = bus.event_message(b"{}", event_id="e-1", event_type=event_type)
    await exchange.publish(message, event_type, mandatory=True)  # confirmed: queued
    found = {q.name.split(".")[0] for q in queues if await broker.message_count(q.name)}
    for queue in queues:
        await (await channel.get_queue(queue.name, ensure=True)).purge()
    await channel.close()
    return found
