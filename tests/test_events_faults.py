"""Nothing lost under faults and load (issue 13, the events part): real `tiket serve`
processes of all five services, riders tapping through the journey service the whole time,
and faults injected by TCP proxies, never by stopping the shared servers:

- every service reaches RabbitMQ through one proxy, cut for 30 s;
- the notification and analytics services reach PostgreSQL through proxies, cut for 15 s.

Before the consumers ever start, riders already ride: those events must wait in queues the
producers declared. Each run ends, once the system settled, in an audit: every emitted event
was sent, handled exactly once by each consumer it is routed to, and no queue (retry and
dead-letter queues included) holds anything."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal

import grpc
import psycopg
import pytest
import pytest_asyncio
from google.protobuf.message import Message
from grpc import aio
from tiket.journey.v1 import journey_pb2, journey_pb2_grpc
from tiket.user.v1 import user_pb2, user_pb2_grpc
from yarl import URL

from libs.auth import Role
from libs.config import Settings, load
from libs.events.dead_letters import waiting_counts
from libs.events.topology import dead_letter_queue, retry_queue
from libs.money import to_money
from services import registry
from services.fare import demo as fare_demo
from tests.support import keys
from tests.support.cleanup import remove_run
from tests.support.processes import service_process
from tests.support.settings import isolated_env
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
module_loop = pytest.mark.asyncio(loop_scope="module")
PRODUCERS = ["user", "fare", "journey"]
CONSUMERS = ["notification", "analytics"]
RIDERS = 6
PAUSE = 0.3  # seconds a rider waits between two rides
RABBITMQ_CUT = 30.0
DATABASE_CUT = 15.0
SETTLE_WITHIN = 180.0
Metadata = list[tuple[str, str]]
RETRIED = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
)


def through(proxy: TcpProxy, url: str) -> str:
    return str(URL(url).with_host("127.0.0.1").with_port(proxy.port))


def proxy_to(url: str, default_port: int) -> TcpProxy:
    parsed = URL(url)
    return TcpProxy(parsed.host or "127.0.0.1", parsed.port or default_port)


@dataclass
class Mesh:
    settings: Settings  # direct URLs: what the audit reads with
    addresses: dict[str, str]
    rabbitmq: TcpProxy  # in front of RabbitMQ, for every service
    databases: dict[str, TcpProxy]  # consumer service -> its PostgreSQL
    cards: list[str] = field(default_factory=list)

    def metadata(self, role: Role, subject: str) -> Metadata:
        return keys.bearer(self.settings, role, subject)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh() -> AsyncIterator[Mesh]:
    env = isolated_env()
    settings = load(env)
    rabbitmq = proxy_to(settings.amqp_url, 5672)
    databases = {name: proxy_to(settings.postgres_url, 5432) for name in CONSUMERS}
    for proxy in (rabbitmq, *databases.values()):
        await proxy.start()
    env["TIKET_AMQP_URL"] = through(rabbitmq, settings.amqp_url)
    addresses: dict[str, str] = {}
    with contextlib.ExitStack() as stack:

        async def start(name: str, **extra: str) -> None:
            # In a thread: the proxies live on this loop and must forward while it waits.
            child = await asyncio.to_thread(
                stack.enter_context, service_process(name, {**env, **extra})
            )
            addresses[name] = env[f"TIKET_{name.upper()}_ADDR"] = child.address

        try:
            for name in PRODUCERS:
                await start(name)
            mesh = Mesh(settings, addresses, rabbitmq, databases)
            async with aio.insecure_channel(addresses["fare"]) as channel:
                await fare_demo.load(channel, mesh.metadata(Role.ADMIN, "faults"), lambda _: None)
            mesh.cards = await new_riders(mesh)
            # Rides before any consumer ever ran: their events wait in declared queues.
            async with Gates(mesh) as gates:
                await asyncio.gather(*(gates.ride(card) for card in mesh.cards))
            for name in CONSUMERS:
                await start(
                    name, TIKET_POSTGRES_URL=through(databases[name], settings.postgres_url)
                )
            yield mesh
        finally:
            stack.close()
            for proxy in (rabbitmq, *databases.values()):
                await proxy.stop()
            await remove_run(settings, [*PRODUCERS, *CONSUMERS])


async def new_riders(mesh: Mesh) -> list[str]:
    admin = mesh.metadata(Role.ADMIN, "faults")
    cards = [f"F{uuid.uuid4().hex[:8].upper()}{n:03d}" for n in range(RIDERS)]
    async with aio.insecure_channel(mesh.addresses["user"]) as channel:
        users = user_pb2_grpc.UserServiceStub(channel)
        for card in cards:
            user = await users.CreateUser(
                user_pb2.CreateUserRequest(card_id=card, full_name="Rider"), metadata=admin
            )
            top_up = user_pb2.TopUpRequest(
                user_id=user.id, amount=to_money(Decimal(5_000_000)), idempotency_key="init"
            )
            await users.TopUp(top_up, metadata=admin)
    return cards


class Gates:
    """Gates A-ENTRY-01 and E-EXIT-01: each tap retried (same tap id) until answered."""

    def __init__(self, mesh: Mesh) -> None:
        self.channel = aio.insecure_channel(mesh.addresses["journey"])
        self.stub = journey_pb2_grpc.JourneyServiceStub(self.channel)
        self.entry = mesh.metadata(Role.GATE, "A/A-ENTRY-01")
        self.exit = mesh.metadata(Role.GATE, "E/E-EXIT-01")
        self.rides = 0

    async def __aenter__(self) -> Gates:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()

    async def ride(self, card: str) -> None:
        tap_in = journey_pb2.CheckInRequest(
            card_id=card, terminal_code="A", gate_code="A-ENTRY-01", tap_id=str(uuid.uuid4())
        )
        tap_out = journey_pb2.CheckOutRequest(
            card_id=card, terminal_code="E", gate_code="E-EXIT-01", tap_id=str(uuid.uuid4())
        )
        await self._tap(self.stub.CheckIn, tap_in, self.entry)
        await self._tap(self.stub.CheckOut, tap_out, self.exit)
        self.rides += 1

    async def _tap(
        self, method: Callable[..., Awaitable[object]], request: Message, metadata: Metadata
    ) -> None:
        for _ in range(100):
            try:
                await method(request, metadata=metadata, timeout=5)
                return
            except aio.AioRpcError as exc:
                if exc.code() not in RETRIED:
                    raise
                await asyncio.sleep(0.2)
        raise AssertionError(f"{type(request).__name__} never answered")


@contextlib.asynccontextmanager
async def riding(mesh: Mesh) -> AsyncIterator[Gates]:
    """Every rider rides A → E again and again until the block ends."""
    stop = asyncio.Event()
    async with Gates(mesh) as gates:

        async def keep_riding(card: str) -> None:
            while not stop.is_set():
                await gates.ride(card)
                await asyncio.sleep(PAUSE)

        load = asyncio.gather(*(keep_riding(card) for card in mesh.cards))
        try:
            yield gates
        finally:
            stop.set()
            await load


# --- the audit ---------------------------------------------------------------------------


def routed(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: `*` is one word, `#` zero or more."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and p[0] in ("*", k[0]) and match(p[1:], k[1:])

    return match(pattern.split("."), routing_key.split("."))


async def rows(url: str, query: str, *params: object) -> list[tuple]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        return await (await conn.execute(query, params)).fetchall()


async def audit(settings: Settings) -> list[str]:
    """What is wrong with the events now; [] once every emitted event was sent and handled
    exactly once by each consumer it is routed to, and every queue is empty."""
    problems: list[str] = []
    emitted: dict[str, str] = {}
    for name in [*PRODUCERS, *CONSUMERS]:
        found = await rows(
            settings.database_url(name),
            "SELECT event_id::text, event_type, sent_at IS NOT NULL FROM outbox",
        )
        if unsent := [row for row in found if not row[2]]:
            problems.append(f"{name}: {len(unsent)} outbox rows unsent")
        emitted.update((event_id, event_type) for event_id, event_type, _ in found)
    for service in registry.SERVICES:
        for queue in registry.consumer_declarations(service, settings.events_exchange):
            wanted = {
                e for e, kind in emitted.items() if any(routed(b, kind) for b in queue.bindings)
            }
            inbox = await rows(
                settings.database_url(service),
                "SELECT event_id::text FROM inbox WHERE consumer = %s",
                queue.name,
            )
            if missing := wanted - {row[0] for row in inbox}:
                problems.append(f"{queue.name}: {len(missing)} events never handled")
            names = [queue.name, retry_queue(queue.name), dead_letter_queue(queue.name)]
            waiting = await waiting_counts(settings.amqp_url, names)
            problems += [f"{name}: {count} waiting" for name, count in waiting.items() if count]
    problems += await effects_once(settings, emitted)
    return problems


async def effects_once(settings: Settings, emitted: dict[str, str]) -> list[str]:
    """Each event stored once by analytics; each journey event made one notification."""
    stored = dict(
        await rows(
            settings.database_url("analytics"),
            "SELECT event_id::text, count(*) FROM analytics_events GROUP BY 1",
        )
    )
    notified = dict(
        await rows(
            settings.database_url("notification"),
            "SELECT event_id::text, count(*) FROM notifications"
            " WHERE event_type IN ('journey.checked_in', 'journey.checked_out') GROUP BY 1",
        )
    )
    journeys = [e for e, kind in emitted.items() if kind.startswith("journey.check")]
    problems = []
    for what, counts, events in (
        ("stored by analytics", stored, list(emitted)),
        ("notified", notified, journeys),
    ):
        if wrong := [e for e in events if counts.get(e) != 1]:
            example = f"{emitted[wrong[0]]} {wrong[0]}: {counts.get(wrong[0], 0)}"
            problems.append(f"{len(wrong)} events {what} other than once (e.g. {example})")
    return problems


async def settled_audit(settings: Settings) -> list[str]:
    """The audit once the system settled: it found nothing, or stopped changing its mind
    within SETTLE_WITHIN (the problems are then real)."""
    deadline = asyncio.get_running_loop().time() + SETTLE_WITHIN
    while True:
        problems = await audit(settings)
        if not problems or asyncio.get_running_loop().time() > deadline:
            return problems
        await asyncio.sleep(1.0)


@contextlib.asynccontextmanager
async def deepest_retries(settings: Settings) -> AsyncIterator[dict[str, int]]:
    """The most messages each consumer's retry queue and DLQ held while the block ran: an
    attempt spent shows there (sampled, so a short visit may go unseen)."""
    names = [
        name
        for queue in registry.topology(settings.events_exchange)
        for name in (retry_queue(queue.name), dead_letter_queue(queue.name))
    ]
    deepest = dict.fromkeys(names, 0)
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            for name, count in (await waiting_counts(settings.amqp_url, names)).items():
                deepest[name] = max(deepest[name], count or 0)
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    try:
        yield deepest
    finally:
        stop.set()
        await watcher


# --- the faults ----------------------------------------------------------------------------


@module_loop
async def test_rabbitmq_cut_for_30_s_under_load_loses_and_doubles_no_event(mesh: Mesh) -> None:
    async with riding(mesh) as gates:
        await wait_until(lambda: gates.rides >= RIDERS, "the riders to ride", within=60)
        mesh.rabbitmq.cut()
        try:
            before = gates.rides
            await asyncio.sleep(RABBITMQ_CUT)
            ridden_during_cut = gates.rides - before
        finally:
            mesh.rabbitmq.restore()
    problems = await settled_audit(mesh.settings)
    assert ridden_during_cut > 0, "no event was produced while RabbitMQ was cut"
    assert problems == [], "\n".join(problems)


@module_loop
async def test_consumer_databases_cut_for_15_s_spend_no_attempt_and_dead_letter_nothing(
    mesh: Mesh,
) -> None:
    async with deepest_retries(mesh.settings) as deepest:
        async with riding(mesh) as gates:
            await wait_until(lambda: gates.rides >= RIDERS, "the riders to ride", within=60)
            for proxy in mesh.databases.values():
                proxy.cut()
            try:
                before = gates.rides
                await asyncio.sleep(DATABASE_CUT)
                ridden_during_cut = gates.rides - before
            finally:
                for proxy in mesh.databases.values():
                    proxy.restore()
        problems = await settled_audit(mesh.settings)
    assert ridden_during_cut > 0, "no event was produced while the databases were cut"
    assert {name: n for name, n in deepest.items() if n} == {}, "attempts spent on an outage"
    assert problems == [], "\n".join(problems)
