"""Facility booking through the booking service's FacilityService: availability search and the
utilization report on a facility of 10,000 bookings, and BookFacility measured against the
same SQL in pgbench.

    .venv/bin/python -m bench.facility [--duration 8] [--concurrency 16] [--json]

The benchmark starts its own booking service on an isolated database, creates the facilities
over gRPC (with their opening hours), inserts `--bookings` confirmed, non-overlapping bookings
of one facility by SQL over the past and future months, and measures:
1. SearchFacilityAvailability for a day and for a week, and GetFacilityUtilizationReport over
   30 days, from one caller;
2. BookFacility from `--concurrency` workers on random free ranges of `--facilities`
   facilities, then on the same few hours of one facility (mostly TIME_CONFLICT refusals);
then stops the service and runs BOOK — the one statement BookFacility sends (services/booking/
facilities/store.py), as a pgbench script written from it — on facilities of its own with the
same draws, as many clients, for as long. It prints the figures, the ratios to pgbench, CPU
use, and the seed's conflict query (exit code 1 unless it counts 0), and removes what it
created. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import psycopg
from grpc import aio
from tiket.booking.v1 import facility_pb2 as pb
from tiket.booking.v1 import facility_pb2_grpc

from bench import common
from bench.common import Measured, PgbenchResult, ServiceProcess, Workload
from libs.auth import Role
from services.booking.facilities.store import BOOK
from services.booking.tests.facility_support import ALL_DAY, CONFLICTS, window
from services.booking.tests.stack import stamp
from tests.support import keys

# BOOK's parameters as pgbench expressions: ids made from one random number per transaction
# (:rid), the facility and its version (updated_at) looked up in bench_facilities (:n), the
# range drawn as the gRPC workers draw it, and the texts — the request's, and the audit row's
# and the event's JSON as the service wrote them in this run (-D, bound per execution as the
# service binds them, so the server parses as much JSON).
PGBENCH_PARAMS = {
    "booking_id": "md5('booking' || :rid)::uuid",
    "facility_id": "(SELECT id FROM bench_facilities WHERE n = :n)",
    "version": "(SELECT version FROM bench_facilities WHERE n = :n)",
    "user_id": "md5('user' || :rid)::uuid",
    "start_time": "to_timestamp(:start)",
    "end_time": "to_timestamp(:finish)",
    "title": ":title",
    "description": ":description",
    "attendee_count": "5",
    "external_meeting_url": ":url",
    "status": "'confirmed'",
    "request_id": "'pgbench-' || :rid",
    "created_by": ":created_by",
    "series_id": "NULL",
    "audit_booking_id": "md5('booking' || :rid)::uuid",
    "audit_action": "'created'",
    "audit_old": "NULL",
    "audit_new": ":audit_new::jsonb",
    "audit_changed_by": ":created_by",
    "audit_user_agent": ":user_agent",
    "audit_ip_address": ":ip_address",
    "audit_request_id": ":audit_request_id",
    "es_event_id": "md5('event' || :rid)::uuid",
    "es_aggregate_id": "md5('booking' || :rid)::uuid",
    "es_aggregate_type": "'facility_booking'",
    "es_event_type": "'FacilityBookingCreated'",
    "es_payload": ":payload::jsonb",
    "es_metadata": ":metadata::jsonb",
    "event_id": "md5('event' || :rid)::uuid",
    "event_type": "'facility.booking_created'",
    "event_body": ":body::jsonb",
    "event_traceparent": ":traceparent",
}
# The draws of bench/facility.py's Draw, as pgbench meta-commands (-D first, last, base, days,
# qfirst, qlast).
DRAWS = r"""\set n random(:first, :last)
\set rid random(1, 9223372036854775806)
\set start :base + 86400 * random(0, :days - 1) + 900 * random(:qfirst, :qlast)
\set finish :start + 900 * random(1, 4)
"""
# The texts of a booking the service made in this run, for pgbench's -D.
WRITTEN = """
SELECT a.new_values::text AS audit_new, a.user_agent, host(a.ip_address) AS ip_address,
       a.request_id AS audit_request_id, e.payload::text AS payload,
       e.metadata::text AS metadata, o.body::text AS body, o.traceparent
  FROM event_store e
  JOIN outbox o ON o.event_id = e.event_id
  JOIN facility_booking_audit_log a ON a.booking_id = e.aggregate_id AND a.action = 'created'
 WHERE e.event_type = 'FacilityBookingCreated' LIMIT 1
