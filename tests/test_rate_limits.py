"""Rate limits (seed 001 §5.4) on real services in this process, called over gRPC: 60 calls a
minute per rider and 120 per client address on user-facing RPCs, gates exempt, x-forwarded-for
believed only from a trusted proxy, and Redis cut = calls answer unlimited (and say so in a
metric). Every test has its own Redis prefix, so its windows start empty."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace

import grpc
import pytest
import redis.asyncio as redis
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from prometheus_client import REGISTRY
from tiket.fare.v1 import fare_pb2, fare_pb2_grpc
from tiket.user.v1 import user_pb2, user_pb2_grpc

from libs.auth import Role
from libs.config import load
from libs.server import ratelimit
from libs.server.interceptor import DETAILS_KEY
from libs.server.runtime import ServiceDefinition, ServiceRuntime
from services.fare.service import DEFINITION as FARE
from services.user.service import DEFINITION as USER
from tests.support import keys
from tests.support.cleanup import remove_run
from tests.support.settings import isolated_settings
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(180)

Start = Callable[..., Awaitable[ServiceRuntime]]
GATE = "A/A-ENTRY-01"


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Start a service with TIKET_* overrides; stopped and removed after the test."""
    started: list[ServiceRuntime] = []

    async def start(definition: ServiceDefinition, **env: str) -> ServiceRuntime:
        runtime = ServiceRuntime(definition, isolated_settings(**env))
        await runtime.start()
        started.append(runtime)
        return runtime

    yield start
    real = load()  # the real servers, also when a test reached Redis through a proxy
    for runtime in started:
        await runtime.stop()
        settings = replace(runtime.settings, redis_url=real.redis_url, amqp_url=real.amqp_url)
        await remove_run(settings, [runtime.definition.name])


