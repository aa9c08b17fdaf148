"""Wallet holds through the user service, measured against the same SQL in pgbench.

    .venv/bin/python -m bench.holds [--duration 15] [--concurrency 32] [--users 200] [--json]

One op = PlaceHold(random wallet, 12 000) then CaptureHold(reference, 7 000), what a check-in
and a check-out cost the wallet. The benchmark starts its own user service process on an
isolated database, runs the op from `--concurrency` workers for `--duration` seconds, stops
the service, runs bench/sql/place_capture.sql in pgbench with as many clients for as long,
prints both and their ratio, checks the money invariants and removes what it created.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path

import psycopg
from grpc import aio
from tiket.user.v1 import user_pb2, user_pb2_grpc

from bench import common
from bench.common import Measured, Report, ServiceProcess, Workload
from libs.auth import Role
from libs.money import to_money
from services.user import store
from services.user.domain import MAX_BALANCE
from tests.support import keys

SCRIPT = Path(__file__).parent / "sql" / "place_capture.sql"
HOLD = to_money(Decimal(12_000))
FINAL = to_money(Decimal(7_000))
CALL_TIMEOUT = 10.0  # seconds; a call slower than this is an error, not a data point
SETUP_CONCURRENCY = 16
GOAL_RATIO = 40.0  # issue 18: >= 40 % of pgbench on the same SQL
KINDS = ("op", "PlaceHold", "CaptureHold")


@dataclass(frozen=True)
class Options:
    duration: int
    concurrency: int
    users: int
    pool_max: int
    workers: int
    warmup: float
    as_json: bool


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.holds", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--duration", type=int, default=15, help="seconds per run (default 15)")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="gRPC workers = pgbench clients (default 32)"
    )
    parser.add_argument("--users", type=int, default=200, help="wallets (default 200)")
    parser.add_argument(
        "--pool-max", type=int, help="service TIKET_DB_POOL_MAX (default: --concurrency)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="service processes (tiket serve --workers)"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds left out (default 2)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.duration <= args.warmup:
        parser.error("--duration must be longer than --warmup")
    return Options(
        duration=args.duration,
        concurrency=args.concurrency,
        users=args.users,
        pool_max=args.pool_max or max(2, args.concurrency // args.workers),
        workers=args.workers,
        warmup=args.warmup,
        as_json=args.json,
    )


# --- setup ------------------------------------------------------------------------------


async def create_wallets(
    stub: user_pb2_grpc.UserServiceStub, metadata: tuple[tuple[str, str], ...], count: int
) -> list[str]:
    """`count` users, each topped up to the largest balance a wallet may hold."""
    run = uuid.uuid4().hex[:8].upper()
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)
    ids: list[str] = []

    async def one(index: int) -> None:
        async with gate:
            user = await stub.CreateUser(
                user_pb2.CreateUserRequest(card_id=f"B{run}{index:06d}", full_name="Bench Rider"),
                metadata=metadata,
                timeout=CALL_TIMEOUT,
            )
            await stub.TopUp(
                user_pb2.TopUpRequest(
                    user_id=user.id, amount=to_money(MAX_BALANCE), idempotency_key="bench-init"
                ),
                metadata=metadata,
                timeout=CALL_TIMEOUT,
            )
        ids.append(user.id)
        common.progress("  wallets created and topped up:", len(ids), count)

    await asyncio.gather(*(one(i) for i in range(count)))
    return ids


async def load_bench_users(database_url: str, user_ids: Sequence[str]) -> None:
    """bench_users(n, id): pgbench picks a random wallet as a random n."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await conn.execute("CREATE TABLE bench_users (n serial PRIMARY KEY, id uuid NOT NULL)")
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO bench_users (id) VALUES (%s)", [(i,) for i in user_ids]
            )
        await conn.execute("ANALYZE")
        await conn.commit()


# --- the workload -------------------------------------------------------------------------


