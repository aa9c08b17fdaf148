"""Helpers shared by the benchmarks in bench/: latency figures over a measurement window, a
plain-text table, a service started as its own process on an isolated database, CPU use read
from /proc, pgbench runs with their per-transaction logs, and clean-up of what a run made."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import grpc
import psycopg
import uvloop

from cli import health
from libs.config import Settings, load
from tests.support import keys
from tests.support.cleanup import remove_run
from tests.support.processes import free_ports

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- latency and throughput -----------------------------------------------------------


@dataclass(frozen=True)
class LatencyStats:
    count: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class Measured:
    """Operations completed inside a measurement window: their rate and latencies."""

    rate: float  # per second
    latency: LatencyStats


@dataclass
class Samples:
    """Completed operations of one kind: when each ended and how long it took (seconds,
    on one clock)."""

    ends: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def add(self, end: float, latency: float) -> None:
        self.ends.append(end)
        self.latencies.append(latency)

    def measure(self, start: float, stop: float) -> Measured:
        """Figures of the operations that ended in [start, stop): warm-up and stragglers
        stay out, and the rate is their count over the window's length."""
        inside = [
            lat for end, lat in zip(self.ends, self.latencies, strict=True) if start <= end < stop
        ]
        return Measured(len(inside) / (stop - start), summarize(inside))


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending sequence; NaN when empty."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(seconds: Iterable[float]) -> LatencyStats:
    ordered = sorted(seconds)
    if not ordered:
        return LatencyStats(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    ms = [s * 1000 for s in ordered]
    return LatencyStats(
        count=len(ms),
        mean_ms=sum(ms) / len(ms),
        p50_ms=percentile(ms, 50),
        p95_ms=percentile(ms, 95),
        p99_ms=percentile(ms, 99),
        max_ms=ms[-1],
    )


# --- command line -----------------------------------------------------------------------


def add_load_options(
    parser: argparse.ArgumentParser, *, duration: int, concurrency: int, run: str = "run"
) -> None:
    """The options of a load benchmark: --duration, --concurrency, --pool-max, --warmup and
    --json (checked by check_load_options)."""
    parser.add_argument(
        "--duration", type=int, default=duration, help=f"seconds per {run} (default {duration})"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=concurrency,
        help=f"gRPC workers = pgbench clients (default {concurrency})",
    )
    parser.add_argument("--pool-max", type=int, help="TIKET_DB_POOL_MAX (default: --concurrency)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds left out (default 2)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def check_load_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.duration <= args.warmup:
        parser.error("--duration must be longer than --warmup")


# --- output ---------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned;
    floats with one decimal."""
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        first, *rest = values
        parts = [first.ljust(widths[0])] + [
            v.rjust(w) for v, w in zip(rest, widths[1:], strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *map(line, cells)])


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:,.1f}"
    return str(value)


def say(message: str, *, end: str = "\n") -> None:
    """Progress for the person watching, on stderr (stdout carries the results)."""
    print(message, end=end, file=sys.stderr, flush=True)


def progress(label: str, done: int, total: int) -> None:
    """A counter that rewrites its own line on a terminal."""
    if sys.stderr.isatty():
        say(f"\r{label} {done}/{total}", end="\n" if done == total else "")
    elif done == total:
        say(f"{label} {done}/{total}")


# --- an isolated service process -------------------------------------------------------


def isolated_env(services: Sequence[str], **overrides: str) -> dict[str, str]:
    """TIKET_* variables that keep a benchmark run apart from everything else on the
    servers: its own database prefix, exchange, Redis prefix and free ports."""
    run = uuid.uuid4().hex[:8]
    env = {
        "TIKET_ENV": "test",
        **keys.key_env(),
        "TIKET_DB_PREFIX": f"tiket_bench_{run}_",
        "TIKET_EVENTS_EXCHANGE": f"tiket.events.bench.{run}",
        "TIKET_REDIS_PREFIX": f"bench{run}:",
        "TIKET_GRACE_SECONDS": "2",
    }
    ports = iter(free_ports(2 * len(services)))
    for name in services:
        env[f"TIKET_{name.upper()}_PORT"] = str(next(ports))
        env[f"TIKET_{name.upper()}_METRICS_PORT"] = str(next(ports))
    env.update(overrides)
    return env


class ServiceProcess:
    """`python -m cli.main serve NAME`, the real service, in its own process; its log goes
    to a temporary file (shown when it fails to start)."""

    def __init__(
        self, name: str, env: Mapping[str, str], command: Sequence[str] | None = None
    ) -> None:
        """`command`: the Python arguments to run instead of `-m cli.main serve NAME` (a
        baseline server listening on NAME's port and answering grpc.health)."""
        self.name = name
        self.command = list(command or ("-m", "cli.main", "serve", name))
        self.env = {**os.environ, **env}
        self.settings = load(self.env)
        self.address = f"127.0.0.1:{self.settings.grpc_ports[name]}"
        fd, path = tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")
        os.close(fd)
        self.log_path = Path(path)
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    async def start(self, timeout: float = 60.0) -> None:
        """Start it and return once its health check says SERVING."""
        with self.log_path.open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                *self.command,
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=log,
                start_new_session=True,  # Ctrl-C reaches the benchmark, which stops it in order
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.returncode is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self._process.returncode}:\n{self.log_tail()}"
                )
            if await health.check(self.address) == "SERVING":
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} did not report SERVING within {timeout:.0f} s")

    async def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait for the drain, SIGKILL when it takes too long; safe to repeat."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            return await process.wait()

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        """Remove the log file (after stop())."""
        self.log_path.unlink(missing_ok=True)


