"""Removing what a test run created on the shared servers."""

from __future__ import annotations

import contextlib

import aio_pika
import redis.asyncio as redis


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
