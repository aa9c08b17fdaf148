"""The analytics service's one consumer: every event on the exchange (`#`), each recorded
by AnalyticsApp.record in the transaction of its inbox record, so a redelivery counts
nothing twice. Events of types it does not know are stored and acknowledged; an event of a
known type it cannot read is retried, then dead-lettered (nothing is acked and dropped).
One queue shared by the replicas: each event is counted by one of them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from psycopg_pool import AsyncConnectionPool

from libs.events.consumer import Consumer
from libs.events.topology import ConsumerQueue

if TYPE_CHECKING:  # the declarations below are read by every producer (services/registry.py)
    from services.analytics.app import AnalyticsApp

EVERY_EVENT = "#"


def queue_name(exchange: str) -> str:
    """One queue per events exchange, so two deployments (or test runs) sharing a broker do
    not take each other's deliveries."""
    return f"analytics.events.{exchange}"


def queues(exchange: str) -> list[ConsumerQueue]:
    """Every consumer queue of this service, with its bindings."""
    return [ConsumerQueue(queue_name(exchange), (EVERY_EVENT,))]


def events_consumer(
    pool: AsyncConnectionPool, amqp_url: str, exchange: str, app: AnalyticsApp
) -> Consumer:
    [queue] = queues(exchange)
    return Consumer(
        queue, pool, amqp_url, exchange, app.record, backoff_base=app.config.retry_backoff_seconds
    )
