"""`tiket gate serve --socket`: a reader connects, writes taps, reads one decision per tap."""

from __future__ import annotations

import asyncio
import contextlib

from gate.cli import serve_socket
from tests.support.waiting import wait_until


async def test_each_tap_on_the_socket_gets_its_decision_back(agent, tmp_path):
    path = tmp_path / "reader.sock"
    server = asyncio.create_task(serve_socket(agent, path))
    try:
        await wait_until(path.exists, "the socket")
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"CARD0001\nCARD0001 out\n")
        await writer.drain()
        first = (await reader.readline()).decode()
        second = (await reader.readline()).decode()
        writer.close()
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
    # The fake journey service answers nothing useful and the snapshot was never loaded.
    assert first.startswith("CLOSED CARD0001 in  [offline]") and "(NO_SNAPSHOT)" in first
    assert second.startswith("CLOSED CARD0001 out [gate]") and "(WRONG_GATE_TYPE)" in second