"""
SERVICES = ("booking",)
CALL_TIMEOUT = 10.0
SETUP_CONCURRENCY = 16
TIME_ZONE = "Asia/Jakarta"
# The searched facility's hours: weekdays 06:00-22:00, weekends 08:00-20:00 (local).
SEED_HOURS = {day: ((6, 0), (22, 0)) for day in range(1, 6)} | {
    day: ((8, 0), (20, 0)) for day in (6, 7)
}
SEED_SPAN_DAYS = 270  # bookings from this many days back to as many ahead
BOOK_DAYS = 365  # distinct run: days to pick from (the service takes up to two years ahead)
DAY_QUARTERS = (0, 91)  # distinct run: a range starts 00:00..22:45 and ends by midnight
HOT_QUARTERS = (36, 51)  # contended run: every range starts 09:00..12:45 of one day
SEARCH_WARMUP = 0.5
GOAL_WEEK_P99_MS = 10.0
GOAL_UTILIZATION_P99_MS = 50.0
GRPC = "BookFacility"
# The texts of every booking, in the gRPC requests and in pgbench's (-D) alike.
TEXTS = {
    "title": "Bench meeting",
    "description": "load test",
    "url": "https://meet.example.com/bench",
}
READS = ("search day", "search week", "utilization 30 days")
LABELS = {"distinct": "random free ranges", "hot": "one contended facility"}
HEADERS = ("", "per s", "mean ms", "p50 ms", "p95 ms", "p99 ms", "max ms", "count")
QUIET = {True: "", False: " — other work was running; figures are not comparable"}
SEED = """
INSERT INTO facility_bookings (facility_id, user_id, start_time, end_time, title,
                               attendee_count, status, request_id, created_by)
SELECT %(facility)s, gen_random_uuid(), s, e, 'Seeded meeting', 4, 'confirmed',
       'seed-' || n, 'admin:bench-seed'
  FROM unnest(%(starts)s::timestamptz[], %(ends)s::timestamptz[]) WITH ORDINALITY AS r(s, e, n)
"""


@dataclass(frozen=True)
class Options:
    duration: int
    concurrency: int
    facilities: int
    bookings: int
    search_seconds: float
    pool_max: int
    warmup: float
    as_json: bool


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.facility", description=__doc__.split("\n\n")[0]
    )
    common.add_load_options(parser, duration=8, concurrency=16, run="BookFacility run")
    parser.add_argument(
        "--facilities", type=int, default=50, help="facilities of the distinct run (50)"
    )
    parser.add_argument(
        "--bookings", type=int, default=10_000, help="bookings of the searched facility (10000)"
    )
    parser.add_argument(
        "--search-seconds", type=float, default=4.0, help="s per search / report run (4)"
    )
    args = parser.parse_args(argv)
    common.check_load_options(parser, args)
    if args.search_seconds <= SEARCH_WARMUP:
        parser.error(f"--search-seconds must be longer than {SEARCH_WARMUP:g}")
    if args.facilities < 1 or not 0 < args.bookings <= 20_000:
        parser.error("--facilities must be at least 1 and --bookings 1..20000")
    return Options(
        duration=args.duration,
        concurrency=args.concurrency,
        facilities=args.facilities,
        bookings=args.bookings,
        search_seconds=args.search_seconds,
        pool_max=args.pool_max or max(2, args.concurrency),
        warmup=args.warmup,
        as_json=args.json,
    )


# --- setup ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Draw:
    """How a booking's range is drawn, alike in the gRPC workers and in pgbench: a facility of
    `facilities`, a day of `days` from `base` (local midnight), a start quarter hour of the day
    in `quarters`, 1..4 quarter hours long."""

    facilities: list[str]
    base: datetime
    days: int
    quarters: tuple[int, int]

    def pick(self, rng: random.Random) -> tuple[str, datetime, datetime]:
        start = self.base + timedelta(
            days=rng.randrange(self.days), minutes=15 * rng.randint(*self.quarters)
        )
        return rng.choice(self.facilities), start, start + timedelta(minutes=15 * rng.randint(1, 4))

    def variables(self, first: int) -> dict[str, object]:
        """pgbench's -D variables, the facilities being bench_facilities first..first+N-1."""
        return {
            "first": first,
            "last": first + len(self.facilities) - 1,
            "base": int(self.base.timestamp()),
            "days": self.days,
            "qfirst": self.quarters[0],
            "qlast": self.quarters[1],
            **TEXTS,
            "created_by": "operator:bench",
        }