# --- CPU use ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessTree:
    """A process and its children (a service and its worker processes)."""

    pid: int


# What to account CPU to: a pid alone, a process tree, or a command name (every process of
# that name, e.g. postgres).
CpuSource = int | ProcessTree | str


@dataclass(frozen=True)
class CpuSnapshot:
    at: float
    used: dict[str, float]  # label -> CPU seconds so far
    machine_busy: int  # clock ticks, all cores
    machine_iowait: int
    machine_total: int


def cpu_snapshot(sources: Mapping[str, CpuSource]) -> CpuSnapshot:
    by_name = _cpu_by_command()
    used = {label: _cpu_of(source, by_name) for label, source in sources.items()}
    busy, iowait, total = _machine_ticks()
    return CpuSnapshot(time.monotonic(), used, busy, iowait, total)


def cpu_percent(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """Per label, percent of one core used between the snapshots; "machine" is the busy
    share of all cores and "iowait" the share idle while waiting for the disk (fsync).
    (Processes that ended in between are not counted.)"""
    wall = after.at - before.at
    shares = {
        label: 100 * (after.used[label] - before.used.get(label, 0.0)) / wall
        for label in after.used
    }
    total = after.machine_total - before.machine_total
    if total:
        shares["machine"] = 100 * (after.machine_busy - before.machine_busy) / total
        shares["iowait"] = 100 * (after.machine_iowait - before.machine_iowait) / total
    return shares


async def machine_load(seconds: float = 1.0) -> float:
    """Busy share (%) of all cores over the next `seconds`: what else runs on the machine
    before a benchmark starts (figures taken under load are not comparable)."""
    before = cpu_snapshot({})
    await asyncio.sleep(seconds)
    return cpu_percent(before, cpu_snapshot({}))["machine"]


def _stat_times(stat: str) -> tuple[str, float]:
    """(command, user + system CPU seconds) from a /proc/<pid>/stat line."""
    command = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return command, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _cpu_of(source: CpuSource, by_name: Mapping[str, float]) -> float:
    if isinstance(source, str):
        return by_name.get(source, 0.0)
    if isinstance(source, ProcessTree):
        return sum(_cpu_of_pid(pid) for pid in process_tree(source.pid))
    return _cpu_of_pid(source)


def _cpu_of_pid(pid: int) -> float:
    try:
        return _stat_times(Path(f"/proc/{pid}/stat").read_text())[1]
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def process_tree(pid: int) -> list[int]:
    """`pid` and the processes it started (a service's workers: tiket serve --workers)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return [pid]
    return [pid, *(int(child) for child in children)]


def _cpu_by_command() -> dict[str, float]:
    totals: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError):
            command, seconds = _stat_times((entry / "stat").read_text())
            totals[command] = totals.get(command, 0.0) + seconds
    return totals


def _machine_ticks() -> tuple[int, int, int]:
    """(busy, iowait, total) clock ticks of all cores since boot."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in first[:8]]  # user nice system idle iowait irq softirq steal
    return sum(ticks) - ticks[3] - ticks[4], ticks[4], sum(ticks)


# --- pgbench ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PgbenchResult:
    tps: float  # as pgbench reports it: whole run, without connection time
    latency_avg_ms: float
    processed: int
    failed: int
    window: Measured  # from the per-transaction log, warm-up left out
    cpu: dict[str, float]


async def settle_databases(database_urls: Sequence[str]) -> None:
    """VACUUM ANALYZE each database, then CHECKPOINT, so that a measured phase starts from the
    same state as the one it is compared with: no autovacuum of the previous phase's dead
    rows running beside it, and no checkpoint (with the full-page writes after it) falling
    into it by chance. Without this, pgbench on the same script varied by ±20 % between runs."""
    say("settling the databases (VACUUM ANALYZE, CHECKPOINT) …")
    for url in database_urls:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("VACUUM ANALYZE")
    async with await psycopg.AsyncConnection.connect(database_urls[0], autocommit=True) as conn:
        await conn.execute("CHECKPOINT")


async def run_pgbench(
    database_url: str,
    script: Path,
    *,
    clients: int,
    duration: int,
    warmup: float,
    variables: Mapping[str, object] | None = None,
    jobs: int | None = None,
    cpu_sources: Mapping[str, CpuSource] | None = None,
) -> PgbenchResult:
    """Run `script` with -M prepared and a per-transaction log; figures of the window
    [first start + warmup, first start + duration) come from that log, so they are defined
    as the service's are. CPU is sampled over about the same window."""
    jobs = jobs or min(clients, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="bench-pgbench-") as logs:
        args = [
            "pgbench", "--no-vacuum", "--protocol=prepared", f"--file={script}",
            f"--client={clients}", f"--jobs={jobs}", f"--time={duration}",
            "--log", f"--log-prefix={logs}/tx",
            *(f"--define={k}={v}" for k, v in (variables or {}).items()),
            database_url,
        ]  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        cpu = await _sample_cpu(cpu_sources or {}, warmup, duration)
        out, err = await process.communicate()
        text = out.decode() + err.decode()
        if process.returncode != 0:
            raise RuntimeError(f"pgbench exited with {process.returncode}:\n{text[-2000:]}")
        samples = read_pgbench_log(Path(logs))
    if not samples.ends:
        raise RuntimeError(f"pgbench logged no successful transaction:\n{text[-2000:]}")
    first = min(end - lat for end, lat in zip(samples.ends, samples.latencies, strict=True))
    return PgbenchResult(
        tps=_number(r"tps = ([\d.]+) \(without initial connection time\)", text),
        latency_avg_ms=_number(r"latency average = ([\d.]+) ms", text),
        processed=int(_number(r"number of transactions actually processed: (\d+)", text)),
        failed=int(_number(r"number of failed transactions: (\d+)", text, default=0)),
        window=samples.measure(first + warmup, first + duration),
        cpu=cpu,
    )


async def _sample_cpu(
    sources: Mapping[str, CpuSource], warmup: float, duration: float
) -> dict[str, float]:
    await asyncio.sleep(warmup)
    before = cpu_snapshot(sources)
    await asyncio.sleep(max(0.1, duration - warmup - 0.2))
    return cpu_percent(before, cpu_snapshot(sources))


def read_pgbench_log(directory: Path) -> Samples:
    """Transactions of pgbench's --log files (one per thread): completion time (epoch s)
    and latency (s). Lines of failed or skipped transactions are left out."""
    samples = Samples()
    for path in sorted(directory.iterdir()):
        for line in path.read_text().splitlines():
            # client_id transaction_no time script_no time_epoch time_us [...]
            parts = line.split()
            if len(parts) < 6 or not parts[2].isdigit():
                continue
            samples.add(int(parts[4]) + int(parts[5]) / 1e6, int(parts[2]) / 1e6)
    return samples


def _number(pattern: str, text: str, default: float | None = None) -> float:
    match = re.search(pattern, text)
    if match:
        return float(match.group(1))
    if default is None:
        raise RuntimeError(f"pgbench output lacks /{pattern}/:\n{text[-2000:]}")
    return default


# --- clean-up ------------------------------------------------------------------------------


async def remove_run_state(settings: Settings, services: Sequence[str]) -> None:
    """Drop the run's databases, delete its exchange and its Redis keys."""
    assert settings.db_prefix.startswith("tiket_bench_"), "refusing to drop non-benchmark data"
    assert settings.redis_prefix.startswith("bench"), "refusing to delete non-benchmark keys"
    await remove_run(settings, services)


@dataclass
class Workload:
    """What a benchmark's load workers recorded, on the perf_counter clock: latency samples
    per kind of operation, errors by name, and CPU use over the measured window."""

    kinds: tuple[str, ...]
    started: float = field(default_factory=time.perf_counter)
    samples: dict[str, Samples] = field(init=False)
    errors: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.samples = {kind: Samples() for kind in self.kinds}

    async def probe_cpu(
        self, sources: Mapping[str, CpuSource], warmup: float, duration: float
    ) -> None:
        """CPU use over the measurement window (after the warm-up)."""
        await asyncio.sleep(warmup)
        before = cpu_snapshot(sources)
        await asyncio.sleep(duration - warmup)
        self.cpu = cpu_percent(before, cpu_snapshot(sources))

    def measure(self, warmup: float, duration: float) -> dict[str, Measured]:
        start, stop = self.started + warmup, self.started + duration
        return {kind: self.samples[kind].measure(start, stop) for kind in self.kinds}


@dataclass(frozen=True)
class Report:
    """One benchmark run: the gRPC figures by kind, and the pgbench baseline of the same SQL."""

    options: Any
    grpc: dict[str, Measured]
    errors: dict[str, int]
    service_cpu: dict[str, float]
    pgbench: PgbenchResult
    problems: list[str]  # broken invariants found after the run
    load_before: float  # % of all cores busy before the run started
    headline: str  # the kind compared with pgbench

    @property
    def ratio(self) -> float:
        """The headline's rate as a percentage of pgbench's on the same SQL."""
        baseline = self.pgbench.window.rate
        return 100 * self.grpc[self.headline].rate / baseline if baseline else math.nan


LATENCY_HEADERS = ("", "per s", "mean ms", "p50 ms", "p95 ms", "p99 ms", "max ms", "count")


def latency_table(labelled: Sequence[tuple[str, Measured]]) -> str:
    """Rate and latency figures of each (label, measured), as a table."""
    stats = ("mean_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms", "count")
    rows = [[label, m.rate, *(getattr(m.latency, f) for f in stats)] for label, m in labelled]
    return table(LATENCY_HEADERS, rows)


def goal(met: bool, target: str) -> str:
    """How a figure compares with its target: "(meets the goal of …)" or "(misses …)"."""
    return f"({'meets' if met else 'misses'} the goal of {target})"


def busy_line(report: Report) -> str:
    busy = report.load_before
    return f"machine busy before the run: {busy:.0f} % of all cores" + (
        " — other work was running; figures are not comparable" if busy > 10 else ""
    )


def footer(report: Report) -> list[str]:
    """The closing lines of a report: errors, CPU of both runs, the money audit."""
    errors = ", ".join(f"{k} × {v}" for k, v in sorted(report.errors.items()))
    return [
        f"errors: {errors or 'none'}",
        "CPU, % of one core (machine and iowait: % of all cores)",
        "  gRPC run:    " + ", ".join(f"{k} {v:.0f}" for k, v in report.service_cpu.items()),
        "  pgbench run: " + ", ".join(f"{k} {v:.0f}" for k, v in report.pgbench.cpu.items()),
        *relative_cpu(report.service_cpu),
        "money audit: OK"
        if not report.problems
        else "money audit: BROKEN\n" + "\n".join(f"  {p}" for p in report.problems[:20]),
    ]


# Not processes of the mesh: the yardstick itself and the machine-wide figures.
NOT_RELATIVE = frozenset({"postgres", "machine", "iowait"})


def relative_cpu(cpu: Mapping[str, float]) -> list[str]:
    """Each process's CPU ÷ PostgreSQL's over the same window: PostgreSQL runs the same SQL
    per operation whatever the code above it does, so these ratios follow a change in the
    services without the ±15 % this machine's speed drifts by between runs (compare them,
    not rates, when measuring a change of a few per cent)."""
    postgres = cpu.get("postgres", 0.0)
    if postgres <= 0:
        return []
    shares = [f"{k} {v / postgres:.2f}" for k, v in cpu.items() if k not in NOT_RELATIVE]
    return ["  ÷ PostgreSQL's (gRPC run): " + ", ".join(shares)]


async def stop_and_remove(
    services: Mapping[str, ServiceProcess], settings: Settings, names: Sequence[str]
) -> None:
    """Stop every service of a run, then drop what the run made."""
    for service in services.values():
        await service.stop()
        service.close()
    await remove_run_state(settings, list(names))


def rounds_summary(reports: Sequence[Report], unit: str) -> str:
    """Each round's headline rate, pgbench's rate and their ratio, then the medians."""
    rows = [
        [f"round {n}", r.grpc[r.headline].rate, r.pgbench.window.rate, r.ratio]
        for n, r in enumerate(reports, 1)
    ]
    rows.append(
        [
            "median",
            statistics.median(r.grpc[r.headline].rate for r in reports),
            statistics.median(r.pgbench.window.rate for r in reports),
            statistics.median(r.ratio for r in reports),
        ]
    )
    return table(("", f"service {unit}", f"pgbench {unit}", "ratio %"), rows)


def json_array(documents: Iterable[str]) -> str:
    """Several JSON documents as one JSON array."""
    return json.dumps([json.loads(d) for d in documents], indent=2)


R = TypeVar("R")
# What stops a benchmark short: a service that would not start or answer, a database error.
RUN_FAILURES = (RuntimeError, OSError, grpc.RpcError, psycopg.Error)


def run(
    prog: str,
    options: Any,
    benchmark: Callable[[Any], Awaitable[R]],
    render: Callable[[R], str],
    as_json: Callable[[R], str],
    failed: Callable[[R], bool],
) -> NoReturn:
    """A benchmark's `main`: run it once, print its report (JSON with --json) and exit 1 when
    `failed(report)` (a broken audit, errors); a run that cannot finish exits with one line
    naming the benchmark and why."""
    try:
        report = uvloop.run(benchmark(options))
    except RUN_FAILURES as exc:
        sys.exit(f"{prog}: {exc}")
    print(as_json(report) if options.as_json else render(report))
    sys.exit(1 if failed(report) else 0)


def run_rounds(
    prog: str,
    options: Any,
    benchmark: Callable[[Any], Awaitable[Report]],
    render: Callable[[Report], str],
    as_json: Callable[[Report], str],
    unit: str,
) -> NoReturn:
    """`run` for benchmarks with --rounds: every round's report, then (several rounds) each
    round's rate and pgbench's with the medians; exit 1 when any round's audit broke."""
    reports: list[Report] = []
    try:
        for round_ in range(1, options.rounds + 1):
            if options.rounds > 1:
                say(f"round {round_} of {options.rounds}")
            reports.append(uvloop.run(benchmark(options)))
    except RUN_FAILURES as exc:
        sys.exit(f"{prog}: {exc}")
    if options.as_json:
        print(as_json(reports[0]) if len(reports) == 1 else json_array(map(as_json, reports)))
    else:
        print("\n\n".join(render(report) for report in reports))
        if len(reports) > 1:
            print("\n" + rounds_summary(reports, unit))
    sys.exit(1 if any(report.problems for report in reports) else 0)
