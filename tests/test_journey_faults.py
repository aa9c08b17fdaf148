"""Faults around the journey service, injected without touching the shared servers:

- its dependencies cut off or hung (a TCP proxy between it and them): CheckIn answers
  UNAVAILABLE within the gate's deadline (the gate's call carries that deadline, so an answer
  after it would reach the gate as DEADLINE_EXCEEDED, not UNAVAILABLE), never hangs, writes
  nothing a retry cannot finish;
- its own process killed (SIGKILL) in the middle of a burst of taps and started again: the
  gates' retries complete every tap, and no rupiah is lost or taken twice;
- the same in the middle of a SyncOfflineTaps batch: the re-sent batch applies what the
  kill cut off and answers DUPLICATE for the rest — nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import psycopg
import pytest
import pytest_asyncio
from grpc import aio
from tiket.journey.v1 import journey_pb2, journey_pb2_grpc
from tiket.user.v1 import user_pb2, user_pb2_grpc

from libs.auth import Role
from libs.config import Settings, load
from libs.money import to_money
from services.fare import demo as fare_demo
from services.journey.tests.audit import audit
from services.journey.tests.mesh import (
    Mesh,
    counts,
    new_rider,
    running_mesh,
    settle,
    tap_in,
    tap_out,
    tap_request,
    wallet,
)
from tests.support import keys
from tests.support.cleanup import remove_run
from tests.support.processes import ServiceProcess, service_process
from tests.support.settings import isolated_env
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

GATE_DEADLINE = 1.5  # seconds a gate waits before falling back to offline mode
module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh() -> AsyncIterator[Mesh]:
    async with running_mesh(proxied=True) as running:
        yield running
        for proxy in running.proxies.values():
            proxy.restore()
        await settle(running)
        assert await audit(running.database_url("user"), running.database_url("journey")) == []


async def refusal(call) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code()


@module_loop
async def test_wallet_cut_off_answers_unavailable_at_once_and_writes_nothing(mesh):
    _, card = await new_rider(mesh)
    before = await counts(mesh)
    mesh.proxies["user"].cut()
    try:
        code = await refusal(tap_in(mesh, card, timeout=GATE_DEADLINE))
    finally:
        mesh.proxies["user"].restore()
    assert code == grpc.StatusCode.UNAVAILABLE
    assert await counts(mesh) == before
    assert (await once_back(tap_in, mesh, card)).open_gate
    await tap_out(mesh, card)


@module_loop
async def test_wallet_hanging_answers_unavailable_within_the_gate_deadline(mesh):
    user_id, card = await new_rider(mesh, 50_000)
    tap_id = str(uuid.uuid4())
    mesh.proxies["user"].stall()
    try:
        code = await refusal(tap_in(mesh, card, tap_id=tap_id, timeout=GATE_DEADLINE))
    finally:
        mesh.proxies["user"].restore()
    assert code == grpc.StatusCode.UNAVAILABLE  # our answer, not the gate's own deadline
    entered = await once_back(tap_in, mesh, card, tap_id=tap_id)  # the gate's retry
    await tap_out(mesh, card)
    assert await wallet(mesh, user_id) == (Decimal(38_000), 0, Decimal(38_000))
    assert entered.open_gate


@module_loop
async def test_fare_service_down_cold_lookups_unavailable_warm_ones_keep_working(mesh):
    _, warm = await new_rider(mesh)
    await tap_in(mesh, warm)  # gates, terminal and fares of A are now in the journey cache
    _, card = await new_rider(mesh)
    mesh.proxies["fare"].cut()
    try:
        code = await refusal(tap_in(mesh, card, "C", "C-ENTRY-01", timeout=GATE_DEADLINE))
        assert code == grpc.StatusCode.UNAVAILABLE
        assert (await tap_in(mesh, card, timeout=GATE_DEADLINE)).open_gate
    finally:
        mesh.proxies["fare"].restore()
    await once_back(tap_out, mesh, warm)
    await tap_out(mesh, card)


@module_loop
async def test_wallet_lost_during_check_out_the_retry_completes_it_once(mesh):
    user_id, card = await new_rider(mesh, 50_000)
    await tap_in(mesh, card)
    request = tap_request("out", card, "E", "E-EXIT-01")
    md = mesh.metadata(Role.GATE, "E/E-EXIT-01")
    mesh.proxies["user"].cut()
    try:
        code = await refusal(mesh.journeys.CheckOut(request, metadata=md, timeout=GATE_DEADLINE))
    finally:
        mesh.proxies["user"].restore()
    assert code == grpc.StatusCode.UNAVAILABLE
    first = await once_back(mesh.journeys.CheckOut, request, metadata=md)
    again = await mesh.journeys.CheckOut(request, metadata=md)
    assert first == again and first.fare.units == 12_000
    assert await wallet(mesh, user_id) == (Decimal(38_000), 0, Decimal(38_000))


async def once_back(call, *args, within: float = 60.0, **kwargs):
    """`call` retried while the link comes back: the channel reconnects with backoff, and
    the client's circuit breaker (libs/clients.py) lets a probe through only after its
    cool-down. `within` only keeps a broken run from hanging."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call(*args, **kwargs)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