@dataclass(frozen=True)
class Catalogue:
    searched: str  # the facility of `--bookings` bookings
    grpc: dict[str, Draw]  # "distinct", "hot"
    pgbench: dict[str, Draw]  # the same, on facilities of their own
    reads: dict[str, Callable[[], object]]  # READS -> the request


async def create_catalogue(
    stub: facility_pb2_grpc.FacilityServiceStub, admin, options: Options
) -> Catalogue:
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def facility(name: str, hours: list[pb.OpeningWindow]) -> str:
        async with gate:
            made = await stub.CreateFacility(
                pb.CreateFacilityRequest(
                    name=name, location="Bench floor", capacity=20, time_zone=TIME_ZONE
                ),
                metadata=admin,
                timeout=CALL_TIMEOUT,
            )
            await stub.SetFacilityHours(
                pb.SetFacilityHoursRequest(facility_id=made.facility_id, hours=hours),
                metadata=admin,
                timeout=CALL_TIMEOUT,
            )
        return made.facility_id

    seed_hours = [window(day, *hours) for day, hours in SEED_HOURS.items()]
    n = options.facilities
    made = await asyncio.gather(
        facility("Bench searched room", seed_hours),
        *(facility(f"Bench room {i}", ALL_DAY) for i in range(2 * n + 2)),
    )
    searched, rooms = made[0], made[1:]
    zone = ZoneInfo(TIME_ZONE)
    today = datetime.now(zone).date()
    first = _midnight(today + timedelta(days=2), zone)

    def draws(distinct: list[str], hot: str) -> dict[str, Draw]:
        return {
            "distinct": Draw(distinct, first, BOOK_DAYS, DAY_QUARTERS),
            "hot": Draw([hot], first, 1, HOT_QUARTERS),
        }

    monday = _midnight(today + timedelta(days=7 - today.weekday()), zone)
    month = _midnight(today - timedelta(days=15), zone)
    return Catalogue(
        searched=searched,
        grpc=draws(rooms[:n], rooms[2 * n]),
        pgbench=draws(rooms[n : 2 * n], rooms[2 * n + 1]),
        reads={
            "search day": lambda: _search(searched, monday + timedelta(days=1), 1),
            "search week": lambda: _search(searched, monday, 7),
            "utilization 30 days": lambda: pb.GetFacilityUtilizationReportRequest(
                facility_id=searched,
                from_time=stamp(month),
                to_time=stamp(month + timedelta(days=30)),
            ),
        },
    )


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def _search(facility_id: str, start: datetime, days: int) -> pb.SearchFacilityAvailabilityRequest:
    return pb.SearchFacilityAvailabilityRequest(
        facility_id=facility_id, from_time=stamp(start), to_time=stamp(start + timedelta(days=days))
    )


