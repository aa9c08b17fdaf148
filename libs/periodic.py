"""A background job that runs a coroutine every few seconds beside the server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from libs.outages import is_outage

log = logging.getLogger(__name__)


class Periodic:
    """Runs `work` every `interval` seconds; `work` returning a positive count (a full batch
    done) runs it again at once, and so does wake(). Failures are logged and retried next
    tick: an outage (the database or Redis unreachable, libs/outages.py) as one
    warning line, anything else with its traceback."""

    def __init__(self, name: str, work: Callable[[], Awaitable[int]], interval: float) -> None:
        self.name = name
        self.work = work
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Run `work` now rather than at the next tick (e.g. right after a commit that gave
        it something to do); a wake during a run makes one more run."""
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                done = await self.work()
                if done:
                    log.info("%s: %d done", self.name, done)
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_outage(exc):
                    log.warning(
                        "%s: a dependency is unreachable (%s); retrying in %.1f s",
                        self.name,
                        " ".join(str(exc).split()) or type(exc).__name__,
                        self.interval,
                    )
                else:
                    log.exception("%s failed; retrying in %.1f s", self.name, self.interval)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