@pytest.fixture
def patient_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a test counts exactly, a busy machine must not make the live Redis look dead
    (which would let a call through unchecked)."""
    monkeypatch.setattr(ratelimit, "TIMEOUT_SECONDS", 5.0)


@dataclass(frozen=True)
class Answer:
    code: grpc.StatusCode
    retry_after: float | None = None
    quota_subject: str = ""


async def answer(call: Awaitable[object]) -> Answer:
    try:
        await call
    except aio.AioRpcError as error:
        return _refusal(error)
    return Answer(grpc.StatusCode.OK)


def _refusal(error: aio.AioRpcError) -> Answer:
    raw = dict(error.trailing_metadata() or ()).get(DETAILS_KEY)
    retry_after, subject = None, ""
    for detail in status_pb2.Status.FromString(raw).details if raw else ():
        retry, quota = error_details_pb2.RetryInfo(), error_details_pb2.QuotaFailure()
        if detail.Unpack(retry):
            retry_after = retry.retry_delay.ToTimedelta().total_seconds()
        elif detail.Unpack(quota):
            subject = quota.violations[0].subject
    return Answer(error.code(), retry_after, subject)


class Wallets:
    """GetWallet (user-facing, the rider's own) as a rider, from this process's address."""

    def __init__(self, runtime: ServiceRuntime, channel: aio.Channel) -> None:
        self.settings = runtime.settings
        self.stub = user_pb2_grpc.UserServiceStub(channel)

    async def get(
        self, rider: str, *, role: Role = Role.USER, sub: str | None = None, forwarded: str = ""
    ) -> Answer:
        metadata = keys.bearer(self.settings, role, sub or rider)
        if forwarded:
            metadata.append(("x-forwarded-for", forwarded))
        # An unknown rider's wallet is NOT_FOUND: an answer, not a refusal.
        return await answer(
            self.stub.GetWallet(user_pb2.GetWalletRequest(user_id=rider), metadata=metadata)
        )


@pytest.fixture
async def wallets_of(start: Start) -> AsyncIterator[Callable[..., Awaitable[Wallets]]]:
    channels: list[aio.Channel] = []

    async def wallets_of(**env: str) -> Wallets:
        runtime = await start(USER, **env)
        channel = aio.insecure_channel(f"127.0.0.1:{runtime.port}")
        channels.append(channel)
        return Wallets(runtime, channel)

    yield wallets_of
    for channel in channels:
        await channel.close()


def rider() -> str:
    return str(uuid.uuid4())


def limited(scope: str, service: str = "tiket.user.v1.UserService", method: str = "GetWallet"):
    labels = {"service": service, "method": method, "scope": scope}
    return REGISTRY.get_sample_value("tiket_rate_limited_total", labels) or 0.0


def unenforced(service: str = "tiket.user.v1.UserService", method: str = "GetWallet") -> float:
    labels = {"service": service, "method": method}
    return REGISTRY.get_sample_value("tiket_rate_limit_unenforced_total", labels) or 0.0


ANSWERED = grpc.StatusCode.NOT_FOUND
REFUSED = grpc.StatusCode.RESOURCE_EXHAUSTED


def assert_refused(answers: list[Answer], subject: str) -> None:
    assert {a.code for a in answers} == {REFUSED}
    assert {a.quota_subject for a in answers} == {subject}
    for a in answers:
        assert a.retry_after is not None and 0 < a.retry_after <= 60


# --- per rider -----------------------------------------------------------------------------


async def test_a_rider_gets_60_calls_a_minute_then_resource_exhausted(
    wallets_of, patient_redis
) -> None:
    wallets = await wallets_of()  # the defaults
    assert wallets.settings.rate_limit_user_per_minute == 60
    me, before = rider(), (limited("user"), limited("address"))

    answers = [await wallets.get(me) for _ in range(130)]

    assert [a.code for a in answers[:60]] == [ANSWERED] * 60
    assert_refused(answers[60:], f"user:{me}")
    # Refused by their own limit, the rider spent nothing more of the address's.
    assert (limited("user"), limited("address")) == (before[0] + 70, before[1])
    # Another rider is not held back by this one.
    assert (await wallets.get(rider())).code is ANSWERED


async def test_a_gate_making_1000_calls_is_never_limited(start: Start, patient_redis) -> None:
    fare = await start(FARE)
    settings = fare.settings
    async with aio.insecure_channel(f"127.0.0.1:{fare.port}") as channel:
        stub = fare_pb2_grpc.FareServiceStub(channel)

        def list_terminals(role: Role, sub: str) -> Awaitable[Answer]:
            metadata = keys.bearer(settings, role, sub)
            return answer(stub.ListTerminals(fare_pb2.ListTerminalsRequest(), metadata=metadata))

        gate_answers: list[Answer] = []
        for _ in range(10):  # 10 x 100 at a time
            gate_answers += await asyncio.gather(
                *(list_terminals(Role.GATE, GATE) for _ in range(100))
            )
        assert len(gate_answers) == 1000
        assert {a.code for a in gate_answers} == {grpc.StatusCode.OK}

        # The same RPC is limited for a rider, from the same address: the gate spent none of
        # the address's 120 either.
        me = rider()
        answers = [await list_terminals(Role.USER, me) for _ in range(61)]
        assert [a.code for a in answers[:60]] == [grpc.StatusCode.OK] * 60
        assert answers[60].code is REFUSED

    # The gate's calls never reached the limiter's Redis: no window names it.
    client = redis.Redis.from_url(settings.redis_url)
    try:
        pattern = f"{settings.redis_prefix}ratelimit:*"
        names = [k.decode() async for k in client.scan_iter(match=pattern)]
    finally:
        await client.aclose()
    assert any(me in name for name in names)
    assert not [name for name in names if "gate" in name]


# --- per address ---------------------------------------------------------------------------


async def test_one_address_gets_120_calls_a_minute_whoever_calls(wallets_of, patient_redis) -> None:
    wallets = await wallets_of()  # the defaults
    assert wallets.settings.rate_limit_address_per_minute == 120
    riders, before = [rider() for _ in range(5)], limited("address")

    # 26 calls each, in turn: none reaches the rider limit of 60.
    answers = [await wallets.get(riders[i % 5]) for i in range(130)]

    assert [a.code for a in answers[:120]] == [ANSWERED] * 120
    assert_refused(answers[120:], "address:127.0.0.1")
    assert limited("address") == before + 10


async def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(
    wallets_of, patient_redis
) -> None:
    wallets = await wallets_of(
        TIKET_TRUSTED_PROXIES="127.0.0.0/8", TIKET_RATE_LIMIT_ADDRESS_PER_MINUTE="5"
    )
    # This process stands in for the proxy; each call another rider.
    first = [await wallets.get(rider(), forwarded="203.0.113.7") for _ in range(5)]
    assert {a.code for a in first} == {ANSWERED}

    sixth = await wallets.get(rider(), forwarded="203.0.113.7")
    # A client writing addresses of its own in front does not escape: the proxy appended
    # the one it saw.
    spoofed = await wallets.get(rider(), forwarded="198.51.100.99, 203.0.113.7")
    assert_refused([sixth, spoofed], "address:203.0.113.7")

    assert (await wallets.get(rider(), forwarded="198.51.100.20")).code is ANSWERED
    assert (await wallets.get(rider())).code is ANSWERED  # no header: the proxy's own address


async def test_x_forwarded_for_from_anyone_else_is_ignored(wallets_of, patient_redis) -> None:
    wallets = await wallets_of(
        TIKET_TRUSTED_PROXIES="10.0.0.0/8", TIKET_RATE_LIMIT_ADDRESS_PER_MINUTE="5"
    )
    # Each call claims another address; all are counted against the peer's.
    answers = [await wallets.get(rider(), forwarded=f"203.0.113.{i}") for i in range(1, 8)]

    assert [a.code for a in answers[:5]] == [ANSWERED] * 5
    assert_refused(answers[5:], "address:127.0.0.1")


# --- Redis cut -----------------------------------------------------------------------------


async def test_with_redis_cut_calls_answer_unlimited_and_are_counted(
    wallets_of, redis_proxy: TcpProxy
) -> None:
    wallets = await wallets_of(
        TIKET_REDIS_URL=f"redis://127.0.0.1:{redis_proxy.port}/0",
        TIKET_RATE_LIMIT_USER_PER_MINUTE="5",
    )
    me = rider()
    assert [(await wallets.get(me)).code for _ in range(3)] == [ANSWERED] * 3

    redis_proxy.cut()
    before = unenforced()
    # Six times the limit: every one answered, none refused, each counted as unchecked.
    answers = await asyncio.gather(*(wallets.get(me) for _ in range(30)))
    assert [a.code for a in answers] == [ANSWERED] * 30
    assert unenforced() == before + 30

    # Gates are exempt: they never ask Redis, so they are not "unenforced" either.
    gate = [await wallets.get(me, role=Role.GATE, sub=GATE) for _ in range(5)]
    assert {a.code for a in gate} == {grpc.StatusCode.PERMISSION_DENIED}
    assert unenforced() == before + 30

    # Redis back: after the limiter's cool-down the rider's limit holds again.
    redis_proxy.restore()

    async def refused_again() -> bool:
        return (await wallets.get(me)).code is REFUSED

    await wait_until(refused_again, "the limit to be enforced again", within=60)
