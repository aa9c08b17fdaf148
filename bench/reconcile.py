"""Reconciliation throughput: offline taps through SyncOfflineTaps, measured against the same
SQL in pgbench.

    .venv/bin/python -m bench.reconcile [--duration 30] [--gates 4] [--batch 50] [--json]

Each simulated gate owns `--batch` riders and repeats one round: a batch of their offline
check-ins at its entry gate, then a batch of their offline check-outs at another terminal's
exit, each tap the only new one of its card in its batch — every check-out completes a
journey started offline, charged directly (a journey started offline has no hold). The
benchmark starts its own user, fare and journey processes on isolated databases, seeds seed
004's terminals, gates and fares, runs the gates for `--duration` seconds, stops the
services, checks that every rupiah adds up, then runs bench/sql/reconcile.sql — the database
work of one ride reconciled — in pgbench for as long, prints both and their ratio (rides/s),
and removes what it created. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from grpc import aio
from tiket.journey.v1 import journey_pb2, journey_pb2_grpc

from bench import common
from bench.common import Report, ServiceProcess, Workload
from bench.taps import (
    as_json,
    audit_then_pgbench,
    create_riders,
    gate_code,
    journey_databases,
    service_pids,
)
from libs.auth import Role
from services.fare import demo as fare_demo
from tests.support import keys

SCRIPT = Path(__file__).parent / "sql" / "reconcile.sql"
SERVICES = ("user", "fare", "journey")
TERMINALS = "ABCDE"
CALL_TIMEOUT = 60.0
KINDS = ("ride", "tap", "batch")
# A check-out is tapped this long after its check-in (both offline, uploaded at once).
RIDE = timedelta(milliseconds=1)


@dataclass(frozen=True)
class Options:
    duration: int
    gates: int
    batch: int
    pgbench_clients: int
    warmup: float
    as_json: bool
    rounds: int = 1


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.reconcile", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--duration", type=int, default=30, help="seconds per run (default 30)")
    parser.add_argument("--gates", type=int, default=4, help="gates syncing at once (default 4)")
    parser.add_argument(
        "--batch", type=int, default=50, help="taps per SyncOfflineTaps, 1-500 (default 50)"
    )
    parser.add_argument(
        "--pgbench-clients", type=int, default=16, help="pgbench clients (default 16)"
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds left out (default 5)")
    parser.add_argument("--rounds", type=int, default=1, help="whole runs, with medians")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.batch <= 500:
        parser.error("--batch must be 1 to 500")
    if args.duration <= args.warmup:
        parser.error("--duration must be longer than --warmup")
    return Options(
        args.duration,
        args.gates,
        args.batch,
        args.pgbench_clients,
        args.warmup,
        args.json,
        max(1, args.rounds),
    )


# --- the workload -------------------------------------------------------------------------


def batch_of(terminal: str, gate: str, cards: Sequence[str], kind: int, at: datetime):
    request = journey_pb2.SyncOfflineTapsRequest(terminal_code=terminal, gate_code=gate)
    for card in cards:
        tap = request.taps.add(tap_id=str(uuid.uuid4()), card_id=card, direction=kind)
        tap.tapped_at.FromDatetime(at)
    return request


async def _gate(stub, settings, cards: Sequence[str], n: int, deadline: float, work: Workload):
    clock = time.perf_counter
    origin, destination = TERMINALS[n % 5], TERMINALS[(n + 2) % 5]
    entry, exit_ = gate_code(origin, "ENTRY"), gate_code(destination, "EXIT")
    tokens = {
        g: (("authorization", f"Bearer {keys.token(settings, Role.GATE, f'{t}/{g}')}"),)
        for t, g in ((origin, entry), (destination, exit_))
    }
    while (began := clock()) < deadline:
        at = datetime.now(UTC)
        try:
            latencies = []
            for terminal, gate, kind, when in (
                (origin, entry, journey_pb2.TAP_DIRECTION_CHECK_IN, at),
                (destination, exit_, journey_pb2.TAP_DIRECTION_CHECK_OUT, at + RIDE),
            ):
                sent = clock()
                answer = await stub.SyncOfflineTaps(
                    batch_of(terminal, gate, cards, kind, when),
                    metadata=tokens[gate],
                    timeout=CALL_TIMEOUT,
                )
                done = clock()
                latencies.append(done - sent)
                work.samples["batch"].add(done, done - sent)
                for _ in answer.results:
                    work.samples["tap"].add(done, (done - sent) / len(cards))
                bad = [
                    r.reason for r in answer.results if r.outcome != journey_pb2.TAP_OUTCOME_APPLIED
                ]
                for reason in bad:
                    work.errors[f"not applied: {reason[:60]}"] += 1
        except aio.AioRpcError as exc:
            work.errors[f"{exc.code().name}: {(exc.details() or '')[:60]}"] += 1
            continue
        for _ in cards:
            work.samples["ride"].add(done, done - began)


async def run_workload(address: str, settings, cards: Sequence[str], options: Options, pids):
    work = Workload(KINDS)
    deadline = work.started + options.duration
    sources: dict[str, common.CpuSource] = {**pids, "load generator": os.getpid()}
    sources.update(postgres="postgres")
    probe = asyncio.create_task(work.probe_cpu(sources, options.warmup, options.duration))
    async with aio.insecure_channel(address) as channel:
        stub = journey_pb2_grpc.JourneyServiceStub(channel)
        per = options.batch
        await asyncio.gather(
            *(
                _gate(stub, settings, cards[n * per : (n + 1) * per], n, deadline, work)
                for n in range(options.gates)
            )
        )
    await probe
    return work


# --- the run ------------------------------------------------------------------------------


async def benchmark(options: Options) -> Report:
    env = common.isolated_env(list(SERVICES), TIKET_SWEEP_INTERVAL_SECONDS="3600")
    services = {name: ServiceProcess(name, env) for name in SERVICES}
    settings = services["journey"].settings
    admin = (("authorization", f"Bearer {keys.token(settings, Role.ADMIN, 'bench')}"),)
    load_before = await common.machine_load()
    try:
        common.say("starting the user, fare and journey services …")
        await asyncio.gather(*(s.start() for s in services.values()))
        async with aio.insecure_channel(services["fare"].address) as channel:
            await fare_demo.load(channel, list(admin), lambda _: None)
        riders = await create_riders(services["user"].address, admin, options.gates * options.batch)
        pids = service_pids(services)
        await common.settle_databases(journey_databases(settings))
        common.say(
            f"gRPC: {options.gates} gates syncing batches of {options.batch} taps for "
            f"{options.duration} s …"
        )
        cards = [card for _, card in riders]
        work = await run_workload(services["journey"].address, settings, cards, options, pids)
        clients = options.pgbench_clients
        variables = {"clients": clients, "per": max(1, len(riders) // clients)}
        problems, pgbench = await audit_then_pgbench(
            services, settings, riders, SCRIPT, clients, options, variables
        )
    finally:
        await common.stop_and_remove(services, settings, SERVICES)
    figures = work.measure(options.warmup, options.duration)
    return Report(
        options, figures, dict(work.errors), work.cpu, pgbench, problems, load_before, "ride"
    )


# --- output -------------------------------------------------------------------------------


def render(report: Report) -> str:
    o, pg, g = report.options, report.pgbench, report.grpc
    labelled = [
        (f"SyncOfflineTaps batch ({o.batch} taps)", g["batch"]),
        ("ride reconciled (2 taps)", g["ride"]),
        ("pgbench reconcile.sql (one ride)", pg.window),
    ]
    return "\n".join(
        [
            f"reconcile: {o.gates} gates × batches of {o.batch} taps, {o.duration} s "
            f"({o.warmup:g} s warm-up left out); pgbench clients {o.pgbench_clients}",
            common.busy_line(report),
            "",
            common.latency_table(labelled),
            "",
            f"taps/s through SyncOfflineTaps: {g['tap'].rate:,.1f}; rides/s {g['ride'].rate:,.1f}",
            f"mesh / pgbench (rides/s): {report.ratio:.1f} %",
            f"pgbench's own figures: tps {pg.tps:,.1f}, latency average "
            f"{pg.latency_avg_ms:.2f} ms, {pg.processed} rides, {pg.failed} failed",
            *common.footer(report),
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    common.run_rounds("bench.reconcile", parse_args(argv), benchmark, render, as_json, "rides/s")


if __name__ == "__main__":
    main()
