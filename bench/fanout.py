"""Event fan-out under the taps load: how fast notification and analytics keep up.

    .venv/bin/python -m bench.fanout [--duration 20] [--gates 32] [--riders 256] [--json]

Starts the whole mesh (user, fare, journey, notification, analytics) on isolated databases
and its own exchange, runs bench/taps.py's gates at full speed for `--duration` seconds while
sampling the depth of each consumer's queue, then waits for the queues to drain. From the
databases it reports, per consumer: events handled, handled/s while the load ran, the deepest
queue seen, how long the backlog took to drain, and the fan-out latency of
`journey.checked_out` — from the journey transaction that emitted it (outbox.created_at) to
the consumer transaction that stored its effect (inbox.handled_at), both on PostgreSQL's
clock. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

import grpc
import psycopg
from grpc import aio

from bench import common, taps
from bench.common import LatencyStats, ServiceProcess
from libs.auth import Role
from libs.config import Settings
from libs.events.consumer import retry_queue
from libs.events.dead_letters import waiting_counts
from services import registry
from services.fare import demo as fare_demo
from tests.support import keys

SERVICES = ("user", "fare", "journey", "notification", "analytics")
PRODUCERS = ("user", "fare", "journey")
CONSUMERS = ("notification", "analytics")
SAMPLE_EVERY = 0.5
DRAIN_TIMEOUT = 180.0
TRACED_EVENT = "journey.checked_out"


@dataclass(frozen=True)
class ConsumerFigures:
    consumer: str
    handled: int
    handled_per_s: float  # while the load ran
    max_depth: int
    depth_at_end_of_load: int
    cpu_ms_per_event: float  # the consumer service's CPU while the load ran
    latency: LatencyStats  # TRACED_EVENT: emitted -> effect stored


@dataclass(frozen=True)
class FanoutReport:
    options: taps.Options
    rides_per_s: float
    drain_seconds: float
    consumers: list[ConsumerFigures]
    errors: dict[str, int]
    cpu: dict[str, float]  # % of one core while the load ran


def parse_args(argv: Sequence[str] | None) -> taps.Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--duration", type=int, default=20, help="seconds of load (default 20)")
    parser.add_argument("--gates", type=int, default=32, help="simulated gates (default 32)")
    parser.add_argument("--riders", type=int, default=256, help="wallets (default 256)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.riders < args.gates:
        parser.error("--riders must be at least --gates (each gate rides its own riders)")
    return taps.Options(
        duration=args.duration,
        gates=args.gates,
        riders=args.riders - args.riders % args.gates,
        workers=dict.fromkeys(taps.SERVICES, 1),
        pool_max=16,
        warmup=0.0,
        active_trip_cache=True,
        as_json=args.json,
    )


class Depths:
    """Messages waiting in each consumer's queue and retry queue, sampled over time."""

    def __init__(self, amqp_url: str, exchange: str) -> None:
        self.amqp_url = amqp_url
        self.queues = {c: registry.consumer_queues(c, exchange)[0] for c in CONSUMERS}
        self.deepest = dict.fromkeys(CONSUMERS, 0)
        self.last = dict.fromkeys(CONSUMERS, 0)

    async def sample(self) -> dict[str, int]:
        names = [n for q in self.queues.values() for n in (q, retry_queue(q))]
        counts = await waiting_counts(self.amqp_url, names)
        for consumer, queue in self.queues.items():
            depth = (counts[queue] or 0) + (counts[retry_queue(queue)] or 0)
            self.last[consumer] = depth
            self.deepest[consumer] = max(self.deepest[consumer], depth)
        return self.last

    async def watch(self, until: float) -> None:
        while time.perf_counter() < until:
            await self.sample()
            await asyncio.sleep(SAMPLE_EVERY)


async def count(url: str, sql: str) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        row = await (await conn.execute(sql)).fetchone()
        return int(row[0]) if row else 0


async def wait_drained(settings: Settings, depths: Depths) -> float:
    """Seconds until every relay has published everything and every consumer has handled
    what it was sent: no unsent outbox row, empty queues, and inboxes that stopped growing."""
    began = time.perf_counter()
    previous: list[int] = []
    while time.perf_counter() - began < DRAIN_TIMEOUT:
        unsent = [
            await count(
                settings.database_url(p), "SELECT count(*) FROM outbox WHERE sent_at IS NULL"
            )
            for p in PRODUCERS
        ]
        waiting = await depths.sample()
        handled = [
            await count(settings.database_url(c), "SELECT count(*) FROM inbox") for c in CONSUMERS
        ]
        common.say(
            f"  draining: {sum(unsent)} unsent, {sum(waiting.values())} queued, "
            f"{sum(handled)} handled",
            end="\r",
        )
        if not any(unsent) and not any(waiting.values()) and handled == previous:
            common.say("")
            return time.perf_counter() - began
        previous = handled
        await asyncio.sleep(SAMPLE_EVERY * 2)
    raise RuntimeError(f"the consumers did not drain within {DRAIN_TIMEOUT:.0f} s")


