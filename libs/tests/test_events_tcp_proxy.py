"""The fault-injection proxy used by the event tests, against a local echo server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(10)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    proxy = TcpProxy("127.0.0.1", server.sockets[0].getsockname()[1])
    await proxy.start()
    yield proxy
    await proxy.stop()
    server.close()
    await server.wait_closed()


async def _roundtrip(port: int, payload: bytes = b"ping") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), 2)
    finally:
        writer.close()


async def test_forwards_both_ways(proxy: TcpProxy) -> None:
    assert await _roundtrip(proxy.port, b"hello") == b"hello"


async def test_cut_drops_connections_and_refuses_new_ones_until_restored(proxy: TcpProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"a")
    assert await reader.readexactly(1) == b"a"

    proxy.cut()

    assert await asyncio.wait_for(reader.read(), 2) == b""  # dropped
    writer.close()
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        await _roundtrip(proxy.port)
    proxy.restore()
    assert await _roundtrip(proxy.port) == b"ping"


async def test_stall_holds_bytes_until_restored(proxy: TcpProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    proxy.stall()
    writer.write(b"held")
    await writer.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(4), 0.3)

    proxy.restore()

    assert await asyncio.wait_for(reader.readexactly(4), 2) == b"held"
    writer.close()