def seed_ranges(count: int, rng: random.Random) -> list[tuple[datetime, datetime]]:
    """`count` non-overlapping ranges of 1..2 quarter hours inside SEED_HOURS, on days from
    SEED_SPAN_DAYS back to as many ahead (local), drawn at random."""
    zone = ZoneInfo(TIME_ZONE)
    today = datetime.now(zone).date()
    days = [today + timedelta(days=d) for d in range(-SEED_SPAN_DAYS, SEED_SPAN_DAYS)]
    taken: set[tuple[date, int]] = set()
    ranges: list[tuple[datetime, datetime]] = []
    while len(ranges) < count:
        day = rng.choice(days)
        (oh, om), (ch, cm) = SEED_HOURS[day.isoweekday()]
        length = rng.randint(1, 2)
        start = rng.randrange((oh * 60 + om) // 15, (ch * 60 + cm) // 15 - length + 1)
        wanted = {(day, q) for q in range(start, start + length)}
        if wanted & taken:
            continue
        taken |= wanted
        begin = datetime(day.year, day.month, day.day, tzinfo=zone) + timedelta(minutes=15 * start)
        ranges.append((begin, begin + timedelta(minutes=15 * length)))
    return ranges


async def seed(database_url: str, catalogue: Catalogue, count: int) -> None:
    """The searched facility's bookings, by SQL, and bench_facilities(n, id, version) for
    pgbench: its contended facility as n = 0, its distinct ones as 1..N, each with its
    updated_at (BOOK's version)."""
    ranges = seed_ranges(count, random.Random(15))
    rows = [(0, catalogue.pgbench["hot"].facilities[0])]
    rows += [(n, f) for n, f in enumerate(catalogue.pgbench["distinct"].facilities, 1)]
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await conn.execute(
            SEED,
            {
                "facility": catalogue.searched,
                "starts": [s for s, _ in ranges],
                "ends": [e for _, e in ranges],
            },
        )
        await conn.execute(
            "CREATE TABLE bench_facilities (n integer PRIMARY KEY, id uuid, version timestamptz)"
        )
        async with conn.cursor() as cur:
            await cur.executemany(
                """INSERT INTO bench_facilities (n, id, version)
                   SELECT %s, facility_id, updated_at FROM facilities WHERE facility_id = %s""",
                rows,
            )


# --- the workloads --------------------------------------------------------------------------


async def run_reads(stub, catalogue: Catalogue, admin, seconds: float, sources):
    """Each read of READS from one caller for `seconds`: its figures, CPU, and the size of an
    answer (free windows, or report days)."""
    calls = {
        "search day": stub.SearchFacilityAvailability,
        "search week": stub.SearchFacilityAvailability,
        "utilization 30 days": stub.GetFacilityUtilizationReport,
    }
    measured: dict[str, Measured] = {}
    cpu: dict[str, dict[str, float]] = {}
    sizes: dict[str, int] = {}
    for kind in READS:
        common.say(f"{kind}: one caller for {seconds:g} s …")
        request = catalogue.reads[kind]()
        work = Workload((kind,))
        deadline = work.started + seconds
        probe = asyncio.create_task(work.probe_cpu(sources, SEARCH_WARMUP, seconds))
        clock, samples = time.perf_counter, work.samples[kind]
        while (began := clock()) < deadline:
            answer = await calls[kind](request, metadata=admin, timeout=CALL_TIMEOUT)
            done = clock()
            samples.add(done, done - began)
        await probe
        measured[kind] = work.measure(SEARCH_WARMUP, seconds)[kind]
        cpu[kind] = work.cpu
        sizes[kind] = len(answer.windows if hasattr(answer, "windows") else answer.days)
    return measured, cpu, sizes


async def run_book(stub, draw: Draw, operator, options: Options, sources) -> Workload:
    """BookFacility of drawn ranges from `options.concurrency` workers; "booked" and
    "refused" (TIME_CONFLICT) are both answers."""
    work = Workload(("booked", "refused"))
    deadline = work.started + options.duration
    probe = asyncio.create_task(work.probe_cpu(sources, options.warmup, options.duration))
    run = uuid.uuid4().hex[:8]
    await asyncio.gather(
        *(
            _booker(stub, draw, operator, deadline, work, f"bench-{run}-{n}")
            for n in range(options.concurrency)
        )
    )
    await probe
    return work


async def _booker(stub, draw: Draw, operator, deadline: float, work: Workload, prefix: str):
    clock, rng, n = time.perf_counter, random.Random(prefix), 0
    while (began := clock()) < deadline:
        n += 1
        facility_id, start, end = draw.pick(rng)
        request = pb.BookFacilityRequest(
            facility_id=facility_id,
            user_id=str(uuid.uuid4()),
            start_time=stamp(start),
            end_time=stamp(end),
            title=TEXTS["title"],
            description=TEXTS["description"],
            attendee_count=5,
            external_meeting_url=TEXTS["url"],
            request_id=f"{prefix}-{n}",
        )
        kind = "booked"
        try:
            await stub.BookFacility(request, metadata=operator, timeout=CALL_TIMEOUT)
        except aio.AioRpcError as exc:
            details = exc.details() or ""
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION or "overlaps" not in details:
                work.errors[f"{GRPC} {exc.code().name}: {details[:60]}"] += 1
                continue
            kind = "refused"
        done = clock()
        work.samples[kind].add(done, done - began)


async def written_texts(database_url: str) -> dict[str, str]:
    """The texts of a booking the service made in this run (WRITTEN), as pgbench's -D
    variables; a missing one (no traceparent) is bound as NULL by the script instead."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        await cur.execute(WRITTEN)
        found = await cur.fetchone()
    if found is None:
        raise RuntimeError("the service made no booking whose texts pgbench could copy")
    return {name: text for name, text in found.items() if text is not None}


def write_script(folder: str, defined: Collection[str]) -> Path:
    """The pgbench script: DRAWS, then BOOK with PGBENCH_PARAMS, those that are a variable
    not `defined` (-D) as NULL."""
    params = {
        name: "NULL" if expression.startswith(":") and _variable(expression) not in defined
        else expression
        for name, expression in PGBENCH_PARAMS.items()
    }  # fmt: skip
    path = Path(folder) / "book_facility.sql"
    path.write_text(f"{DRAWS}{BOOK % params};\n")
    return path


def _variable(expression: str) -> str:
    return expression[1:].split("::")[0]


async def made_by_pgbench(database_url: str, draw: Draw) -> int:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            """SELECT count(*) FROM facility_bookings
                WHERE facility_id = ANY(%s::uuid[]) AND request_id LIKE 'pgbench-%%'""",
            (draw.facilities,),
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def conflict_count(database_url: str) -> int:
    """The seed's conflict query: pairs of bookings of one facility holding time that
    overlap."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        row = await (await conn.execute(CONFLICTS)).fetchone()
    return int(row[0]) if row else 0


# --- the run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BookRun:
    grpc: Measured  # answers, booked or refused
    booked: int  # in the whole run
    refused: int
    errors: dict[str, int]
    cpu: dict[str, float]
    pgbench: PgbenchResult
    pgbench_booked: int  # rows written in the whole run

    @property
    def ratio(self) -> float:
        baseline = self.pgbench.window.rate
        return 100 * self.grpc.rate / baseline if baseline else float("nan")


@dataclass
class FacilityReport:
    options: Options
    reads: dict[str, Measured] = field(default_factory=dict)
    read_cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    answer_sizes: dict[str, int] = field(default_factory=dict)
    book: dict[str, BookRun] = field(default_factory=dict)
    conflicts: dict[str, int] = field(default_factory=dict)  # after which phase -> count
    load_before: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.conflicts) and not any(self.conflicts.values())


