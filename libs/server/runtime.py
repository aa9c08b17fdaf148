"""Bootstrap shared by every service: database, migrations, pool, cache, outbox relay,
gRPC server with health, reflection and the tiket interceptor, metrics endpoint, and a
graceful drain on SIGTERM / Ctrl-C."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

import psycopg
import uvloop
from google.protobuf.descriptor import ServiceDescriptor
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from libs import jsonlog, tls, tracing
from libs.auth.service_identity import IdentityError, ServiceIdentity
from libs.cache import Cache
from libs.config import ConfigError, Settings, unread_settings_warnings
from libs.db.database import ensure_database, open_pool
from libs.db.migrations import MigrationError, Track, migrate
from libs.events.consumer import StartsWhenReachable
from libs.events.gauges import QueueGauges, outbox_gauges
from libs.events.relay import OutboxRelay
from libs.events.retention import retention_job
from libs.events.tracks import EVENTS_TRACK
from libs.server import metrics
from libs.server.access import policies_for
from libs.server.interceptor import ServiceInterceptor
from libs.server.ratelimit import RateLimiter

log = logging.getLogger(__name__)

# Set by `tiket up` (cli/supervisor.py) in the environment of the services it starts.
SUPERVISOR_PID = "TIKET_SUPERVISOR_PID"
ORPHAN_CHECK_SECONDS = 1.0
# Young collections after this many allocations instead of CPython's 700: a tap allocates
# thousands of short-lived objects (protobuf, rows, coroutines) that reference counting frees
# anyway; with 700, perf saw the collector take ~3.5 % of the services' CPU in bench/taps.py.
GC_GEN0_THRESHOLD = 20_000
SERVER_OPTIONS = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]


class StartupError(RuntimeError):
    """The service cannot start; the message says what to do."""


class Background(Protocol):
    """A task that runs beside the server (relay, sweeper, consumer)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Resources:
    """What a service's wiring gets to build its servicer and background tasks."""

    settings: Settings
    pool: AsyncConnectionPool
    cache: Cache
    # Its keys: channels to other services sign their calls with identity.signer().
    identity: ServiceIdentity


@dataclass
class Wiring:
    """What a service contributes to the server."""

    register: Callable[[aio.Server], None]
    background: list[Background] = field(default_factory=list)
    close: Callable[[], Awaitable[None]] | None = None


@dataclass(frozen=True)
class ServiceDefinition:
    name: str
    services: Sequence[ServiceDescriptor]
    tracks: Sequence[Track]
    build: Callable[[Resources], Awaitable[Wiring]]
    # Runs on each new pooled connection (e.g. registering enum types).
    configure_connection: Callable[[AsyncConnection], Awaitable[None]] | None = None
    # The largest request message the server takes (gRPC's default: 4 MB).
    max_request_bytes: int = 4 * 1024 * 1024


def prepare_database(definition: ServiceDefinition, settings: Settings) -> list[str]:
    """Create the service's database when missing and apply its migrations."""
    url = settings.database_url(definition.name)
    ensure_database(url)
    return migrate(url, [EVENTS_TRACK, *definition.tracks])


def check_identity(name: str, settings: Settings) -> ServiceIdentity:
    """The service's keys, after refusing development defaults outside development/test;
    StartupError saying what to set otherwise."""
    try:
        settings.check_production()
        return ServiceIdentity.load(name, settings)
    except (ConfigError, IdentityError) as exc:
        raise StartupError(str(exc)) from None


