"""The real user, fare and journey services in this process (port 0, one isolated run:
databases, exchange, Redis prefix), seeded with seed 004's terminals, gates and fares, plus
the builders and the money audit the journey tests share."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial

import grpc
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from tiket.journey.v1 import journey_pb2, journey_pb2_grpc
from tiket.user.v1 import user_pb2, user_pb2_grpc

from libs.auth import Role
from libs.auth.service_identity import ServiceIdentity
from libs.cache import Cache
from libs.config import Settings, load
from libs.db.database import open_pool
from libs.money import from_money, to_money
from libs.server.runtime import ServiceRuntime
from services.fare import demo as fare_demo
from services.fare.service import DEFINITION as FARE
from services.journey import domain, service, store, tap_store, trips
from services.journey.app import JourneyApp
from services.journey.config import JourneyConfig
from services.journey.domain import TapKind, TapRequest
from services.journey.jobs import Sweeper
from services.user.service import DEFINITION as USER
from tests.support import keys
from tests.support.cleanup import remove_run
from tests.support.settings import isolated_env
from tests.support.tcp_proxy import TcpProxy

SERVICES = ("user", "fare", "journey")
_cards = itertools.count(1)


@dataclass
class Mesh:
    settings: Settings  # the journey service's (its TIKET_USER_ADDR/FARE_ADDR point at them)
    runtimes: dict[str, ServiceRuntime]
    channels: dict[str, aio.Channel]
    config: JourneyConfig
    # name -> the proxy the journey service reaches that dependency through, when asked
    proxies: dict[str, TcpProxy] = field(default_factory=dict)

    @property
    def journeys(self) -> journey_pb2_grpc.JourneyServiceStub:
        return journey_pb2_grpc.JourneyServiceStub(self.channels["journey"])

    @property
    def users(self) -> user_pb2_grpc.UserServiceStub:
        return user_pb2_grpc.UserServiceStub(self.channels["user"])

    def metadata(self, role: Role | str = Role.ADMIN, sub: str = "tests") -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {keys.token(self.settings, role, sub)}")]

    def database_url(self, name: str) -> str:
        return self.settings.database_url(name)


@asynccontextmanager
async def running_mesh(
    config: JourneyConfig | None = None, *, proxied: bool = False
) -> AsyncIterator[Mesh]:
    """Start the three services; with `proxied` the journey service reaches the user and
    fare services through fault-injection proxies (mesh.proxies)."""
    env = isolated_env(TIKET_SWEEP_INTERVAL_SECONDS="3600")
    base = load(env)
    runtimes = {"user": ServiceRuntime(USER, base), "fare": ServiceRuntime(FARE, base)}
    channels: dict[str, aio.Channel] = {}
    proxies: dict[str, TcpProxy] = {}
    config = config or JourneyConfig()
    try:
        await asyncio.gather(*(r.start() for r in runtimes.values()))
        ports = {name: runtime.port for name, runtime in runtimes.items()}
        if proxied:
            for name, port in ports.items():
                proxies[name] = TcpProxy("127.0.0.1", port)
                await proxies[name].start()
                ports[name] = proxies[name].port
        addresses = {f"TIKET_{n.upper()}_ADDR": f"127.0.0.1:{p}" for n, p in ports.items()}
        settings = load({**env, **addresses})
        definition = replace(
            service.DEFINITION, build=partial(service.build, journey_config=config)
        )
        runtimes["journey"] = ServiceRuntime(definition, settings)
        await runtimes["journey"].start()
        for name, runtime in runtimes.items():
            channels[name] = aio.insecure_channel(f"127.0.0.1:{runtime.port}")
        mesh = Mesh(settings, runtimes, channels, config, proxies)
        await fare_demo.load(channels["fare"], mesh.metadata(), lambda _: None)
        yield mesh
    finally:
        for channel in channels.values():
            await channel.close()
        for runtime in reversed(list(runtimes.values())):
            await runtime.stop()
        for proxy in proxies.values():
            await proxy.stop()
        await remove_run(base, SERVICES)


@asynccontextmanager
async def sweeper_of(mesh: Mesh, config: JourneyConfig) -> AsyncIterator[Sweeper]:
    """A second journey replica's sweeper (own pool and channels) with its own config."""
    pool = await open_pool(
        mesh.database_url("journey"), min_size=1, max_size=4, configure=store.register_types
    )
    identity = ServiceIdentity.load("journey", mesh.settings)
    channels = service.dependency_channels(mesh.settings, identity, config)
    cache = Cache(mesh.settings.redis_url, mesh.settings.redis_prefix)
    try:
        yield Sweeper(JourneyApp(pool, cache, config, *channels))
    finally:
        for channel in channels:
            await channel.close()
        await cache.close()
        await pool.close()