async def benchmark(options: Options) -> FacilityReport:
    env = common.isolated_env(SERVICES, TIKET_DB_POOL_MAX=str(options.pool_max))
    service = ServiceProcess("booking", env)
    settings = service.settings
    database_url = settings.database_url("booking")
    report = FacilityReport(options, load_before=await common.machine_load())
    try:
        common.say(f"starting the booking service (database {database_url}) …")
        await service.start()
        catalogue, grpc_runs = await service_phases(service, options, report)
        common.say("stopping the service (SIGTERM), so it takes no CPU from pgbench …")
        await service.stop()
        texts = await written_texts(database_url)
        with tempfile.TemporaryDirectory(prefix="bench-facility-") as folder:
            script = write_script(folder, {*texts, *catalogue.pgbench["hot"].variables(0)})
            for name in ("distinct", "hot"):
                draw = catalogue.pgbench[name]
                await common.settle_databases([database_url])
                common.say(f"pgbench, {LABELS[name]}: {options.concurrency} clients for "
                           f"{options.duration} s …")  # fmt: skip
                result = await common.run_pgbench(
                    database_url,
                    script,
                    clients=options.concurrency,
                    duration=options.duration,
                    warmup=options.warmup,
                    variables={**draw.variables(0 if name == "hot" else 1), **texts},
                    cpu_sources={"pgbench": "pgbench", "postgres": "postgres"},
                )
                report.book[name] = BookRun(
                    pgbench=result, pgbench_booked=await made_by_pgbench(database_url, draw),
                    **grpc_runs[name],
                )  # fmt: skip
        report.conflicts["pgbench"] = await conflict_count(database_url)
    finally:
        await service.stop()
        service.close()
        await common.remove_run_state(settings, list(SERVICES))
    return report


