"""One mesh of real user, fare and journey services per e2e test module (starting them costs
seconds); a gate agent reaches the journey service through a TCP proxy the tests stall or
cut, and the user and fare services directly. And, for the upload tests, a fake of our own
JourneyService in this process with an agent pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import timedelta

import grpc
import pytest
import pytest_asyncio
from grpc import aio
from tiket.journey.v1 import journey_pb2, journey_pb2_grpc

from gate.agent import GateAgent
from gate.config import GateConfig
from libs.auth import Role
from libs.config import load
from services.journey.config import JourneyConfig
from services.journey.tests.mesh import Mesh, running_mesh
from tests.support import keys
from tests.support.tcp_proxy import TcpProxy

# Generous: the services share this test process's event loop on a busy machine, and these
# tests are about what a tap decides, not how fast (the slow-server test stalls the link).
ONLINE_DEADLINE = 3.0
# Offline taps are scripted into the next hours (fares cannot start in the past, so tests move
# taps into the future, as the journey tests do): the server takes gate clocks that far ahead.
CLOCK_SKEW = timedelta(hours=6)


@dataclass
class GateMesh:
    mesh: Mesh
    journey_proxy: TcpProxy

    def gate_config(
        self, tmp_path, terminal: str = "A", gate: str = "A-ENTRY-01", **kw
    ) -> GateConfig:
        port = {n: r.port for n, r in self.mesh.runtimes.items()}
        config = GateConfig(
            terminal,
            gate,
            direction="entry" if "ENTRY" in gate else "exit",
            journey_addr=f"127.0.0.1:{self.journey_proxy.port}",
            user_addr=f"127.0.0.1:{port['user']}",
            fare_addr=f"127.0.0.1:{port['fare']}",
            token=keys.token(self.mesh.settings, Role.GATE, f"{terminal}/{gate}"),
            db_path=str(tmp_path / f"{terminal}-{gate}.sqlite3"),
            deadline=ONLINE_DEADLINE,
        )
        return replace(config, **kw)

    @asynccontextmanager
    async def agent(self, config: GateConfig, background: bool = False) -> AsyncIterator[GateAgent]:
        gate = GateAgent(config, self.mesh.settings)
        await gate.start(background=background)
        try:
            yield gate
        finally:
            await gate.stop()
            self.journey_proxy.restore()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gates() -> AsyncIterator[GateMesh]:
    async with running_mesh(
        JourneyConfig(dependency_timeout=10.0, max_clock_skew=CLOCK_SKEW)
    ) as mesh:
        proxy = TcpProxy("127.0.0.1", mesh.runtimes["journey"].port)
        await proxy.start()
        try:
            yield GateMesh(mesh, proxy)
        finally:
            await proxy.stop()


class FakeJourneys(journey_pb2_grpc.JourneyServiceServicer):
    """SyncOfflineTaps as the test sets it: UNIMPLEMENTED until `answer` is set, then a result
    per tap from `answer(tap)` (None = leave it out). Other methods: UNIMPLEMENTED (the base
    class), which a gate takes as no answer."""

    def __init__(self) -> None:
        self.answer = None
        self.batches: list[list[journey_pb2.OfflineTap]] = []

    async def SyncOfflineTaps(self, request, context):
        if self.answer is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "SyncOfflineTaps: not yet")
        self.batches.append(list(request.taps))
        results = [self.answer(tap) for tap in request.taps]
        return journey_pb2.SyncOfflineTapsResponse(results=[r for r in results if r])


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeJourneys, int, aio.Server]]:
    servicer = FakeJourneys()
    server = aio.server()
    journey_pb2_grpc.add_JourneyServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, port, server
    await server.stop(None)


@pytest.fixture
async def agent(fake, tmp_path) -> AsyncIterator[GateAgent]:
    _, port, _ = fake
    address = f"127.0.0.1:{port}"
    config = GateConfig(
        "A",
        "A-ENTRY-01",
        direction="entry",
        journey_addr=address,
        user_addr=address,
        fare_addr=address,
        token="not-checked-by-the-fake",
        db_path=str(tmp_path / "gate.sqlite3"),
    )
    gate = GateAgent(config, load({}))
    await gate.start(background=False)
    yield gate
    await gate.stop()
