"""The queues of the events exchange, declared by whoever may need them first.

Each consumer owns three durable queues (libs/events/consumer.py): `<name>` bound to its
routing-key patterns, `<name>.retry` (failed deliveries wait out their backoff, then go back
to `<name>`) and `<name>.dlq`. A queue that does not exist yet takes nothing, so the producer
side declares every consumer's queues too: each outbox relay when it connects, and `tiket
up` once before it starts the services. An event published before a consumer ever ran then
waits in that consumer's queue. The declarations come from each service's consumers module
through services/registry.py.

Declaring is idempotent. A pattern a consumer stops taking is listed in its `retired`
bindings, which every declaration unbinds (unbinding what is not bound is a no-op), so a
deployment that bound it once stops routing those events to the queue when a relay of the
new version next connects.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from libs.events import bus


@dataclass(frozen=True)
class ConsumerQueue:
    """A consumer's queue on the events exchange and the routing-key patterns it takes."""

    name: str
    bindings: tuple[str, ...]
    retired: tuple[str, ...] = ()


def retry_queue(name: str) -> str:
    return f"{name}.retry"


def dead_letter_queue(name: str) -> str:
    return f"{name}.dlq"


async def declare_queue(
    channel: AbstractChannel, exchange: AbstractExchange, queue: ConsumerQueue
) -> AbstractQueue:
    """The consumer's queue with its bindings (its retired ones unbound), its retry queue
    and its DLQ; the first."""
    main = await channel.declare_queue(queue.name, durable=True)
    for pattern in queue.bindings:
        await main.bind(exchange, pattern)
    for pattern in queue.retired:
        await main.unbind(exchange, pattern)
    await channel.declare_queue(
        retry_queue(queue.name),
        durable=True,
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue.name},
    )
    await channel.declare_queue(dead_letter_queue(queue.name), durable=True)
    return main


async def declare(
    channel: AbstractChannel, exchange_name: str, queues: Sequence[ConsumerQueue]
) -> AbstractExchange:
    """The events exchange and every one of `queues`; the exchange."""
    exchange = await bus.declare_events_exchange(channel, exchange_name)
    for queue in queues:
        await declare_queue(channel, exchange, queue)
    return exchange


async def apply(amqp_url: str, exchange_name: str, queues: Sequence[ConsumerQueue]) -> None:
    """Declare the exchange and `queues` on their own connection (`tiket up`);
    BusUnavailable when RabbitMQ cannot be reached."""
    connection = await bus.connect(amqp_url, robust=False)
    try:
        await declare(await connection.channel(), exchange_name, queues)
    finally:
        await bus.close_quietly(connection)


async def delete_queues(amqp_url: str, name: str) -> None:
    """Remove a consumer's queue with its retry queue and DLQ (the end of a test run or a
    benchmark; a deployment keeps them)."""
    connection = await bus.connect(amqp_url, robust=False)
    try:
        channel = await connection.channel()
        for queue in (name, retry_queue(name), dead_letter_queue(name)):
            with contextlib.suppress(Exception):
                await channel.queue_delete(queue)
    finally:
        await bus.close_quietly(connection)


def registered(exchange_name: str) -> list[ConsumerQueue]:
    """Every consumer queue the services of services/registry.py declare on the exchange:
    what a relay declares when it is given none. Imported on demand, the one place a library
    looks at the list of services (which itself imports only their consumer declarations)."""
    from services import registry

    return registry.topology(exchange_name)