async def service_phases(service: ServiceProcess, options: Options, report: FacilityReport):
    database_url = service.settings.database_url("booking")
    sources = {
        "service": common.ProcessTree(service.pid),
        "load generator": os.getpid(),
        "postgres": "postgres",
    }
    admin = tuple(keys.bearer(service.settings, Role.ADMIN, "bench"))
    operator = tuple(keys.bearer(service.settings, Role.OPERATOR, "bench"))
    runs: dict[str, dict[str, object]] = {}
    async with aio.insecure_channel(service.address) as channel:
        stub = facility_pb2_grpc.FacilityServiceStub(channel)
        catalogue = await create_catalogue(stub, admin, options)
        common.say(f"seeding {options.bookings:,} bookings of the searched facility by SQL …")
        await seed(database_url, catalogue, options.bookings)
        await common.settle_databases([database_url])
        report.reads, report.read_cpu, report.answer_sizes = await run_reads(
            stub, catalogue, admin, options.search_seconds, sources
        )
        for name in ("distinct", "hot"):
            await common.settle_databases([database_url])
            common.say(f"{GRPC}, {LABELS[name]}: {options.concurrency} workers for "
                       f"{options.duration} s …")  # fmt: skip
            work = await run_book(stub, catalogue.grpc[name], operator, options, sources)
            answers = common.Samples()
            for kind in ("booked", "refused"):
                for end, lat in zip(
                    *(getattr(work.samples[kind], f) for f in ("ends", "latencies")), strict=True
                ):
                    answers.add(end, lat)
            runs[name] = {
                "grpc": answers.measure(
                    work.started + options.warmup, work.started + options.duration
                ),
                "booked": len(work.samples["booked"].ends),
                "refused": len(work.samples["refused"].ends),
                "errors": dict(work.errors),
                "cpu": work.cpu,
            }
        report.conflicts["gRPC"] = await conflict_count(database_url)
    return catalogue, runs


# --- output -------------------------------------------------------------------------------------


