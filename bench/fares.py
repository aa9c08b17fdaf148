"""GetFare through the fare service, from its cache and from PostgreSQL, measured
against the same SELECT in pgbench.

    .venv/bin/python -m bench.fares [--duration 8] [--concurrency 16] [--json]

The benchmark starts its own fare service process on an isolated database and loads seed
004's demo matrix. Run 1 (cached): `--concurrency` workers call GetFare for random pairs of
the 20 with a gate token, answered from the process's memory of the Redis cache
(services/fare/cache.py: a pair is read from Redis once a second). Run 2 (uncached): the
same service restarted with TIKET_REDIS_URL pointing at a closed port, so every lookup reads
PostgreSQL (the Redis down path). Run 3 (floor): the same workers against a bare grpc.aio
server answering GetFare with a fixed Fare (bench/echo_server.py: no interceptor, token,
cache or database), what gRPC itself costs here; the goal is cached GetFare ≥ 50 % of it
(issue 18). Run 4: pgbench runs GetFare's SELECT with as many clients for as long. It prints
throughput and latency of each and their ratios, and removes what it created.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from grpc import aio
from tiket.fare.v1 import fare_pb2, fare_pb2_grpc

from bench import common
from bench.common import Measured, PgbenchResult, Samples, ServiceProcess
from services.fare import demo
from tests.support import keys
from tests.support.processes import free_port

CALL_TIMEOUT = 10.0
ECHO_GOAL_PERCENT = 50  # cached GetFare / the bare server (issue 18)
PAIRS = [(o, d) for o in "ABCDE" for d in "ABCDE" if o != d]
# GetFare's database read (services/fare/store.py pair_versions) for a random pair of the
# demo matrix; terminal codes A..E are chr(64 + 1..5).
GET_FARE_SQL = r"""
\set o random(1, 5)
\set d random(1, 4)
\set d CASE WHEN :d >= :o THEN :d + 1 ELSE :d END
SELECT f.id, o.code AS origin, d.code AS destination, f.price, f.effective_from,
       f.effective_until, f.source, f.created_at, f.is_active
  FROM fares f
  JOIN terminals o ON o.id = f.origin_terminal_id
  JOIN terminals d ON d.id = f.destination_terminal_id
 WHERE o.code = chr(64 + :o) AND d.code = chr(64 + :d) AND f.is_active
 ORDER BY f.effective_from;
"""


@dataclass(frozen=True)
class Options:
    duration: int
    concurrency: int
    pool_max: int
    warmup: float
    as_json: bool


@dataclass
class Run:
    """One gRPC run: GetFare samples, errors, CPU, and how the cache answered."""

    started: float
    samples: Samples = field(default_factory=Samples)
    errors: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)
    lookups: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    options: Options
    cached: Measured
    uncached: Measured
    echo: Measured
    pgbench: PgbenchResult
    errors: dict[str, int]
    lookups: dict[str, dict[str, float]]
    cpu: dict[str, dict[str, float]]
    load_before: float

    def ratio(self, numerator: Measured, denominator: Measured) -> float:
        return 100 * numerator.rate / denominator.rate if denominator.rate else math.nan


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fares", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--duration", type=int, default=8, help="seconds per run (default 8)")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="gRPC workers = pgbench clients (default 16)"
    )
    parser.add_argument("--pool-max", type=int, help="TIKET_DB_POOL_MAX (default: --concurrency)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds left out (default 2)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.duration <= args.warmup:
        parser.error("--duration must be longer than --warmup")
    return Options(
        args.duration, args.concurrency, args.pool_max or args.concurrency, args.warmup, args.json
    )


# --- the workload ----------------------------------------------------------------------------


async def run_get_fare(
    service: ServiceProcess, options: Options, *, count_lookups: bool = True
) -> Run:
    """GetFare for random pairs from `options.concurrency` workers for `options.duration` s;
    `count_lookups`: read the fare service's cache counters before and after."""
    metadata = tuple(keys.bearer(service.settings, "gate", "A/A-EXIT-01"))
    before = _lookups(service) if count_lookups else {}
    async with aio.insecure_channel(service.address) as channel:
        stub = fare_pb2_grpc.FareServiceStub(channel)
        run = Run(started=time.perf_counter())
        deadline = run.started + options.duration
        probe = asyncio.create_task(_probe_cpu(run, service.pid, options))
        await asyncio.gather(
            *(_worker(stub, metadata, deadline, run, n) for n in range(options.concurrency))
        )
        await probe
    after = _lookups(service) if count_lookups else {}
    run.lookups = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return run