class ServiceRuntime:
    """One running service. `start()` returns once it is SERVING; `stop()` drains it."""

    def __init__(
        self, definition: ServiceDefinition, settings: Settings, *, worker: int = 0
    ) -> None:
        """`worker`: 0 for a lone process, else its number (from 1) among several processes
        sharing the port (SO_REUSEPORT); their parent (libs/server/workers.py) migrated the
        database and serves the metrics."""
        self.definition = definition
        self.settings = settings
        self.worker = worker
        self.port = settings.grpc_ports[definition.name]
        self.metrics_port = settings.metrics_ports[definition.name]
        self.health = health_aio.HealthServicer()
        self._started: list[Background] = []
        self._server: aio.Server | None = None
        self._pool: AsyncConnectionPool | None = None
        self._cache: Cache | None = None
        self._limiter: RateLimiter | None = None
        self._wiring: Wiring | None = None
        self._metrics_server = None

    @property
    def names(self) -> list[str]:
        return [s.full_name for s in self.definition.services]

    async def start(self) -> None:
        settings, name = self.settings, self.definition.name
        identity = check_identity(name, settings)
        tracing.configure(name, settings)
        if not self.worker:
            await asyncio.to_thread(prepare_database, self.definition, settings)
        self._pool = await open_pool(
            settings.database_url(name),
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            configure=self.definition.configure_connection,
        )
        self._cache = Cache(settings.redis_url, settings.redis_prefix)
        try:
            self._wiring = await self.definition.build(
                Resources(settings, self._pool, self._cache, identity)
            )
        except (IdentityError, tls.TlsError) as exc:  # keys; TLS files of its channels
            raise StartupError(str(exc)) from None

        self._limiter = RateLimiter.from_settings(settings)
        interceptor = ServiceInterceptor(
            policies_for(self.definition.services), identity.verifier(), self._limiter
        )
        # A lone server refuses to share its port (two servers on one port hide bugs);
        # workers share it on purpose and the kernel spreads connections across them.
        options = [
            *SERVER_OPTIONS,
            ("grpc.max_receive_message_length", self.definition.max_request_bytes),
            ("grpc.so_reuseport", int(self.worker > 0)),
        ]
        server = aio.server(interceptors=[interceptor], options=options)
        self._wiring.register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [
                *self.names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        address = f"{settings.host}:{self.port}"
        try:
            if settings.tls_server:
                self.port = server.add_secure_port(address, tls.server_credentials(settings))
            else:
                self.port = server.add_insecure_port(address)
        except tls.TlsError as exc:
            raise StartupError(str(exc)) from None
        except RuntimeError:
            raise StartupError(
                f"cannot listen on {settings.host}:{self.port}: the port is in use (another "
                f"tiket running?); stop it or set TIKET_{name.upper()}_PORT"
            ) from None
        await server.start()
        self._server = server

        relay = OutboxRelay(self._pool, settings.amqp_url, settings.events_exchange)
        retention = retention_job(
            self._pool,
            timedelta(hours=settings.event_retention_hours),
            settings.sweep_interval_seconds,
        )
        gauges = [
            metrics.pool_gauges(name, self._pool),
            outbox_gauges(name, self._pool),
            QueueGauges(
                name,
                [
                    b.consumer.name
                    for b in self._wiring.background
                    if isinstance(b, StartsWhenReachable)
                ],
                settings.amqp_url,
            ),
        ]
        background = [identity.refresher(), relay, retention, *gauges]
        for task in [*background, *self._wiring.background]:
            await task.start()
            self._started.append(task)
        if not self.worker:
            self._metrics_server, _ = metrics.start(self.metrics_port, settings.host)
            self.metrics_port = self._metrics_server.server_port
        for service in ["", *self.names]:
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving",
            extra={"service": name, "grpc_port": self.port, "metrics_port": self.metrics_port},
        )

    async def stop(self) -> None:
        """NOT_SERVING first (load balancers stop sending), then drain in-flight calls within
        the grace period, then stop background tasks and close connections."""
        await self.health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(self.settings.grace_seconds)
        for task in reversed(self._started):
            try:
                async with asyncio.timeout(self.settings.grace_seconds):
                    await task.stop()
            except TimeoutError:
                log.error("%s did not stop within the grace period", type(task).__name__)
        self._started.clear()
        if self._wiring and self._wiring.close:
            await self._wiring.close()
        if self._cache:
            await self._cache.close()
        if self._limiter:
            await self._limiter.close()
        if self._pool:
            await self._pool.close()
        await asyncio.to_thread(tracing.flush)  # the spans still buffered, if tracing is on
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        log.info("stopped", extra={"service": self.definition.name})


async def _serve_until_signalled(runtime: ServiceRuntime) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    supervisor = os.environ.get(SUPERVISOR_PID, "")
    watch = None
    if supervisor == str(os.getppid()):  # not in worker processes: their parent is ours
        watch = asyncio.create_task(_stop_when_orphaned(stop, int(supervisor)))
    await runtime.start()
    if runtime.worker <= 1:  # the other workers of the service would say the same
        _warn_of_unread_settings(runtime.definition.name)
    tune_garbage_collector()
    await stop.wait()
    if watch is not None:
        watch.cancel()
    log.info("draining", extra={"grace_seconds": runtime.settings.grace_seconds})
    await runtime.stop()


def _warn_of_unread_settings(service: str) -> None:
    """Started, every setting is read: a TIKET_* variable nothing looked for has no effect,
    most likely a misspelt name (TIKET_DATABASE_URL for TIKET_POSTGRES_URL)."""
    for warning in unread_settings_warnings(os.environ, service, f"the {service} service"):
        log.warning("%s; README 'Configuration' lists them", warning)


def tune_garbage_collector() -> None:
    """Once started: what startup made (modules, descriptors, caches' first fills) moves to
    the permanent generation, so full collections stop walking it, and young collections
    run less often (GC_GEN0_THRESHOLD). Cycles are still collected."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, older, oldest)


async def _stop_when_orphaned(stop: asyncio.Event, supervisor: int) -> None:
    """Started by `tiket up`: should it die without stopping us (killed, out of memory), drain
    and exit instead of serving on as an orphan nobody will stop."""
    while os.getppid() == supervisor:  # noqa: ASYNC110 - a parent's death sets no event
        await asyncio.sleep(ORPHAN_CHECK_SECONDS)
    log.warning("the supervisor (pid %d) is gone; stopping", supervisor)
    stop.set()


def run(definition: ServiceDefinition, settings: Settings, *, worker: int = 0) -> None:
    """Serve `definition` in the foreground until SIGTERM or Ctrl-C; exit 0 after draining,
    1 with a one-line reason when it cannot start. `worker`: as ServiceRuntime's."""
    jsonlog.setup(definition.name, settings.log_level)
    try:
        # uvloop: the database, Redis and RabbitMQ clients spend less CPU per call on it
        # (about 13 % of the journey service's CPU per ride in bench/taps.py).
        uvloop.run(_serve_until_signalled(ServiceRuntime(definition, settings, worker=worker)))
    except (StartupError, MigrationError) as exc:
        log.error("cannot start: %s", exc)
        sys.exit(1)
    except psycopg.OperationalError as exc:
        log.error("cannot start: PostgreSQL unreachable (%s); check TIKET_POSTGRES_URL", exc)
        sys.exit(1)
