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


async def test_a_reader_gone_before_its_answer_is_a_warning_and_the_socket_serves_on(
    agent, tmp_path, caplog
):
    """A reader that disconnects before reading its answer (a controller restarting) costs
    one warning naming the tap — no 'Unhandled exception' traceback — and the next reader
    is served."""
    path = tmp_path / "reader.sock"
    server = asyncio.create_task(serve_socket(agent, path))
    try:
        await wait_until(path.exists, "the socket")
        with caplog.at_level("WARNING"):
            _, gone = await asyncio.open_unix_connection(path)
            gone.write(b"CARD0001\n" * 50)
            gone.transport.abort()  # reset: nothing it sent will be answered to it
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"CARD0002 out\n")
            await writer.drain()
            answer = (await reader.readline()).decode()
            writer.close()
            await wait_until(
                lambda: any("reader went away" in r.getMessage() for r in caplog.records),
                "the warning",
            )
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
    assert answer.startswith("CLOSED CARD0002 out [gate]")
    texts = [r.getMessage() for r in caplog.records]
    assert not any("Unhandled exception" in t for t in texts), texts
    assert not any(r.exc_info for r in caplog.records if "reader went away" in r.getMessage())