async def _worker(
    stub: fare_pb2_grpc.FareServiceStub,
    metadata: tuple[tuple[str, str], ...],
    deadline: float,
    run: Run,
    n: int,
) -> None:
    clock, rng = time.perf_counter, random.Random(n)
    while (began := clock()) < deadline:
        origin, destination = rng.choice(PAIRS)
        try:
            await stub.GetFare(
                fare_pb2.GetFareRequest(origin_code=origin, destination_code=destination),
                metadata=metadata,
                timeout=CALL_TIMEOUT,
            )
        except aio.AioRpcError as exc:
            run.errors[f"GetFare {exc.code().name}"] += 1
            continue
        done = clock()
        run.samples.add(done, done - began)


async def _probe_cpu(run: Run, service_pid: int, options: Options) -> None:
    sources: dict[str, common.CpuSource] = {
        "service": service_pid,
        "load generator": os.getpid(),
        "postgres": "postgres",
        "redis": "redis-server",
    }
    await asyncio.sleep(options.warmup)
    before = common.cpu_snapshot(sources)
    await asyncio.sleep(options.duration - options.warmup)
    run.cpu = common.cpu_percent(before, common.cpu_snapshot(sources))


def _lookups(service: ServiceProcess) -> dict[str, float]:
    """tiket_fare_cache_lookups_total by result, from the service's metrics endpoint."""
    port = service.settings.metrics_ports["fare"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith('tiket_fare_cache_lookups_total{result="'):
            result = line.split('"')[1]
            found[result] = float(line.rsplit(" ", 1)[1])
    return found


def measure(run: Run, options: Options) -> Measured:
    return run.samples.measure(run.started + options.warmup, run.started + options.duration)


# --- the benchmark -----------------------------------------------------------------------------


async def benchmark(options: Options) -> Report:
    env = common.isolated_env(["fare"], TIKET_DB_POOL_MAX=str(options.pool_max))
    closed_port = free_port()  # nothing listens there: Redis "down"
    cached_service = ServiceProcess("fare", env)
    uncached_service = ServiceProcess(
        "fare", {**env, "TIKET_REDIS_URL": f"redis://127.0.0.1:{closed_port}/0"}
    )
    echo_port = cached_service.settings.grpc_ports["fare"]
    echo_server = ServiceProcess("fare", env, ("-m", "bench.echo_server", str(echo_port)))
    settings = cached_service.settings
    database_url = settings.database_url("fare")
    load_before = await common.machine_load()
    try:
        common.say(f"starting the fare service on {cached_service.address} …")
        await cached_service.start()
        await _load_demo(cached_service)
        common.say(f"cached: {options.concurrency} workers for {options.duration} s …")
        cached = await run_get_fare(cached_service, options)
        await cached_service.stop()

        common.say("restarting it with Redis unreachable …")
        await uncached_service.start()
        common.say(f"uncached: {options.concurrency} workers for {options.duration} s …")
        uncached = await run_get_fare(uncached_service, options)
        await uncached_service.stop()

        common.say("starting the bare grpc.aio server (the floor) …")
        await echo_server.start()
        common.say(f"bare server: {options.concurrency} workers for {options.duration} s …")
        echo = await run_get_fare(echo_server, options, count_lookups=False)
        await echo_server.stop()

        common.say(f"pgbench: {options.concurrency} clients for {options.duration} s …")
        with tempfile.TemporaryDirectory(prefix="bench-fares-") as scratch:
            script = Path(scratch) / "get_fare.sql"
            script.write_text(GET_FARE_SQL)
            pgbench = await common.run_pgbench(
                database_url,
                script,
                clients=options.concurrency,
                duration=options.duration,
                warmup=options.warmup,
                cpu_sources={"pgbench": "pgbench", "postgres": "postgres"},
            )
    finally:
        for service in (cached_service, uncached_service, echo_server):
            await service.stop()
            service.close()
        await common.remove_run_state(settings, ["fare"])
    return Report(
        options,
        measure(cached, options),
        measure(uncached, options),
        measure(echo, options),
        pgbench,
        dict(cached.errors + uncached.errors + echo.errors),
        {"cached": cached.lookups, "uncached": uncached.lookups},
        {
            "cached": cached.cpu,
            "uncached": uncached.cpu,
            "bare server": echo.cpu,
            "pgbench": pgbench.cpu,
        },
        load_before,
    )


async def _load_demo(service: ServiceProcess) -> None:
    token = keys.token(service.settings, "admin", "bench")
    async with aio.insecure_channel(service.address) as channel:
        await demo.load(channel, [("authorization", f"Bearer {token}")], lambda _: None)


# --- output -------------------------------------------------------------------------------


def render(report: Report) -> str:
    o, pg = report.options, report.pgbench
    headers = ("", "ops/s", "mean ms", "p50 ms", "p95 ms", "p99 ms", "max ms", "count")
    rows = [
        _row("gRPC GetFare, cached", report.cached),
        _row("gRPC GetFare, uncached (PostgreSQL)", report.uncached),
        _row("bare grpc.aio server, fixed answer", report.echo),
        _row("pgbench GetFare's SELECT", pg.window),
    ]
    cached, uncached = report.lookups["cached"], report.lookups["uncached"]
    lines = [
        f"fares: {o.concurrency} workers / pgbench clients, 20 pairs, {o.duration} s per run "
        f"({o.warmup:g} s warm-up left out), service pool max {o.pool_max}",
        f"machine busy before the run: {report.load_before:.0f} % of all cores"
        + (" — other work was running; rerun" if report.load_before > 10 else ""),
        "",
        common.table(headers, rows),
        "",
        f"cached / uncached: {report.ratio(report.cached, report.uncached):.0f} %",
        f"cached / bare grpc.aio server: {report.ratio(report.cached, report.echo):.1f} %"
        + _goal(report.ratio(report.cached, report.echo)),
        f"cached / pgbench: {report.ratio(report.cached, pg.window):.1f} %, "
        f"uncached / pgbench: {report.ratio(report.uncached, pg.window):.1f} %",
        f"cache answers, cached run: {_counts(cached)}; uncached run: {_counts(uncached)}",
        f"errors: {', '.join(f'{k} × {v}' for k, v in sorted(report.errors.items())) or 'none'}",
    ]
    for name, shares in report.cpu.items():
        parts = ", ".join(
            f"{k} {v:.0f}" for k, v in shares.items() if k not in {"machine", "iowait"}
        )
        lines.append(
            f"CPU, % of one core — {name}: {parts}; machine busy "
            f"{shares.get('machine', 0):.0f} % of all cores"
        )
    return "\n".join(lines)


def _row(label: str, m: Measured) -> list[object]:
    s = m.latency
    return [label, m.rate, s.mean_ms, s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms, s.count]


def _goal(percent: float) -> str:
    return " " + common.goal(percent >= ECHO_GOAL_PERCENT, f"≥ {ECHO_GOAL_PERCENT} %")


def _counts(lookups: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:,.0f}" for k, v in sorted(lookups.items()) if v) or "none"


def as_json(report: Report) -> str:
    data = {
        "options": asdict(report.options),
        "cached": asdict(report.cached),
        "uncached": asdict(report.uncached),
        "bare_server": asdict(report.echo),
        "pgbench": asdict(report.pgbench),
        "cached_vs_bare_server_percent": report.ratio(report.cached, report.echo),
        "cached_vs_uncached_percent": report.ratio(report.cached, report.uncached),
        "cached_vs_pgbench_percent": report.ratio(report.cached, report.pgbench.window),
        "uncached_vs_pgbench_percent": report.ratio(report.uncached, report.pgbench.window),
        "lookups": report.lookups,
        "errors": report.errors,
        "cpu": report.cpu,
        "machine_busy_before_percent": report.load_before,
    }
    return json.dumps(data, indent=2, default=str).replace("NaN", "null")


def main(argv: Sequence[str] | None = None) -> None:
    common.run(
        "bench.fares", parse_args(argv), benchmark, render, as_json, lambda r: bool(r.errors)
    )


if __name__ == "__main__":
    main()
