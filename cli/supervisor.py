"""`tiket up`: every service in its own process, started, watched and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

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
    started: float = field(default_factory=time.monotonic)


@dataclass
class Restarts:
    """When a service that exited on its own starts again: at once after a long life, after
    a pause that doubles while it keeps exiting young (a crash at start, a port taken),
    never after `give_up_after` young exits in a row — then the mesh stops, saying why."""

    young_seconds: float = 30.0
    give_up_after: int = 5
    young_exits: int = 0

    def after_exit(self, lived_seconds: float) -> float | None:
        """Seconds to wait before starting it again; None: give up."""
        self.young_exits = self.young_exits + 1 if lived_seconds < self.young_seconds else 0
        if self.young_exits >= self.give_up_after:
            return None
        return 2.0**self.young_exits - 1  # 0, 1, 3, 7, 15 s


async def start_all(
    names: list[str], settings: Settings, out: Callable[[str], None], timeout: float = 60.0
) -> list[Child]:
    """Start each service and return once every one reports SERVING; on failure stop the
    ones started and raise with the reason."""
    children = [
        Child(name, settings.addresses[name], await _spawn(name, settings)) for name in names
    ]
    try:
        for child in children:
            await _wait_serving(child, out, timeout)
    except BaseException:
        await stop_all(children, settings.grace_seconds)
        raise
    return children


async def _spawn(name: str, settings: Settings) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
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


def _child_env(name: str, settings: Settings) -> dict[str, str]:
    """Our environment for service `name`, naming its own signing key only, and not the
    development identity provider's key (which signs admin tokens: no service gets it)."""
    env = {**os.environ, SUPERVISOR_PID: str(os.getpid())}
    env["TIKET_SERVICE_KEY"] = str(settings.service_key_path(name).absolute())
    env.pop("TIKET_DEV_ISSUER_KEY", None)
    return env


async def _wait_serving(child: Child, out: Callable[[str], None], timeout: float) -> None:
    if await _until_serving(child, timeout):
        out(f"  {child.name:<12} SERVING on {child.address}")
        return
    if child.process.returncode is not None:
        tail = await _read_rest(child)
        raise RuntimeError(f"{child.name} exited with code {child.process.returncode}:\n{tail}")
    raise RuntimeError(f"{child.name} did not report SERVING within {timeout:.0f} s")


async def _until_serving(child: Child, timeout: float) -> bool:
    """True once the child reports SERVING; False when it exits or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    service = registry.grpc_service_names(child.name)[0]
    while time.monotonic() < deadline and child.process.returncode is None:
        if await health.check(child.address, service) == "SERVING":
            return True
        await asyncio.sleep(0.2)
    return False


async def _read_rest(child: Child) -> str:
    assert child.process.stderr is not None
    data = await child.process.stderr.read()
    lines = data.decode(errors="replace").splitlines()[-15:]
    return "\n".join(pretty(child.name, line) for line in lines)


async def watch(
    children: list[Child], settings: Settings, out: Callable[[str], None], timeout: float = 60.0
) -> None:
    """Print every child's log lines; a child that exits on its own is said so and started
    again (Restarts). RuntimeError when one keeps exiting: the caller stops the rest."""
    await asyncio.gather(*(_keep(child, settings, out, timeout) for child in children))


async def _keep(
    child: Child, settings: Settings, out: Callable[[str], None], timeout: float
) -> None:
    restarts = Restarts()
    watching: list[Awaitable[None]] = [_follow(child, out)]
    while True:
        await asyncio.gather(*watching)  # to the end of its log: it has exited
        code = await child.process.wait()
        lived = time.monotonic() - child.started
        out(f"tiket: {child.name} exited ({_exit_reason(code)}) after {lived:.0f} s")
        delay = restarts.after_exit(lived)
        if delay is None:
            raise RuntimeError(
                f"{child.name} exited {restarts.give_up_after} times in a row within "
                f"{restarts.young_seconds:.0f} s of starting; its log above says why"
            )
        out(f"tiket: starting {child.name} again" + (f" in {delay:.0f} s" if delay else ""))
        await asyncio.sleep(delay)
        child.process = await _spawn(child.name, settings)
        child.started = time.monotonic()
        watching = [_follow(child, out), _say_when_serving(child, out, timeout)]


async def _say_when_serving(child: Child, out: Callable[[str], None], timeout: float) -> None:
    """Say when a child started again serves; nothing when it exits first (its log says)."""
    if await _until_serving(child, timeout):
        out(f"  {child.name:<12} SERVING on {child.address}")


def _exit_reason(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


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
