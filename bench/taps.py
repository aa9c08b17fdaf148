"""Gate taps through the mesh (journey -> user, fare), measured against the same SQL in pgbench.

    .venv/bin/python -m bench.taps [--duration 15] [--gates 64] [--riders 512] [--json]

One ride = CheckIn at a random terminal's entry gate, then CheckOut at another terminal's
exit gate, each with the gate's own token: a hold of the maximum fare, then its capture.
The benchmark starts its own user, fare and journey processes on isolated databases, seeds
seed 004's terminals, gates and fares and `--riders` wallets, runs `--gates` simulated gates
(each riding its own riders, one ride at a time) for `--duration` seconds, stops the
services, checks that every rupiah adds up, then runs bench/sql/taps.sql — the database work
of one ride — in pgbench with as many clients for as long, prints both and their ratio, and
removes what it created. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg
from grpc import aio
from tiket.journey.v1 import journey_pb2, journey_pb2_grpc
from tiket.user.v1 import user_pb2, user_pb2_grpc

from bench import common
from bench.common import Report, ServiceProcess, Workload
from libs.auth import Role
from libs.money import to_money
from services.fare import demo as fare_demo
from services.journey.config import JourneyConfig
from services.journey.tests.audit import audit
from services.journey.tests.mesh import Mesh, settle
from services.user.domain import MAX_BALANCE
from tests.support import keys

SCRIPT = Path(__file__).parent / "sql" / "taps.sql"
JOURNEY_MIGRATIONS = Path(__file__).parent.parent / "services/journey/migrations"
SERVICES = ("user", "fare", "journey")
TERMINALS = "ABCDE"
CALL_TIMEOUT = 10.0
SETUP_CONCURRENCY = 16
CHANNELS = 8
GOAL_RATE = 1000.0  # check-ins/s through the mesh (ARCHITECTURE.md "Targets")
GOAL_RATIO = 40.0  # ARCHITECTURE.md "Targets", issue 18: >= 40 % of pgbench, same SQL
KINDS = ("ride", "CheckIn", "CheckOut")


@dataclass(frozen=True)
class Options:
    duration: int
    gates: int
    riders: int
    workers: dict[str, int]
    pool_max: int
    warmup: float
    active_trip_cache: bool
    as_json: bool
    rounds: int = 1


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.taps", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--duration", type=int, default=15, help="seconds per run (default 15)")
    parser.add_argument(
        "--gates", type=int, default=64, help="simulated gates = pgbench clients (default 64)"
    )
    parser.add_argument("--riders", type=int, default=512, help="wallets (default 512)")
    for name, default in (("journey", 1), ("user", 1), ("fare", 1)):
        parser.add_argument(
            f"--{name}-workers",
            type=int,
            default=default,
            help=f"{name} service processes (tiket serve --workers; default {default})",
        )
    parser.add_argument("--pool-max", type=int, default=16, help="TIKET_DB_POOL_MAX (default 16)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds left out (default 3)")
    parser.add_argument(
        "--no-active-trip-cache",
        action="store_true",
        help="TIKET_JOURNEY_ACTIVE_TRIP_CACHE=off (no Redis hint)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="whole runs one after the other, with their medians (default 1); this shared "
        "machine's speed drifts by ±10-20 %% between runs, so compare medians",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.duration <= args.warmup:
        parser.error("--duration must be longer than --warmup")
    if args.riders < args.gates:
        parser.error("--riders must be at least --gates (each gate rides its own riders)")
    return Options(
        duration=args.duration,
        gates=args.gates,
        riders=args.riders - args.riders % args.gates,
        workers={n: getattr(args, f"{n}_workers") for n in SERVICES},
        pool_max=args.pool_max,
        warmup=args.warmup,
        active_trip_cache=not args.no_active_trip_cache,
        as_json=args.json,
        rounds=args.rounds,
    )


# --- setup ------------------------------------------------------------------------------


async def create_riders(address: str, metadata, count: int) -> list[tuple[str, str]]:
    """(user id, card id) of `count` riders, each topped up to the largest balance."""
    run = uuid.uuid4().hex[:6].upper()
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)
    riders: list[tuple[str, str]] = []
    async with aio.insecure_channel(address) as channel:
        stub = user_pb2_grpc.UserServiceStub(channel)

        async def one(index: int) -> None:
            card = f"T{run}{index:06d}"
            async with gate:
                user = await stub.CreateUser(
                    user_pb2.CreateUserRequest(card_id=card, full_name="Bench Rider"),
                    metadata=metadata,
                    timeout=CALL_TIMEOUT,
                )
                await stub.TopUp(
                    user_pb2.TopUpRequest(
                        user_id=user.id, amount=to_money(MAX_BALANCE), idempotency_key="bench"
                    ),
                    metadata=metadata,
                    timeout=CALL_TIMEOUT,
                )
            riders.append((user.id, card))
            common.progress("  riders created and topped up:", len(riders), count)

        await asyncio.gather(*(one(i) for i in range(count)))
    return riders


def gate_code(terminal: str, kind: str) -> str:
    """Seed 004's gates: D has one bidirectional gate, the others an entry and an exit."""
    return "D-BI-01" if terminal == "D" else f"{terminal}-{kind}-01"


