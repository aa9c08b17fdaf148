"""The notification service's consumer: every event riders may be told about, into stored
notifications (app.record, in the inbox transaction, so a redelivered event changes
nothing). One durable queue per events exchange, shared by the replicas.

An event type riders are not told about is acknowledged and ignored (its id and type stay
in the inbox); an event whose payload cannot be read is retried and then dead-lettered, for
an operator to look at (`tiket dlq`)."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from libs.events.consumer import Consumer
from libs.events.envelope import CloudEvent
from services.notification.app import NotificationApp

BINDINGS = ["journey.*", "fare.updated", "wallet.*", "booking.*"]


def queue_name(exchange: str) -> str:
    """One queue per events exchange, so two deployments (or test runs) sharing a broker do
    not take each other's deliveries."""
    return f"notification.events.{exchange}"


def queue_names(exchange: str) -> list[str]:
    """Every consumer queue of this service (tests and benchmarks delete them)."""
    return [queue_name(exchange)]


def events_consumer(
    pool: AsyncConnectionPool,
    amqp_url: str,
    exchange: str,
    app: NotificationApp,
    max_attempts: int,
) -> Consumer:
    async def handle(event: CloudEvent, conn: AsyncConnection) -> None:
        await app.record(event, conn)

    return Consumer(
        queue_name(exchange), pool, amqp_url, exchange, BINDINGS, handle, max_attempts=max_attempts
    )
