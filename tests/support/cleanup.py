"""Removing what a test or benchmark run created on the shared servers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import aio_pika
import redis.asyncio as redis

from libs.config import Settings
from libs.db.database import drop_database
from libs.events.topology import delete_queues
from services import registry


async def delete_exchange(amqp_url: str, name: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        with contextlib.suppress(Exception):
            await channel.exchange_delete(name)


async def delete_redis_prefix(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def remove_run(settings: Settings, services: Sequence[str]) -> None:
    """Drop the run's databases, delete every service's consumer queues on its exchange, the
    exchange and its Redis keys."""
    for name in services:
        await asyncio.to_thread(drop_database, settings.database_url(name))
    for name in registry.SERVICES:
        for queue in registry.consumer_queues(name, settings.events_exchange):
            await delete_queues(settings.amqp_url, queue)
    await delete_exchange(settings.amqp_url, settings.events_exchange)
    await delete_redis_prefix(settings.redis_url, settings.redis_prefix)
