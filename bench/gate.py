"""Tap decisions of gate agents (gate/agent.py), online and with the network cut, measured
against pgbench on the SQL of an online ride.

    .venv/bin/python -m bench.gate [--duration 10] [--lanes 2] [--riders 256] [--json]

Starts its own user, fare and journey processes on isolated databases, seeds seed 004's
terminals, gates and fares and `--riders` wallets, and runs four GateAgents in this process
(entries A-ENTRY-01 and B-ENTRY-01, exits D-BI-01 and E-EXIT-01, each with its own SQLite
file) that reach the journey service through a TCP proxy. `--lanes` riders at a time ride
through them (a check-in at a random entry, then a check-out at a random exit), each lane
with riders of its own: first online for `--duration` s (CheckIn/CheckOut within the
gate's deadline), then, the proxy refusing every connection, offline for as long (decided
from SQLite). A decision's latency is GateAgent.tap's: what the rider waits for. Then the
services stop, the money is audited, and bench/sql/taps.sql (the database work of one
online ride) runs in pgbench with `--lanes` clients for `--duration` s: online rides/s ÷
pgbench rides/s is the ratio. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from grpc import aio

from bench import common
from bench.common import Report, ServiceProcess, Workload
from bench.taps import (
    SCRIPT,
    as_json,
    audit_then_pgbench,
    create_riders,
    journey_databases,
    service_pids,
)
from gate.agent import GateAgent
from gate.config import GateConfig, OfflineRules
from libs.auth import Role
from services.fare import demo as fare_demo
from tests.support import keys
from tests.support.tcp_proxy import TcpProxy

SERVICES = ("user", "fare", "journey")
ENTRIES = (("A", "A-ENTRY-01"), ("B", "B-ENTRY-01"))
EXITS = (("D", "D-BI-01"), ("E", "E-EXIT-01"))
KINDS = ("online ride", "online", "fell back offline", "offline ride", "offline")
GOAL_MS = 300.0  # ARCHITECTURE.md "Targets": a tap decision < 300 ms, always
# The offline rules keep their checks but never refuse a rider here: a lane rides its few
# riders again and again within seconds, far past what a real cut would see of one card.
RULES = OfflineRules(max_offline_taps=1000, anti_passback=timedelta(0), max_trip=timedelta(0))
IDLE = 3600.0  # background jobs that would only add noise (uploads, refreshes, heartbeats)


@dataclass(frozen=True)
class Options:
    duration: int
    lanes: int
    riders: int
    deadline_ms: int
    warmup: float
    as_json: bool


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--duration", type=int, default=10, help="seconds per phase and pgbench (default 10)"
    )
    parser.add_argument(
        "--lanes",
        type=int,
        default=4,
        help="riders at the gates at once = pgbench clients (default 4)",
    )
    parser.add_argument("--riders", type=int, default=256, help="wallets (default 256)")
    parser.add_argument(
        "--deadline-ms", type=int, default=300, help="the gates' online deadline (default 300)"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds left out (default 2)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.duration <= args.warmup:
        parser.error("--duration must be longer than --warmup")
    if args.riders < args.lanes:
        parser.error("--riders must be at least --lanes (each lane rides its own riders)")
    return Options(
        duration=args.duration,
        lanes=args.lanes,
        riders=args.riders - args.riders % args.lanes,
        deadline_ms=args.deadline_ms,
        warmup=args.warmup,
        as_json=args.json,
    )


# --- the gates ----------------------------------------------------------------------------


def gate_config(
    terminal: str, gate: str, services, proxy: TcpProxy, state: Path, options: Options
) -> GateConfig:
    return GateConfig(
        terminal,
        gate,
        direction="entry" if "ENTRY" in gate else "exit",
        journey_addr=f"127.0.0.1:{proxy.port}",
        user_addr=services["user"].address,
        fare_addr=services["fare"].address,
        token=keys.token(services["journey"].settings, Role.GATE, f"{terminal}/{gate}"),
        db_path=str(state / f"{gate}.sqlite3"),
        deadline=options.deadline_ms / 1000,
        refresh_seconds=IDLE,
        fare_refresh_seconds=IDLE,
        sync_seconds=IDLE,
        heartbeat_seconds=IDLE,
        probe_seconds=0.5,
        rules=RULES,
    )


async def fresh_snapshots(agents: Sequence[GateAgent]) -> None:
    """Every agent's users and fares exported now (what its background jobs keep doing)."""
    for agent in agents:
        await agent.refresh_users()
        await agent.refresh_fares()


# --- the workload -------------------------------------------------------------------------


async def ride(
    entries: Sequence[GateAgent],
    exits: Sequence[GateAgent],
    riders: Sequence[str],
    phase: str,
    deadline: float,
    work: Workload,
    seed: int,
) -> None:
    """One lane: its riders in turn, in at a random entry and out at a random exit."""
    clock, rng = time.perf_counter, random.Random(seed)
    turn = 0
    while (began := clock()) < deadline:
        card = riders[turn % len(riders)]
        turn += 1
        as_phase = True  # both decisions made the phase's way (a ride may fall back)
        for agent, way in ((rng.choice(entries), "in"), (rng.choice(exits), "out")):
            sent = clock()
            decision = await agent.tap(card, way)
            done = clock()
            kind = phase if decision.mode == phase else "fell back offline"
            work.samples[kind].add(done, done - sent)
            as_phase = as_phase and kind == phase
            if not decision.open:
                work.errors[f"CLOSED {decision.mode} {decision.reason}"] += 1
                break
        else:
            if as_phase:
                work.samples[f"{phase} ride"].add(done, done - began)


