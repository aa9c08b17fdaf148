"""Event handlers of the fare service: fare.updated renews the fare cache generation.

The writer renews it right after its commit; the consumer does it again for the changes made
by other processes and for a writer that died between its commit and the renewal. Redis is
shared by every replica, so one delivery per event is enough: the queue is shared, not one
per replica.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from libs.events.consumer import Consumer
from libs.events.envelope import CloudEvent
from libs.events.topology import ConsumerQueue
from services.fare.events import FARE_UPDATED

if TYPE_CHECKING:  # every service's relay reads queues(): it must not load the fare cache
    from services.fare.cache import FareCache


def queue_name(exchange: str) -> str:
    """One queue per events exchange, so two deployments (or test runs) sharing a broker do
    not take each other's deliveries."""
    return f"fare.cache-invalidation.{exchange}"


def queues(exchange: str) -> list[ConsumerQueue]:
    """Every consumer queue of this service, with its bindings."""
    return [ConsumerQueue(queue_name(exchange), (FARE_UPDATED,))]


def cache_invalidation(
    pool: AsyncConnectionPool, amqp_url: str, exchange: str, cache: FareCache
) -> Consumer:
    async def handle(event: CloudEvent, conn: AsyncConnection) -> None:
        await cache.changed()  # never raises: an unreachable Redis is settled by the cache

    [queue] = queues(exchange)
    return Consumer(queue, pool, amqp_url, exchange, handle)
