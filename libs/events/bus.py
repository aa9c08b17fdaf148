"""RabbitMQ plumbing shared by the outbox relay and the consumers: connecting, the events
exchange, and the AMQP form of an event."""

from __future__ import annotations

import asyncio
import contextlib

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    HeadersType,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from yarl import URL

CONTENT_TYPE = "application/cloudevents+json"
CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0


class BusUnavailable(ConnectionError):
    """RabbitMQ cannot be reached (or refused us); the message says where and why."""


def redact(amqp_url: str) -> str:
    """The URL without its password, fit for logs and error messages."""
    url = URL(amqp_url)
    return str(url.with_password("***")) if url.password else amqp_url


async def connect(
    amqp_url: str,
    *,
    robust: bool = True,
    connect_timeout: float = CONNECT_TIMEOUT,
    reconnect_interval: float = 1.0,
) -> AbstractConnection:
    """Open a connection; BusUnavailable names the broker when that fails.

    A robust connection restores its channels, queues and consumers by itself after a loss,
    which suits consumers. The relay asks for a plain one: it must notice a loss at once
    (to roll back and keep its rows unsent) and reconnects with its own backoff.
    """
    try:
        if robust:
            connection: AbstractConnection = await aio_pika.connect_robust(
                amqp_url, timeout=connect_timeout, reconnect_interval=reconnect_interval
            )
        else:
            connection = await aio_pika.connect(amqp_url, timeout=connect_timeout)
    except (*CONNECTION_EXCEPTIONS, TimeoutError) as exc:
        reason = str(exc) or type(exc).__name__
        raise BusUnavailable(f"cannot connect to RabbitMQ at {redact(amqp_url)}: {reason}") from exc
    return connection


async def close_quietly(connection: AbstractConnection | None) -> None:
    """Close a connection that may already be broken or stalled, without hanging on it."""
    if connection is None:
        return
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await connection.close()


async def open_channel(connection: AbstractConnection) -> AbstractChannel:
    """A channel with publisher confirms, where an unroutable mandatory publish raises
    instead of vanishing."""
    return await connection.channel(publisher_confirms=True, on_return_raises=True)


async def declare_events_exchange(channel: AbstractChannel, name: str) -> AbstractExchange:
    """The durable topic exchange every event goes through (routing key = event type)."""
    return await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)


def event_message(
    body: bytes,
    *,
    event_id: str,
    event_type: str,
    traceparent: str | None = None,
    headers: HeadersType | None = None,
) -> aio_pika.Message:
    """The AMQP message of a CloudEvents envelope: persistent, identified by the event id."""
    all_headers: HeadersType = dict(headers or {})
    if traceparent:
        all_headers["traceparent"] = traceparent
    return aio_pika.Message(
        body,
        headers=all_headers,
        content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=event_id,
        type=event_type,
    )
