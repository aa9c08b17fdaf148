"""Gates on a slow link resyncing at once: server-streaming calls that read their first
message and then stop reading, until let go. For proving a stream never holds what other
calls need (a pooled database connection) while its reader dawdles."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from grpc import aio

# A gate on a slow link: its HTTP/2 receive window stays small (no BDP probing), so a reader
# that stops reading stalls the stream mid-way instead of buffering all of it.
SLOW_LINK = [("grpc.http2.bdp_probe", 0)]


class PausedReaders:
    """What `paused_readers` yields: after the block, `results` holds each reader's whole
    stream (its messages) or the exception that ended it."""

    results: list[list[Any] | BaseException]


async def read_all(call) -> list[Any]:
    items = []
    while (item := await call.read()) is not aio.EOF:
        items.append(item)
    return items


@asynccontextmanager
async def paused_readers(
    address: str, start: Callable[[aio.Channel], Any], count: int
) -> AsyncIterator[PausedReaders]:
    """`count` calls made by `start(channel)` over one slow-link channel to `address`, each
    paused after its first message while the block runs; then let go and read to the end."""
    readers = PausedReaders()
    started = asyncio.Semaphore(0)
    go_on = asyncio.Event()
    channel = aio.insecure_channel(address, options=SLOW_LINK)

    async def reader() -> list[Any]:
        call = start(channel)
        try:
            first = await call.read()
        finally:
            started.release()
        await go_on.wait()
        return [first, *await read_all(call)]

    tasks = [asyncio.create_task(reader()) for _ in range(count)]
    try:
        for _ in range(count):
            await started.acquire()
        yield readers
    finally:
        go_on.set()
        readers.results = await asyncio.gather(*tasks, return_exceptions=True)
        await channel.close()