async def prepare_pgbench(database_url: str, riders: Sequence[tuple[str, str]]) -> None:
    """The journey schema beside the user schema, and bench_users(n, id, card_id)."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for migration in sorted(JOURNEY_MIGRATIONS.glob("*.sql")):
            await conn.execute(migration.read_text())
        await conn.execute(
            "CREATE TABLE bench_users (n serial PRIMARY KEY, id uuid NOT NULL, card_id text)"
        )
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO bench_users (id, card_id) VALUES (%s, %s)", list(riders)
            )
        await conn.execute("ANALYZE")


# --- the workload -------------------------------------------------------------------------


async def run_workload(
    address: str, settings, riders: Sequence[tuple[str, str]], options: Options, pids
) -> Workload:
    work = Workload(KINDS)
    deadline = work.started + options.duration
    sources: dict[str, common.CpuSource] = {**pids, "load generator": os.getpid()}
    sources.update(postgres="postgres", rabbitmq="beam.smp", redis="redis-server")
    probe = asyncio.create_task(work.probe_cpu(sources, options.warmup, options.duration))
    tokens = {
        gate_code(t, k): keys.token(settings, Role.GATE, f"{t}/{gate_code(t, k)}")
        for t in TERMINALS
        for k in ("ENTRY", "EXIT")
    }
    # Several connections, so the kernel spreads them over the journey workers (one HTTP/2
    # connection reaches only one of them). Channels with equal arguments would share one
    # connection: each gets an argument of its own.
    channels = [
        aio.insecure_channel(address, options=[("grpc.primary_user_agent", f"bench-gate-{n}")])
        for n in range(CHANNELS)
    ]
    stubs = [journey_pb2_grpc.JourneyServiceStub(c) for c in channels]
    try:
        await asyncio.gather(
            *(
                _gate(stubs[n % CHANNELS], tokens, riders[n :: options.gates], deadline, work, n)
                for n in range(options.gates)
            )
        )
    finally:
        for channel in channels:
            await channel.close()
    await probe
    return work


async def _gate(stub, tokens, riders, deadline: float, work: Workload, seed: int) -> None:
    clock, rng = time.perf_counter, random.Random(seed)
    ride, check_in, check_out = (work.samples[k] for k in KINDS)
    turn = 0
    while (began := clock()) < deadline:
        _, card = riders[turn % len(riders)]
        turn += 1
        origin, destination = rng.sample(TERMINALS, 2)
        entry, exit_ = gate_code(origin, "ENTRY"), gate_code(destination, "EXIT")
        try:
            await stub.CheckIn(
                journey_pb2.CheckInRequest(
                    card_id=card, terminal_code=origin, gate_code=entry, tap_id=str(uuid.uuid4())
                ),
                metadata=(("authorization", f"Bearer {tokens[entry]}"),),
                timeout=CALL_TIMEOUT,
            )
            entered = clock()
            check_in.add(entered, entered - began)
            await stub.CheckOut(
                journey_pb2.CheckOutRequest(
                    card_id=card,
                    terminal_code=destination,
                    gate_code=exit_,
                    tap_id=str(uuid.uuid4()),
                ),
                metadata=(("authorization", f"Bearer {tokens[exit_]}"),),
                timeout=CALL_TIMEOUT,
            )
        except aio.AioRpcError as exc:
            work.errors[f"{exc.code().name}: {(exc.details() or '')[:60]}"] += 1
            continue
        done = clock()
        check_out.add(done, done - entered)
        ride.add(done, done - began)


# --- the run ------------------------------------------------------------------------------


async def benchmark(options: Options) -> Report:
    env = common.isolated_env(
        list(SERVICES),
        TIKET_DB_POOL_MAX=str(options.pool_max),
        TIKET_JOURNEY_ACTIVE_TRIP_CACHE="on" if options.active_trip_cache else "off",
    )
    services = {
        name: ServiceProcess(name, {**env, "TIKET_WORKERS": str(options.workers[name])})
        for name in SERVICES
    }
    settings = services["journey"].settings
    admin = (("authorization", f"Bearer {keys.token(settings, Role.ADMIN, 'bench')}"),)
    load_before = await common.machine_load()
    try:
        common.say("starting the user, fare and journey services …")
        await asyncio.gather(*(s.start() for s in services.values()))
        async with aio.insecure_channel(services["fare"].address) as channel:
            await fare_demo.load(channel, list(admin), lambda _: None)
        riders = await create_riders(services["user"].address, admin, options.riders)
        pids = service_pids(services)
        await common.settle_databases(journey_databases(settings))
        common.say(f"gRPC: {options.gates} gates riding for {options.duration} s …")
        work = await run_workload(services["journey"].address, settings, riders, options, pids)
        variables = {"clients": options.gates, "per": options.riders // options.gates}
        problems, pgbench = await audit_then_pgbench(
            services, settings, riders, SCRIPT, options.gates, options, variables
        )
    finally:
        await common.stop_and_remove(services, settings, SERVICES)
    figures = work.measure(options.warmup, options.duration)
    return Report(
        options, figures, dict(work.errors), work.cpu, pgbench, problems, load_before, "ride"
    )


def service_pids(services: dict[str, ServiceProcess]) -> dict[str, int]:
    """Each service's processes (its workers too), named for the CPU figures."""
    return {
        f"{name}{'#' + str(i) if i else ''}": pid
        for name, service in services.items()
        for i, pid in enumerate(common.process_tree(service.pid))
    }