async def run_workload(
    stubs: Sequence[user_pb2_grpc.UserServiceStub],
    metadata: tuple[tuple[str, str], ...],
    user_ids: Sequence[str],
    options: Options,
    service_pid: int,
) -> Workload:
    work = Workload(KINDS)
    deadline = work.started + options.duration
    sources: dict[str, common.CpuSource] = {
        "service": common.ProcessTree(service_pid),
        "load generator": os.getpid(),
        "postgres": "postgres",
    }
    probe = asyncio.create_task(work.probe_cpu(sources, options.warmup, options.duration))
    run = uuid.uuid4().hex[:8]
    await asyncio.gather(
        *(
            _worker(stubs[n % len(stubs)], metadata, user_ids, deadline, work, f"bench-{run}-{n}")
            for n in range(options.concurrency)
        )
    )
    await probe
    return work


async def _worker(
    stub: user_pb2_grpc.UserServiceStub,
    metadata: tuple[tuple[str, str], ...],
    user_ids: Sequence[str],
    deadline: float,
    work: Workload,
    prefix: str,
) -> None:
    clock, rng, n = time.perf_counter, random.Random(prefix), 0
    op, place, capture = (work.samples[k] for k in ("op", "PlaceHold", "CaptureHold"))
    while (began := clock()) < deadline:
        n += 1
        reference = f"{prefix}-{n}"
        try:
            await stub.PlaceHold(
                user_pb2.PlaceHoldRequest(
                    user_id=rng.choice(user_ids), amount=HOLD, reference=reference
                ),
                metadata=metadata,
                timeout=CALL_TIMEOUT,
            )
        except aio.AioRpcError as exc:
            work.errors[f"PlaceHold {exc.code().name}"] += 1
            continue
        placed = clock()
        place.add(placed, placed - began)
        try:
            await stub.CaptureHold(
                user_pb2.CaptureHoldRequest(
                    hold=user_pb2.HoldSelector(reference=reference), final_amount=FINAL
                ),
                metadata=metadata,
                timeout=CALL_TIMEOUT,
            )
        except aio.AioRpcError as exc:
            work.errors[f"CaptureHold {exc.code().name}"] += 1
            continue
        done = clock()
        capture.add(done, done - placed)
        op.add(done, done - began)


# --- the run ------------------------------------------------------------------------------


async def benchmark(options: Options) -> Report:
    env = common.isolated_env(
        ["user"], TIKET_DB_POOL_MAX=str(options.pool_max), TIKET_WORKERS=str(options.workers)
    )
    service = ServiceProcess("user", env)
    settings = service.settings
    database_url = settings.database_url("user")
    # Holds are the journey service's to place and capture; wallets an operator's to open.
    metadata = (("authorization", f"Bearer {keys.token(settings, Role.SERVICE, 'journey')}"),)
    admin = (("authorization", f"Bearer {keys.token(settings, Role.ADMIN, 'bench')}"),)
    load_before = await common.machine_load()
    try:
        common.say(f"starting the user service on {service.address} (database {database_url}) …")
        await service.start()
        # A channel is one connection, and the kernel gives a connection to one worker
        # process: two channels per worker spread the load.
        channels = [aio.insecure_channel(service.address) for _ in range(2 * options.workers)]
        try:
            stubs = [user_pb2_grpc.UserServiceStub(channel) for channel in channels]
            user_ids = await create_wallets(stubs[0], admin, options.users)
            await common.settle_databases([database_url])
            common.say(f"gRPC: {options.concurrency} workers for {options.duration} s …")
            work = await run_workload(stubs, metadata, user_ids, options, service.pid)
        finally:
            await asyncio.gather(*(channel.close() for channel in channels))
        common.say("stopping the service (SIGTERM), so it takes no CPU from pgbench …")
        await service.stop()
        await load_bench_users(database_url, user_ids)
        await common.settle_databases([database_url])
        common.say(f"pgbench: {options.concurrency} clients for {options.duration} s …")
        pgbench = await common.run_pgbench(
            database_url,
            SCRIPT,
            clients=options.concurrency,
            duration=options.duration,
            warmup=options.warmup,
            variables={"users": len(user_ids)},
            cpu_sources={"pgbench": "pgbench", "postgres": "postgres"},
        )
        violations = await _violations(database_url)
    finally:
        await service.stop()
        service.close()
        await common.remove_run_state(settings, ["user"])
    grpc_figures = work.measure(options.warmup, options.duration)
    return Report(
        options, grpc_figures, dict(work.errors), work.cpu, pgbench, violations, load_before, "op"
    )