# --- the journey service killed mid-burst ----------------------------------------------------

RIDERS = 30
PAIRS = 3
BALANCE = 100_000


class Gate:
    """A gate that keeps retrying a tap (same tap id) until it gets a real answer."""

    def __init__(self, address: str, token: str) -> None:
        self.channel = aio.insecure_channel(address)
        self.stub = journey_pb2_grpc.JourneyServiceStub(self.channel)
        self.metadata = [("authorization", f"Bearer {token}")]
        self.retries = 0
        self.answered = 0

    async def tap(self, method: str, request) -> object:
        for _ in range(200):
            try:
                answer = await getattr(self.stub, method)(
                    request, metadata=self.metadata, timeout=GATE_DEADLINE
                )
                self.answered += 1
                return answer
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.ABORTED,
                ):
                    raise
                self.retries += 1
                await asyncio.sleep(0.1)
        raise AssertionError(f"{method} never answered")


async def ride(gate: Gate, card: str) -> None:
    for _ in range(PAIRS):
        await gate.tap("CheckIn", tap_request("in", card, "A", "A-ENTRY-01"))
        await gate.tap("CheckOut", tap_request("out", card, "E", "E-EXIT-01"))


@dataclass
class Killable:
    """User and fare services, and a journey service behind a proxy that a gate keeps
    reaching when the journey process is killed and another one started."""

    settings: Settings
    admin: list[tuple[str, str]]
    user: ServiceProcess
    journey: ServiceProcess
    journey_env: dict[str, str]
    proxy: TcpProxy
    stack: contextlib.ExitStack

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.proxy.port}"

    async def kill_and_restart_journey(self) -> None:
        """SIGKILL (no drain: whatever was in flight is cut), then a new process."""
        self.journey.process.kill()
        self.journey.process.wait()
        self.journey = await asyncio.to_thread(
            self.stack.enter_context, service_process("journey", self.journey_env)
        )
        self.proxy.target_port = int(self.journey.address.rsplit(":", 1)[1])


@contextlib.asynccontextmanager
async def killable(**overrides: str) -> AsyncIterator[Killable]:
    env = isolated_env(
        TIKET_SWEEP_INTERVAL_SECONDS="0.5", TIKET_JOURNEY_SETTLE_AFTER_SECONDS="2", **overrides
    )
    settings = load(env)
    admin = [("authorization", f"Bearer {keys.token(settings, Role.ADMIN, 'fault-test')}")]
    with contextlib.ExitStack() as stack:
        user = stack.enter_context(service_process("user", env))
        fare = stack.enter_context(service_process("fare", env))
        journey_env = {**env, "TIKET_USER_ADDR": user.address, "TIKET_FARE_ADDR": fare.address}
        first = stack.enter_context(service_process("journey", journey_env))
        proxy = TcpProxy("127.0.0.1", int(first.address.rsplit(":", 1)[1]))
        await proxy.start()
        try:
            async with aio.insecure_channel(fare.address) as channel:
                await fare_demo.load(channel, admin, lambda _: None)
            yield Killable(settings, admin, user, first, journey_env, proxy, stack)
        finally:
            await proxy.stop()
            stack.close()
            await remove_run(settings, ["user", "fare", "journey"])


@pytest.mark.e2e
@pytest.mark.timeout(180)
async def test_killing_the_journey_service_mid_burst_loses_and_doubles_nothing():
    async with killable(TIKET_JOURNEY_ORPHAN_AFTER_SECONDS="60") as run:
        token = keys.token(run.settings, Role.SERVICE, "tests")
        cards = await make_riders(run.user.address, run.admin)
        gates = [Gate(run.address, token) for _ in cards]
        burst = asyncio.gather(*(ride(g, c) for g, c in zip(gates, cards, strict=True)))
        # kill once a quarter of the taps are answered: the rest are still in flight
        quarter = RIDERS * PAIRS * 2 // 4
        await wait_until(lambda: sum(g.answered for g in gates) >= quarter, "first taps")
        await run.kill_and_restart_journey()
        await burst
        assert sum(g.retries for g in gates) > 0, "the kill interrupted nothing"
        for gate in gates:
            await gate.channel.close()
        problems = await settled_audit(run.settings)
        assert problems == []
        assert await balances(run.user.address, run.admin, cards) == {BALANCE - PAIRS * 12_000}


async def make_riders(address: str, admin, count: int = RIDERS) -> list[str]:
    cards = [f"K{uuid.uuid4().hex[:8].upper()}{n:03d}" for n in range(count)]
    async with aio.insecure_channel(address) as channel:
        users = user_pb2_grpc.UserServiceStub(channel)
        for card in cards:
            user = await users.CreateUser(
                user_pb2.CreateUserRequest(card_id=card, full_name="Rider"), metadata=admin
            )
            await users.TopUp(
                user_pb2.TopUpRequest(
                    user_id=user.id,
                    amount=to_money(Decimal(BALANCE)),
                    idempotency_key="init",
                ),
                metadata=admin,
            )
    return cards