def render(report: FacilityReport) -> str:
    o = report.options
    labelled = [
        (f"{kind} ({report.answer_sizes[kind]} rows)", report.reads[kind]) for kind in READS
    ]
    for name, run in report.book.items():
        labelled += [
            (f"{GRPC}, {LABELS[name]}", run.grpc),
            ("pgbench BOOK, same", run.pgbench.window),
        ]
    stats = ("mean_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms", "count")
    rows = [[label, m.rate, *(getattr(m.latency, f) for f in stats)] for label, m in labelled]
    week = report.reads["search week"].latency.p99_ms
    util = report.reads["utilization 30 days"].latency.p99_ms
    lines = [
        f"facility: reads from one caller, {o.search_seconds:g} s each, on a facility of "
        f"{o.bookings:,} bookings; {GRPC}: {o.concurrency} workers / pgbench clients, "
        f"{o.duration} s per run ({o.warmup:g} s warm-up left out), {o.facilities} facilities "
        f"in the distinct run, pool max {o.pool_max}",
        f"machine busy before the run: {report.load_before:.0f} % of all cores"
        f"{QUIET[report.load_before <= 10]}",
        "",
        common.table(HEADERS, rows),
        "",
        f"search week p99 {week:.1f} ms "
        f"{common.goal(week < GOAL_WEEK_P99_MS, f'< {GOAL_WEEK_P99_MS:g} ms')}; "
        f"utilization 30 days p99 {util:.1f} ms "
        f"{common.goal(util < GOAL_UTILIZATION_P99_MS, f'< {GOAL_UTILIZATION_P99_MS:g} ms')}",
        *(
            f"{GRPC} / pgbench, {LABELS[name]}: {run.ratio:.1f} % (answers/s ÷ transactions/s); "
            f"gRPC {run.booked:,} booked, {run.refused:,} refused (TIME_CONFLICT); pgbench "
            f"{run.pgbench_booked:,} booked, {run.pgbench.processed - run.pgbench_booked:,} "
            f"refused (no row), {run.pgbench.failed} failed; pgbench tps "
            f"{run.pgbench.tps:,.1f}, latency average {run.pgbench.latency_avg_ms:.2f} ms"
            for name, run in report.book.items()
        ),
        "errors: "
        + (
            ", ".join(
                f"{k} × {v}" for run in report.book.values() for k, v in sorted(run.errors.items())
            )
            or "none"
        ),
        "CPU, % of one core (machine and iowait: % of all cores)",
        *(f"  {kind}: {_shares(report.read_cpu[kind])}" for kind in READS),
        *(
            f"  {LABELS[name]}, {side}: {_shares(shares)}"
            for name, run in report.book.items()
            for side, shares in (("gRPC", run.cpu), ("pgbench", run.pgbench.cpu))
        ),
        "conflict query (overlapping pairs of confirmed/pending bookings): "
        + ", ".join(f"after {phase} {count}" for phase, count in report.conflicts.items())
        + (" — OK" if report.ok else " — BROKEN"),
    ]
    return "\n".join(lines)


def _shares(shares: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f}" for k, v in shares.items())


def as_json(report: FacilityReport) -> str:
    data = {
        "options": asdict(report.options),
        "reads": {k: asdict(v) for k, v in report.reads.items()},
        "read_cpu": report.read_cpu,
        "answer_sizes": report.answer_sizes,
        "book": {
            name: {**asdict(run), "ratio_percent": run.ratio} for name, run in report.book.items()
        },
        "conflicts": report.conflicts,
        "machine_busy_before_percent": report.load_before,
        "ok": report.ok,
    }
    return json.dumps(data, indent=2, default=str).replace("NaN", "null")  # strict JSON


def main(argv: Sequence[str] | None = None) -> None:
    common.run("bench.facility", parse_args(argv), benchmark, render, as_json, lambda r: not r.ok)


if __name__ == "__main__":
    main()