def journey_databases(settings) -> list[str]:
    return [settings.database_url(name) for name in ("user", "journey")]


async def audit_then_pgbench(
    services: dict[str, ServiceProcess],
    settings,
    riders: Sequence[tuple[str, str]],
    script: Path,
    clients: int,
    options,
    variables: dict[str, int],
) -> tuple[list[str], common.PgbenchResult]:
    """After a gRPC run: what deadlines cut short finished by a sweeper, as the service's
    own would in time (a capture the wallet made but whose answer came too late is settled,
    not reported as money gone), the services stopped (so they take no CPU from pgbench),
    the money audited, then `script` in pgbench on the user database beside the journey
    schema."""
    await settle(Mesh(settings, {}, {}, JourneyConfig()))
    common.say("stopping the services (SIGTERM), so they take no CPU from pgbench …")
    for service in services.values():
        await service.stop()
    problems = await audit(settings.database_url("user"), settings.database_url("journey"))
    await prepare_pgbench(settings.database_url("user"), riders)
    await common.settle_databases(journey_databases(settings))
    common.say(f"pgbench: {clients} clients for {options.duration} s …")
    pgbench = await common.run_pgbench(
        settings.database_url("user"),
        script,
        clients=clients,
        duration=options.duration,
        warmup=options.warmup,
        variables=variables,
        cpu_sources={"pgbench": "pgbench", "postgres": "postgres"},
    )
    return problems, pgbench


# --- output -------------------------------------------------------------------------------


def render(report: Report) -> str:
    o, pg, g = report.options, report.pgbench, report.grpc
    labelled = [
        ("ride (CheckIn + CheckOut)", g["ride"]),
        ("  CheckIn", g["CheckIn"]),
        ("  CheckOut", g["CheckOut"]),
        ("pgbench taps.sql (one ride)", pg.window),
    ]
    check_ins = g["CheckIn"].rate
    lines = [
        f"taps: {o.gates} gates / pgbench clients, {o.riders} riders, {o.duration} s "
        f"({o.warmup:g} s warm-up left out); processes: {o.workers}; pool max {o.pool_max}; "
        f"active_trip cache {'on' if o.active_trip_cache else 'off'}",
        common.busy_line(report),
        "",
        common.latency_table(labelled),
        "",
        f"taps/s {check_ins + g['CheckOut'].rate:,.1f}; check-ins/s {check_ins:,.1f} "
        f"{common.goal(check_ins >= GOAL_RATE, f'{GOAL_RATE:,.0f}')}",
        f"mesh / pgbench: {report.ratio:.1f} % "
        f"{common.goal(report.ratio >= GOAL_RATIO, f'{GOAL_RATIO:g} %')}",
        f"pgbench's own figures: tps {pg.tps:,.1f}, latency average {pg.latency_avg_ms:.2f} ms, "
        f"{pg.processed} rides, {pg.failed} failed",
        *common.footer(report),
    ]
    return "\n".join(lines)


def as_json(report: Report) -> str:
    data = {
        "options": asdict(report.options),
        "grpc": {k: asdict(v) for k, v in report.grpc.items()},
        "errors": report.errors,
        "cpu_grpc_run": report.service_cpu,
        "pgbench": asdict(report.pgbench),
        "ratio_percent": report.ratio,
        "machine_busy_before_percent": report.load_before,
        "audit_ok": not report.problems,
        "problems": report.problems,
    }
    # NaN (no samples) becomes null, so the output is strict JSON.
    lenient = json.dumps(data, default=str)
    return json.dumps(json.loads(lenient, parse_constant=lambda _: None), indent=2)


def main(argv: Sequence[str] | None = None) -> None:
    common.run_rounds("bench.taps", parse_args(argv), benchmark, render, as_json, "rides/s")


if __name__ == "__main__":
    main()