async def emitted_at(settings: Settings) -> dict[str, datetime]:
    async with await psycopg.AsyncConnection.connect(settings.database_url("journey")) as conn:
        cur = await conn.execute(
            "SELECT event_id::text, created_at FROM outbox WHERE event_type = %s", (TRACED_EVENT,)
        )
        return dict(await cur.fetchall())


async def consumer_figures(
    settings: Settings,
    consumer: str,
    emitted: dict[str, datetime],
    deepest: int,
    at_end: int,
    cpu_percent: float,
    load: tuple[datetime, datetime],
) -> ConsumerFigures:
    async with await psycopg.AsyncConnection.connect(settings.database_url(consumer)) as conn:
        cur = await conn.execute("SELECT event_id::text, event_type, handled_at FROM inbox")
        rows = await cur.fetchall()
    during = [at for _, _, at in rows if load[0] <= at <= load[1]]
    seconds = (load[1] - load[0]).total_seconds()
    latencies = [
        (at - emitted[event_id]).total_seconds()
        for event_id, event_type, at in rows
        if event_type == TRACED_EVENT and event_id in emitted
    ]
    per_s = len(during) / seconds if seconds else 0.0
    return ConsumerFigures(
        consumer=consumer,
        handled=len(rows),
        handled_per_s=per_s,
        max_depth=deepest,
        depth_at_end_of_load=at_end,
        cpu_ms_per_event=10 * cpu_percent / per_s if per_s else math.nan,
        latency=common.summarize(latencies),
    )


async def database_now(settings: Settings) -> datetime:
    async with await psycopg.AsyncConnection.connect(settings.database_url("journey")) as conn:
        row = await (await conn.execute("SELECT clock_timestamp()")).fetchone()
        assert row is not None
        return row[0]


async def benchmark(options: taps.Options) -> FanoutReport:
    env = common.isolated_env(list(SERVICES), TIKET_DB_POOL_MAX=str(options.pool_max))
    services = {name: ServiceProcess(name, env) for name in SERVICES}
    settings = services["journey"].settings
    admin = (("authorization", f"Bearer {keys.token(settings, Role.ADMIN, 'bench')}"),)
    try:
        common.say(f"starting {', '.join(SERVICES)} …")
        await asyncio.gather(*(s.start() for s in services.values()))
        async with aio.insecure_channel(services["fare"].address) as channel:
            await fare_demo.load(channel, list(admin), lambda _: None)
        riders = await taps.create_riders(services["user"].address, admin, options.riders)
        depths = Depths(settings.amqp_url, settings.events_exchange)
        await wait_drained(settings, depths)  # the set-up's own events first
        depths = Depths(settings.amqp_url, settings.events_exchange)
        pids = {name: service.pid for name, service in services.items()}
        common.say(f"gRPC: {options.gates} gates riding for {options.duration} s …")
        began = await database_now(settings)
        work, _ = await asyncio.gather(
            taps.run_workload(services["journey"].address, settings, riders, options, pids),
            depths.watch(time.perf_counter() + options.duration),
        )
        ended = await database_now(settings)
        at_end = dict(await depths.sample())
        common.say("waiting for the consumers to handle every event …")
        drain = await wait_drained(settings, depths)
        emitted = await emitted_at(settings)
        figures = [
            await consumer_figures(
                settings,
                c,
                emitted,
                depths.deepest[c],
                at_end[c],
                work.cpu.get(c, 0.0),
                (began, ended),
            )
            for c in CONSUMERS
        ]
    finally:
        for service in services.values():
            await service.stop()
            service.close()
        await common.remove_run_state(settings, list(SERVICES))
    rides = work.measure(0.0, options.duration)["ride"].rate
    return FanoutReport(options, rides, drain, figures, dict(work.errors), work.cpu)


def render(report: FanoutReport) -> str:
    o = report.options
    rows = [
        [
            f.consumer,
            f.handled,
            f.handled_per_s,
            f.max_depth,
            f.depth_at_end_of_load,
            f.cpu_ms_per_event,
            f.latency.p50_ms,
            f.latency.p95_ms,
            f.latency.p99_ms,
            f.latency.max_ms,
        ]
        for f in report.consumers
    ]
    headers = (
        "consumer",
        "handled",
        "per s",
        "max depth",
        "depth at end",
        "CPU ms/event",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
    )
    return "\n".join(
        [
            f"fan-out: {o.gates} gates, {o.riders} riders, {o.duration} s of load at "
            f"{report.rides_per_s:,.1f} rides/s",
            "",
            common.table(headers, rows),
            "",
            f"latency = {TRACED_EVENT} emitted (journey outbox) -> stored (consumer inbox)",
            f"backlog drained {report.drain_seconds:.1f} s after the load stopped",
            "CPU while the load ran, % of one core: "
            + ", ".join(f"{k} {v:.0f}" for k, v in report.cpu.items()),
            "errors: "
            + (", ".join(f"{k} × {v}" for k, v in sorted(report.errors.items())) or "none"),
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_args(argv)
    try:
        report = asyncio.run(benchmark(options))
    except (RuntimeError, OSError, grpc.RpcError, psycopg.Error) as exc:
        sys.exit(f"bench.fanout: {exc}")
    if options.as_json:
        print(json.dumps(asdict(report), indent=2, default=str))
    else:
        print(render(report))


if __name__ == "__main__":
    main()