async def _violations(database_url: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        return await store.invariant_violations(conn)


# --- output -------------------------------------------------------------------------------


def render(report: Report) -> str:
    o, pg = report.options, report.pgbench
    headers = ("", "ops/s", "mean ms", "p50 ms", "p95 ms", "p99 ms", "max ms", "count")
    rows = [
        _row("gRPC op (PlaceHold + CaptureHold)", report.grpc["op"]),
        _row("  PlaceHold", report.grpc["PlaceHold"]),
        _row("  CaptureHold", report.grpc["CaptureHold"]),
        _row("pgbench place_capture.sql", pg.window),
    ]
    lines = [
        f"holds: {o.concurrency} workers / pgbench clients, {o.users} wallets, {o.duration} s "
        f"({o.warmup:g} s warm-up left out), {o.workers} service process(es), pool max "
        f"{o.pool_max} each",
        f"machine busy before the run: {report.load_before:.0f} % of all cores"
        + (
            " — other work was running; figures are not comparable"
            if report.load_before > 10
            else ""
        ),
        "",
        common.table(headers, rows),
        "",
        f"service / pgbench: {report.ratio:.1f} % "
        f"{common.goal(report.ratio >= GOAL_RATIO, f'{GOAL_RATIO:g} %')}",
        f"pgbench's own figures: tps {pg.tps:,.1f}, latency average {pg.latency_avg_ms:.2f} ms, "
        f"{pg.processed} transactions, {pg.failed} failed",
        f"errors: {_errors(report.errors)}",
        f"CPU, % of one core — gRPC run: {_cpu(report.service_cpu)}",
        f"CPU, % of one core — pgbench run: {_cpu(pg.cpu)}",
        _invariants(report.problems),
    ]
    return "\n".join(lines)


def _row(label: str, m: Measured) -> list[object]:
    s = m.latency
    return [label, m.rate, s.mean_ms, s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms, s.count]


def _errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{k} × {v}" for k, v in sorted(errors.items())) or "none"


def _cpu(shares: dict[str, float]) -> str:
    parts = [f"{k} {v:.0f}" for k, v in shares.items() if k not in {"machine", "iowait"}]
    return (
        ", ".join(parts)
        + f"; machine busy {shares.get('machine', 0):.0f} %, iowait {shares.get('iowait', 0):.0f} %"
        + " of all cores"
    )


def _invariants(violations: list[str]) -> str:
    if not violations:
        return "money invariants: OK"
    return "money invariants: BROKEN\n" + "\n".join(f"  {v}" for v in violations)


def as_json(report: Report) -> str:
    data = {
        "options": asdict(report.options),
        "grpc": {k: asdict(v) for k, v in report.grpc.items()},
        "errors": report.errors,
        "cpu_grpc_run": report.service_cpu,
        "pgbench": asdict(report.pgbench),
        "ratio_percent": report.ratio,
        "machine_busy_before_percent": report.load_before,
        "invariants_ok": not report.problems,
        "problems": report.problems,
    }
    return json.dumps(_finite(data), indent=2, default=str)


def _finite(value: object) -> object:
    """NaN (no samples) as null, so the output is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> None:
    common.run(
        "bench.holds", parse_args(argv), benchmark, render, as_json, lambda r: bool(r.problems)
    )


if __name__ == "__main__":
    main()