async def settle(mesh: Mesh, rounds: int = 30) -> None:
    """Let the system settle: a sweeper with no grace periods runs until no tap and no
    closing is left pending (a round that met an overloaded dependency leaves its items for
    the next). Call it only once no tap is in flight: it finishes every pending one."""
    finish = replace(mesh.config, settle_after=timedelta(0), orphan_after=timedelta(0))
    async with sweeper_of(mesh, finish) as sweeper:
        for attempt in range(rounds):
            await sweeper.sweep()
            if await pending(mesh) == (0, 0):
                return
            await asyncio.sleep(0.1 * attempt)  # back off: the dependency may be overloaded


async def pending(mesh: Mesh) -> tuple[int, int]:
    """(taps, closings and re-pricings) still pending in the journey database."""
    async with await journey_db(mesh) as conn:
        cur = await conn.execute(
            """SELECT (SELECT count(*) FROM taps WHERE state = 'pending'),
                      (SELECT count(*) FROM journey_history WHERE settlement = 'pending')
                      + (SELECT count(*) FROM journey_adjustments WHERE state = 'pending')"""
        )
        row = await cur.fetchone()
    assert row is not None
    return row[0], row[1]


async def journey_db(mesh: Mesh) -> psycopg.AsyncConnection:
    """An autocommit connection to the journey database, with its enum types."""
    conn = await psycopg.AsyncConnection.connect(mesh.database_url("journey"), autocommit=True)
    await store.register_types(conn)
    return conn


async def active_trip(sweeper: Sweeper, user_id: str) -> dict[str, str]:
    """Seed 004's active_trip hash of a rider as stored in Redis ({} when there is none)."""
    cache = sweeper.app.trips.cache
    raw = await cache.client.hgetall(cache.key(trips.key(uuid.UUID(user_id))))
    return {k.decode(): v.decode() for k, v in raw.items()}


# --- builders ------------------------------------------------------------------------------


def new_card() -> str:
    return f"J{uuid.uuid4().hex[:9].upper()}{next(_cards):04d}"


def idr(amount: int | str | Decimal):
    return to_money(Decimal(amount))


def stamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


async def new_rider(mesh: Mesh, balance: int = 100_000) -> tuple[str, str]:
    """(user_id, card_id) of a new active rider with `balance` on the wallet."""
    card = new_card()
    md = mesh.metadata()
    user = await mesh.users.CreateUser(
        user_pb2.CreateUserRequest(card_id=card, full_name="Rider"), metadata=md
    )
    if balance:
        await mesh.users.TopUp(
            user_pb2.TopUpRequest(user_id=user.id, amount=idr(balance), idempotency_key="init"),
            metadata=md,
        )
    return user.id, card


def tap_request(
    kind: str,
    card: str,
    terminal: str,
    gate: str,
    tap_id: str | None = None,
    tapped_at: datetime | None = None,
):
    message = journey_pb2.CheckInRequest if kind == "in" else journey_pb2.CheckOutRequest
    request = message(
        card_id=card, terminal_code=terminal, gate_code=gate, tap_id=tap_id or str(uuid.uuid4())
    )
    if tapped_at is not None:
        request.tapped_at.CopyFrom(stamp(tapped_at))
    return request


async def tap_in(
    mesh: Mesh,
    card: str,
    terminal: str = "A",
    gate: str = "A-ENTRY-01",
    timeout: float | None = None,
    **kw,
):
    """CheckIn with the gate's own token."""
    request = tap_request("in", card, terminal, gate, **kw)
    md = mesh.metadata(Role.GATE, f"{terminal}/{gate}")
    return await mesh.journeys.CheckIn(request, metadata=md, timeout=timeout)


async def tap_out(
    mesh: Mesh,
    card: str,
    terminal: str = "E",
    gate: str = "E-EXIT-01",
    timeout: float | None = None,
    **kw,
):
    """CheckOut with the gate's own token."""
    request = tap_request("out", card, terminal, gate, **kw)
    md = mesh.metadata(Role.GATE, f"{terminal}/{gate}")
    return await mesh.journeys.CheckOut(request, metadata=md, timeout=timeout)


async def wallet(mesh: Mesh, user_id: str) -> tuple[Decimal, Decimal, Decimal]:
    """(balance, held, available)."""
    w = await mesh.users.GetWallet(
        user_pb2.GetWalletRequest(user_id=user_id), metadata=mesh.metadata()
    )
    return from_money(w.balance), from_money(w.held), from_money(w.available)


