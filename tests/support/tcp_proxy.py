"""A TCP proxy for fault injection: tests reach a real server through it, then cut or stall
the link without touching the server itself (which other tests share)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

CHUNK = 65536


@dataclass(eq=False)
class _Link:
    """One proxied connection: both sockets and the two tasks copying between them."""

    writers: tuple[asyncio.StreamWriter, asyncio.StreamWriter]
    pumps: tuple[asyncio.Task[None], asyncio.Task[None]]

    def drop(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        for pump in self.pumps:
            pump.cancel()


class TcpProxy:
    """Forwards 127.0.0.1:`port` to the target.

    cut(): drop every connection and refuse new ones, as if the server were gone.
    stall(): keep connections open but forward nothing, as if the network hung.
    slow(seconds): forward everything, each chunk that much late (a slow link or server).
    restore(): back to normal.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._refusing = False
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._delay = 0.0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._drop_all()
        await asyncio.gather(
            *(p for link in self._links for p in link.pumps), return_exceptions=True
        )
        if self._server is not None:
            await self._server.wait_closed()

    def cut(self) -> None:
        self._refusing = True
        self._drop_all()

    def stall(self) -> None:
        self._flowing.clear()

    def slow(self, seconds: float) -> None:
        self._delay = seconds

    def restore(self) -> None:
        self._refusing = False
        self._flowing.set()
        self._delay = 0.0

    def _drop_all(self) -> None:
        for link in self._links:
            link.drop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        if self._refusing:  # cut while we were connecting
            writer.transport.abort()
            up_writer.transport.abort()
            return
        link = _Link(
            (writer, up_writer),
            (
                asyncio.create_task(self._pump(reader, up_writer)),
                asyncio.create_task(self._pump(up_reader, writer)),
            ),
        )
        self._links.add(link)
        try:
            # When one side closes, the link is over.
            await asyncio.wait(link.pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            link.drop()
            await asyncio.gather(*link.pumps, return_exceptions=True)
            self._links.discard(link)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(CHUNK):
                await self._flowing.wait()
                if self._delay:
                    await asyncio.sleep(self._delay)
                writer.write(data)
                await writer.drain()
