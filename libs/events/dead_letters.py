"""What an operator does with dead letters (`tiket dlq`): see how many wait, list them with
why they failed, replay them to the consumer that gave up on them once the cause is fixed,
or discard the ones no fix will make right (a body that is no event, a test message)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractQueue

from libs.events import bus
from libs.events.consumer import (
    ATTEMPTS,
    BROKER_HEADER_PREFIXES,
    ERROR,
    FAILED_AT,
    FAILURE_HEADERS,
    ORIGINAL_ROUTING_KEY,
    copy_message,
    int_header,
)
from libs.events.topology import dead_letter_queue

# Kept on a replay: after it the event arrives routed by queue name, and a later dead letter
# must still name the routing key it was first published with.
REPLAY_DROPS = tuple(h for h in FAILURE_HEADERS if h != ORIGINAL_ROUTING_KEY)


async def waiting_counts(amqp_url: str, queue_names: list[str]) -> dict[str, int | None]:
    """How many messages wait in each queue; None for a queue not declared (yet)."""
    connection = await bus.connect(amqp_url, robust=False)
    counts: dict[str, int | None] = {}
    try:
        for name in queue_names:
            # A passive declare of a missing queue closes its channel: one channel each.
            channel = await connection.channel()
            try:
                queue = await _queue_passive(channel, name)
                counts[name] = queue.declaration_result.message_count or 0
            except LookupError:
                counts[name] = None
            finally:
                with contextlib.suppress(Exception):
                    await channel.close()
        return counts
    finally:
        await bus.close_quietly(connection)


@dataclass(frozen=True)
class DeadLetter:
    """A message waiting in a dead-letter queue."""

    event_id: str | None
    event_type: str | None
    routing_key: str
    error: str
    attempts: int
    failed_at: str
    body: bytes


def _dead_letter_of(message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers
    return DeadLetter(
        event_id=message.message_id,
        event_type=message.type,
        routing_key=str(headers.get(ORIGINAL_ROUTING_KEY) or message.routing_key or ""),
        error=str(headers.get(ERROR, "")),
        attempts=int_header(headers, ATTEMPTS),
        failed_at=str(headers.get(FAILED_AT, "")),
        body=message.body,
    )


async def _queue_passive(channel: AbstractChannel, queue_name: str) -> AbstractQueue:
    """The existing queue (never declares one); a clear error when there is none."""
    try:
        return await channel.declare_queue(queue_name, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        raise LookupError(f"RabbitMQ has no queue named {queue_name!r}") from None


async def list_dead_letters(amqp_url: str, queue_name: str, limit: int) -> list[DeadLetter]:
    """Up to `limit` messages from the head of a dead-letter queue, left in place.

    They are fetched unacknowledged and then all requeued: RabbitMQ puts requeued messages
    back at their original position, and should this process die first, closing the
    connection requeues them just the same.
    """
    connection = await bus.connect(amqp_url, robust=False)
    try:
        channel = await connection.channel()
        queue = await _queue_passive(channel, queue_name)
        fetched: list[AbstractIncomingMessage] = []
        while len(fetched) < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            fetched.append(message)
        if fetched:
            await fetched[-1].nack(multiple=True, requeue=True)
        return [_dead_letter_of(message) for message in fetched]
    finally:
        await bus.close_quietly(connection)


async def replay_dead_letters(amqp_url: str, consumer_queue: str, limit: int | None = None) -> int:
    """Send the dead letters of `consumer_queue` back to that queue (through the default
    exchange, by queue name: no other consumer sees them again) with a fresh attempt count;
    each leaves the DLQ only once the broker confirmed its copy.

    Only the messages present when the replay begins are taken, so an event failing again
    at once is not replayed in a loop. A consumer that handled an event already ignores its
    replay (inbox). Return the number replayed.
    """
    connection = await bus.connect(amqp_url, robust=False)
    try:
        channel = await bus.open_channel(connection)
        await _queue_passive(channel, consumer_queue)  # else every publish would come back
        queue = await _queue_passive(channel, dead_letter_queue(consumer_queue))
        waiting = queue.declaration_result.message_count or 0
        todo = waiting if limit is None else min(limit, waiting)
        replayed = 0
        while replayed < todo:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            await _replay_one(channel.default_exchange, consumer_queue, message)
            replayed += 1
        return replayed
    finally:
        await bus.close_quietly(connection)


async def discard_dead_letters(
    amqp_url: str, queue_name: str, event_ids: frozenset[str] | None
) -> list[str]:
    """Remove from a dead-letter queue the messages whose id is in `event_ids` (every
    message when None); the others stay where they were. Only the messages present when
    it begins are looked at. Return the ids discarded, in queue order."""
    connection = await bus.connect(amqp_url, robust=False)
    try:
        channel = await connection.channel()
        queue = await _queue_passive(channel, queue_name)
        waiting = queue.declaration_result.message_count or 0
        discarded: list[str] = []
        kept: list[AbstractIncomingMessage] = []
        for _ in range(waiting):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            if event_ids is None or message.message_id in event_ids:
                await message.ack()
                discarded.append(message.message_id or "")
            else:
                kept.append(message)
        for message in kept:  # back at their places, once all were looked at
            await message.nack(requeue=True)
        return discarded
    finally:
        await bus.close_quietly(connection)


async def _replay_one(
    exchange: AbstractExchange, consumer_queue: str, message: AbstractIncomingMessage
) -> None:
    fresh = {
        key: value
        for key, value in message.headers.items()
        if key not in REPLAY_DROPS and not key.startswith(BROKER_HEADER_PREFIXES)
    }
    try:
        await exchange.publish(copy_message(message, fresh), consumer_queue, mandatory=True)
    except Exception as exc:
        with contextlib.suppress(Exception):
            await message.nack(requeue=True)
        raise RuntimeError(
            f"could not replay event {message.message_id} to {consumer_queue!r}: "
            f"{type(exc).__name__}: {exc}; it stays in the DLQ"
        ) from exc
    await message.ack()