async def phase(
    name: str, agents: dict[str, list[GateAgent]], cards: Sequence[str], options: Options, pids
) -> Workload:
    work = Workload(KINDS)
    deadline = work.started + options.duration
    sources: dict[str, common.CpuSource] = {**pids, "gates (this process)": os.getpid()}
    sources.update(postgres="postgres")
    probe = asyncio.create_task(work.probe_cpu(sources, options.warmup, options.duration))
    lanes = options.lanes
    await asyncio.gather(
        *(
            ride(agents["in"], agents["out"], cards[n::lanes], name, deadline, work, n)
            for n in range(lanes)
        )
    )
    await probe
    return work


# --- the run ------------------------------------------------------------------------------


async def benchmark(options: Options) -> Report:
    env = common.isolated_env(list(SERVICES))
    services = {name: ServiceProcess(name, env) for name in SERVICES}
    settings = services["journey"].settings
    admin = (("authorization", f"Bearer {keys.token(settings, Role.ADMIN, 'bench')}"),)
    load_before = await common.machine_load()
    proxy: TcpProxy | None = None
    agents: dict[str, list[GateAgent]] = {"in": [], "out": []}
    try:
        common.say("starting the user, fare and journey services …")
        await asyncio.gather(*(s.start() for s in services.values()))
        async with aio.insecure_channel(services["fare"].address) as channel:
            await fare_demo.load(channel, list(admin), lambda _: None)
        riders = await create_riders(services["user"].address, admin, options.riders)
        cards = [card for _, card in riders]
        host, port = services["journey"].address.rsplit(":", 1)
        proxy = TcpProxy(host, int(port))
        await proxy.start()
        with tempfile.TemporaryDirectory(prefix="bench-gate-") as state:
            for way, gates in (("in", ENTRIES), ("out", EXITS)):
                for terminal, gate in gates:
                    config = gate_config(terminal, gate, services, proxy, Path(state), options)
                    agent = GateAgent(config, settings)
                    await agent.start()
                    agents[way].append(agent)
            everyone = [*agents["in"], *agents["out"]]
            await fresh_snapshots(everyone)
            pids = service_pids(services)
            await common.settle_databases(journey_databases(settings))
            common.say(f"online: {options.lanes} lanes riding for {options.duration} s …")
            online = await phase("online", agents, cards, options, pids)
            await fresh_snapshots(everyone)  # what the online rides held, as the server says
            proxy.cut()
            common.say(f"offline (network cut): {options.lanes} lanes for {options.duration} s …")
            offline = await phase("offline", agents, cards, options, pids)
            for agent in everyone:
                await agent.stop()
            agents = {"in": [], "out": []}
        await proxy.stop()
        proxy = None
        variables = {"clients": options.lanes, "per": options.riders // options.lanes}
        problems, pgbench = await audit_then_pgbench(
            services, settings, riders, SCRIPT, options.lanes, options, variables
        )
    finally:
        for agent in [*agents["in"], *agents["out"]]:
            await agent.stop()
        if proxy is not None:
            await proxy.stop()
        await common.stop_and_remove(services, settings, SERVICES)
    online_figures = online.measure(options.warmup, options.duration)
    offline_figures = offline.measure(options.warmup, options.duration)
    figures = {k: online_figures[k] for k in ("online ride", "online", "fell back offline")}
    figures.update({k: offline_figures[k] for k in ("offline ride", "offline")})
    errors = online.errors + offline.errors
    cpu = {
        **{f"online: {k}": v for k, v in online.cpu.items()},
        **{f"offline: {k}": v for k, v in offline.cpu.items()},
    }
    return Report(
        options, figures, dict(errors), cpu, pgbench, problems, load_before, "online ride"
    )


# --- output -------------------------------------------------------------------------------


def render(report: Report) -> str:
    o, pg, g = report.options, report.pgbench, report.grpc
    labelled = [
        ("online decision (CheckIn/CheckOut)", g["online"]),
        ("  fell back offline (deadline)", g["fell back offline"]),
        ("online ride (2 decisions)", g["online ride"]),
        ("offline decision (SQLite)", g["offline"]),
        ("offline ride (2 decisions)", g["offline ride"]),
        ("pgbench taps.sql (one ride)", pg.window),
    ]
    worst = max(g["online"].latency.p99_ms, g["offline"].latency.p99_ms)
    return "\n".join(
        [
            f"gate: 4 gate agents, {o.lanes} lanes, {o.riders} riders, {o.duration} s per phase "
            f"({o.warmup:g} s warm-up left out); deadline {o.deadline_ms} ms",
            common.busy_line(report),
            "",
            common.latency_table(labelled),
            "",
            f"decisions/s: online {g['online'].rate:,.1f}, offline {g['offline'].rate:,.1f}; "
            f"p99 {worst:.1f} ms {common.goal(worst < GOAL_MS, f'< {GOAL_MS:g} ms')}",
            f"online rides / pgbench rides: {report.ratio:.1f} %",
            f"pgbench's own figures: tps {pg.tps:,.1f}, latency average "
            f"{pg.latency_avg_ms:.2f} ms, {pg.processed} rides, {pg.failed} failed",
            *common.footer(report),
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    common.run(
        "bench.gate", parse_args(argv), benchmark, render, as_json, lambda r: bool(r.problems)
    )


if __name__ == "__main__":
    main()
