"""`tiket up`: every service in its own process, started, watched and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from cli import health
from cli.logview import pretty
from libs.config import Settings
from libs.server.runtime import SUPERVISOR_PID
from services import registry


@dataclass
class Child:
    name: str
    address: str
    process: asyncio.subprocess.Process


async def start_all(
    names: list[str], settings: Settings, out: Callable[[str], None], timeout: float = 60.0
) -> list[Child]:
    """Start each service and return once every one reports SERVING; on failure stop the
    ones started and raise with the reason."""
    children: list[Child] = []
    for name in names:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli.main",
            "serve",
            name,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=_child_env(name, settings),
            start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
        )
        children.append(Child(name, settings.addresses[name], process))
    try:
        for child in children:
            await _wait_serving(child, out, timeout)
    except BaseException:
        await stop_all(children, settings.grace_seconds)
        raise
    return children


def _child_env(name: str, settings: Settings) -> dict[str, str]:
    """Our environment for service `name`, naming its own signing key only, and not the
    development identity provider's key (which signs admin tokens: no service gets it)."""
    env = {**os.environ, SUPERVISOR_PID: str(os.getpid())}
    env["TIKET_SERVICE_KEY"] = str(settings.service_key_path(name).absolute())
    env.pop("TIKET_DEV_ISSUER_KEY", None)
    return env


async def _wait_serving(child: Child, out: Callable[[str], None], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    service = registry.grpc_service_names(child.name)[0]
    while time.monotonic() < deadline:
        if child.process.returncode is not None:
            tail = await _read_rest(child)
            raise RuntimeError(f"{child.name} exited with code {child.process.returncode}:\n{tail}")
        if await health.check(child.address, service) == "SERVING":
            out(f"  {child.name:<12} SERVING on {child.address}")
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{child.name} did not report SERVING within {timeout:.0f} s")


async def _read_rest(child: Child) -> str:
    assert child.process.stderr is not None
    data = await child.process.stderr.read()
    lines = data.decode(errors="replace").splitlines()[-15:]
    return "\n".join(pretty(child.name, line) for line in lines)


async def stream_logs(children: list[Child], out: Callable[[str], None]) -> None:
    """Print every child's log lines until all have exited."""
    await asyncio.gather(*(_follow(c, out) for c in children))


async def _follow(child: Child, out: Callable[[str], None] | None) -> None:
    """Read a child's log to its end, printing each line when `out` is given."""
    assert child.process.stderr is not None
    async for raw in child.process.stderr:
        if out is not None:
            out(pretty(child.name, raw.decode(errors="replace").rstrip()))


async def stop_all(
    children: list[Child], grace: float, out: Callable[[str], None] | None = None
) -> None:
    """SIGTERM every child (they drain), then SIGKILL what is left after the grace period.
    Their last log lines are read meanwhile (and printed with `out`): a child whose log pipe
    is full would block in the middle of its drain."""
    readers = [asyncio.create_task(_follow(child, out)) for child in children]
    for child in children:
        if child.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
    try:
        for child in children:
            try:
                await asyncio.wait_for(child.process.wait(), grace + 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                await child.process.wait()
    finally:
        await asyncio.wait(readers, timeout=2)
        for reader in readers:
            reader.cancel()