async def balances(address: str, admin, cards: list[str]) -> set[Decimal]:
    found = set()
    async with aio.insecure_channel(address) as channel:
        users = user_pb2_grpc.UserServiceStub(channel)
        for card in cards:
            user = await users.GetUser(user_pb2.GetUserRequest(card_id=card), metadata=admin)
            w = await users.GetWallet(user_pb2.GetWalletRequest(user_id=user.id), metadata=admin)
            assert (w.held.units, w.held.nanos) == (0, 0)
            found.add(Decimal(w.available.units))
    return found


async def settled_audit(settings, within: float = 90.0) -> list[str]:
    """The audit, once the restarted service's sweeper has finished what the kill left (the
    bound only keeps a broken run from hanging; a busy machine may need much of it)."""
    deadline = time.monotonic() + within
    while True:
        problems = await audit(settings.database_url("user"), settings.database_url("journey"))
        if not problems or time.monotonic() > deadline:
            return problems
        await asyncio.sleep(0.5)


# --- the journey service killed mid-batch of offline taps ------------------------------------

OFFLINE_RIDERS = 100


@pytest.mark.e2e
@pytest.mark.timeout(180)
async def test_killing_the_journey_service_mid_sync_then_resending_loses_and_doubles_nothing():
    async with killable(TIKET_JOURNEY_MAX_CLOCK_SKEW_SECONDS="3600") as run:
        cards = await make_riders(run.user.address, run.admin, OFFLINE_RIDERS)
        t = datetime.now(UTC) + timedelta(minutes=1)
        entries = offline_batch("A", "A-ENTRY-01", cards, "in", t)
        exits = offline_batch("E", "E-EXIT-01", cards, "out", t + timedelta(minutes=20))
        async with aio.insecure_channel(run.address) as channel:
            stub = journey_pb2_grpc.JourneyServiceStub(channel)

            def gate(request):
                who = f"{request.terminal_code}/{request.gate_code}"
                md = [("authorization", f"Bearer {keys.token(run.settings, Role.GATE, who)}")]
                return stub.SyncOfflineTaps(request, metadata=md, timeout=60)

            await gate(entries)
            cut = asyncio.ensure_future(gate(exits))
            await exits_recorded(run.settings, at_least=5)
            await run.kill_and_restart_journey()  # in the middle of the batch
            with pytest.raises(grpc.aio.AioRpcError):
                await cut
            answer = await once_back(gate, exits)  # the gate re-sends the batch
            outcomes = [r.outcome for r in answer.results]
            applied, duplicate = journey_pb2.TAP_OUTCOME_APPLIED, journey_pb2.TAP_OUTCOME_DUPLICATE
            assert set(outcomes) <= {applied, duplicate}
            assert outcomes.count(duplicate) >= 5
            again = await gate(exits)
            assert {r.outcome for r in again.results} == {duplicate}
        assert await settled_audit(run.settings) == []
        assert await balances(run.user.address, run.admin, cards) == {BALANCE - 12_000}
        assert await journeys_by_status(run.settings) == {("completed", "paid"): OFFLINE_RIDERS}


def offline_batch(terminal: str, gate: str, cards: list[str], kind: str, at: datetime):
    direction = (
        journey_pb2.TAP_DIRECTION_CHECK_IN if kind == "in" else journey_pb2.TAP_DIRECTION_CHECK_OUT
    )
    taps = []
    for card in cards:
        tap = journey_pb2.OfflineTap(tap_id=str(uuid.uuid4()), card_id=card, direction=direction)
        tap.tapped_at.FromDatetime(at)
        taps.append(tap)
    return journey_pb2.SyncOfflineTapsRequest(terminal_code=terminal, gate_code=gate, taps=taps)


async def exits_recorded(settings, at_least: int, within: float = 60.0) -> None:
    """Wait, polling closely, until `at_least` offline exits are recorded."""
    deadline = time.monotonic() + within
    url = settings.database_url("journey")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            cur = await conn.execute(
                "SELECT count(*) FROM taps WHERE offline AND kind = 'checkout'"
            )
            row = await cur.fetchone()
            if row and row[0] >= at_least:
                return
            await asyncio.sleep(0.005)
    raise AssertionError(f"fewer than {at_least} offline exits recorded in {within} s")


async def journeys_by_status(settings) -> dict[tuple[str, str], int]:
    async with await psycopg.AsyncConnection.connect(settings.database_url("journey")) as conn:
        cur = await conn.execute(
            "SELECT status::text, settlement::text, count(*) FROM journey_history GROUP BY 1, 2"
        )
        return {(status, settlement): n for status, settlement, n in await cur.fetchall()}
