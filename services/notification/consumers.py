"""The notification service's consumer: every event riders may be told about, into stored
notifications (app.record, in the inbox transaction, so a redelivered event changes
nothing). One durable queue per events exchange, shared by the replicas.

A fare.updated fans out before that transaction, in chunks of riders (app.fan_out, which a
redelivery resumes where it stopped). An event type riders are not told about is
acknowledged and ignored (its id and type stay in the inbox); an event whose payload cannot
be read is retried and then dead-lettered, for an operator to look at (`tiket dlq`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from psycopg_pool import AsyncConnectionPool

from libs.events.consumer import Consumer
from libs.events.topology import ConsumerQueue

if TYPE_CHECKING:  # the declarations below are read by every producer (services/registry.py)
    from services.notification.app import NotificationApp

BINDINGS = (
    "journey.*",
    "fare.updated",
    # The wallet events riders are told about (intake.py): not a ride's hold_placed and
    # hold_captured, two of the four events every ride makes, which the queue would carry
    # and the consumer record only to ignore.
    "wallet.topped_up",
    "wallet.refunded",
    "wallet.hold_released",
    "user.status_changed",
    "booking.*",
    "facility.*",
)
RETIRED_BINDINGS = ("wallet.*",)  # bound before issue 18; unbound on declaration


def queue_name(exchange: str) -> str:
    """One queue per events exchange, so two deployments (or test runs) sharing a broker do
    not take each other's deliveries."""
    return f"notification.events.{exchange}"


def queues(exchange: str) -> list[ConsumerQueue]:
    """Every consumer queue of this service, with its bindings."""
    return [ConsumerQueue(queue_name(exchange), BINDINGS, RETIRED_BINDINGS)]


def events_consumer(
    pool: AsyncConnectionPool,
    amqp_url: str,
    exchange: str,
    app: NotificationApp,
    max_attempts: int,
) -> Consumer:
    [queue] = queues(exchange)
    return Consumer(
        queue,
        pool,
        amqp_url,
        exchange,
        app.record,
        prepare=app.fan_out,
        max_attempts=max_attempts,
    )