async def counts(mesh: Mesh) -> tuple[int, int, int]:
    """(taps, journeys, holds): for checking that a refused request wrote nothing."""
    async with await psycopg.AsyncConnection.connect(mesh.database_url("journey")) as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM taps), (SELECT count(*) FROM journey_history)"
        )
        taps, journeys = await cur.fetchone()
    async with await psycopg.AsyncConnection.connect(mesh.database_url("user")) as conn:
        holds = (await (await conn.execute("SELECT count(*) FROM holds")).fetchone())[0]
    return taps, journeys, holds


# --- what an attempt had written when its process died -------------------------------------


async def crashed_check_in(mesh: Mesh, user_id: str, card: str) -> domain.Tap:
    """A check-in at A whose process died: the tap recorded, the hold placed, no journey."""
    request = TapRequest(TapKind.CHECKIN, uuid.uuid4(), card, "A", "A-ENTRY-01", None)
    async with await journey_db(mesh) as conn:
        recorded = await tap_store.record_tap(conn, request, uuid.UUID(user_id), request.journey_id)
        assert recorded is not None
        tap = recorded[0]
    await mesh.users.PlaceHold(
        user_pb2.PlaceHoldRequest(
            user_id=user_id,
            amount=idr(12_000),
            reference=domain.hold_reference(request.journey_id),
        ),
        metadata=mesh.metadata(),
    )
    return tap


async def crashed_check_out(
    mesh: Mesh, user_id: str, card: str, terminal: str, gate: str, fare: int
) -> TapRequest:
    """A check-out whose process died after it claimed the rider's active journey (priced
    `fare`): the tap pending and linked, the closing pending. The tap, to retry it."""
    request = TapRequest(TapKind.CHECKOUT, uuid.uuid4(), card, terminal, gate, datetime.now(UTC))
    async with await journey_db(mesh) as conn:
        active = await store.active_journey(conn, uuid.UUID(user_id))
        assert active is not None
        await tap_store.record_tap(conn, request, active.user_id, None)
        exit_name = {t[0]: t[1] for t in fare_demo.DEMO_TERMINALS}[terminal]
        closing = domain.completing(
            active.entry, request, request.tapped_at, exit_name, Decimal(fare), mesh.config
        )
        assert await store.claim(conn, active.id, closing) is not None
        await tap_store.link_tap(conn, request.tap_id, active.id)
    return request


def refusal_of(error: grpc.aio.AioRpcError) -> tuple[str, list[journey_pb2.Journey]]:
    """(google.rpc.ErrorInfo.reason, the journeys packed beside it) of a refusal."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw, f"{error.code()} without details"
    reason, journeys = "", []
    for detail in status_pb2.Status.FromString(raw).details:
        info, journey = error_details_pb2.ErrorInfo(), journey_pb2.Journey()
        if detail.Unpack(info):
            reason = info.reason
        elif detail.Unpack(journey):
            journeys.append(journey)
    return reason, journeys


# --- offline taps (SyncOfflineTaps) ------------------------------------------------------------


def offline_tap(
    kind: str, card: str, at: datetime, amount: int | None = None, tap_id: str | None = None
) -> journey_pb2.OfflineTap:
    """A tap a gate decided offline: "in" or "out" at `at`, reckoned `amount` by the gate."""
    direction = (
        journey_pb2.TAP_DIRECTION_CHECK_IN if kind == "in" else journey_pb2.TAP_DIRECTION_CHECK_OUT
    )
    tap = journey_pb2.OfflineTap(
        tap_id=tap_id or str(uuid.uuid4()), card_id=card, direction=direction
    )
    tap.tapped_at.CopyFrom(stamp(at))
    if amount is not None:
        tap.offline_amount.CopyFrom(idr(amount))
    return tap


async def sync(
    mesh: Mesh, terminal: str, gate: str, taps: list[journey_pb2.OfflineTap], **kw
) -> journey_pb2.SyncOfflineTapsResponse:
    """SyncOfflineTaps with the gate's own token."""
    request = journey_pb2.SyncOfflineTapsRequest(terminal_code=terminal, gate_code=gate, taps=taps)
    md = mesh.metadata(Role.GATE, f"{terminal}/{gate}")
    return await mesh.journeys.SyncOfflineTaps(request, metadata=md, **kw)


async def journeys_of(mesh: Mesh, user_id: str) -> list[journey_pb2.Journey]:
    """The rider's journeys, oldest first."""
    found = await mesh.journeys.ListJourneys(
        journey_pb2.ListJourneysRequest(user_id=user_id, page_size=500), metadata=mesh.metadata()
    )
    return list(reversed(found.journeys))
