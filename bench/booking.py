"""Clinic reservations and slot search through the booking service, measured against the same
SQL in pgbench, and the reservation sweeper's pace.

    .venv/bin/python -m bench.booking [--duration 8] [--concurrency 32] [--expire 50000] [--json]

The benchmark starts its own user and booking service processes on isolated databases (the
measured RPCs never call the user service: pets are asked at Confirm only), creates
`--clinics` clinics with two weeks of 30-minute slots each and one hot slot, and measures:
1. SearchAvailableSlots from one caller, cached (Redis) and uncached (the searched days'
   entries deleted before each call);
2. ReserveSlot from `--concurrency` workers on random slots of many, then all on the hot slot;
then stops the service, runs bench/sql/reserve.sql — RESERVE, ReserveSlot's one statement —
in pgbench on the same two targets with as many clients for as long, moves every pending
reservation (at least `--expire`) past its expiry and times the sweeper
(ReservationApp.expire_due) until none is left. It prints the figures, the ratios to pgbench,
CPU use, and the places audit after every phase (exit code 1 when it fails), and removes what
it created. See bench/README.md.
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
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import redis.asyncio as redis
from google.type import dayofweek_pb2, timeofday_pb2
from grpc import aio
from tiket.booking.v1 import booking_pb2 as pb
from tiket.booking.v1 import booking_pb2_grpc

from bench import common
from bench.common import (
    LatencyStats,
    Measured,
    PgbenchResult,
    Report,
    ServiceProcess,
    Workload,
)
from libs.auth import Role
from libs.config import Settings
from libs.money import to_money
from services.booking import reservation_store
from services.booking.api import MAX_CAPACITY
from services.booking.availability import day_key
from services.booking.tests.stack import Stack, audit, calendar, replica, stamp
from tests.support import keys

SCRIPT = Path(__file__).parent / "sql" / "reserve.sql"
SERVICES = ("user", "booking")
CALL_TIMEOUT = 10.0
SETUP_CONCURRENCY = 16
TIME_ZONE = "Asia/Jakarta"
DAYS = 14  # of slots per clinic, from the day after tomorrow (local)
OPENING = (8, 16)  # local hours of each day's window: 16 slots of 30 minutes
HOT_CAPACITY = 1_000_000  # set by SQL: the API takes at most MAX_CAPACITY
SEARCH_WARMUP = 0.5  # seconds of each search run left out
GOAL_RATIO = 40.0  # ARCHITECTURE.md "Targets": ReserveSlot >= 40 % of pgbench on the same SQL
GOAL_SEARCH_P95_MS = 15.0
GOAL_EXPIRED_PER_MINUTE = 10_000.0
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
GRPC = "ReserveSlot"
LABELS = {"distinct": "random slots", "hot": "one hot slot"}
HEADERS = ("", "per s", "mean ms", "p50 ms", "p95 ms", "p99 ms", "max ms", "count")
QUIET = {True: "", False: " — other work was running; figures are not comparable"}
# RESERVE's parameters as pgbench expressions: ids made from one random number per
# transaction (:rid), the slot looked up in bench_slots (:n), and the event texts passed
# with -D (payload, metadata, and body while RESERVE also writes the outbox: copies of what
# the service wrote in this run), bound per execution as the service binds them, so the
# server parses as much JSON. Keys RESERVE does not use are ignored.
PGBENCH_PARAMS = {
    "id": "md5('reservation' || :rid)::uuid",
    "user_id": "md5('user' || :rid)::uuid",
    "pet_id": "md5('pet' || :rid)::uuid",
    "slot_id": "(SELECT id FROM bench_slots WHERE n = :n)",
    "request_id": "'pgbench-' || :rid",
    "expires_at": "now() + interval '10 minutes'",
    "lock_token": "rpad(md5('lock' || :rid), 43, '-')",
    "event_id": "md5('event' || :rid)::uuid",
    "event_type": "'booking.reservation_created'",
    "event_body": ":body::jsonb",
    "event_traceparent": f"'{TRACEPARENT}'",
    "es_event_id": "md5('event' || :rid)::uuid",
    "es_aggregate_id": "md5('reservation' || :rid)::uuid",
    "es_aggregate_type": "'reservation'",
    "es_event_type": "'ReservationCreated'",
    "es_payload": ":payload::jsonb",
    "es_metadata": ":metadata::jsonb",
}
# Pending reservations the phases did not make, spread over the open slots (never their
# last place, so no slot changes status); the sweeper expires them with the others.
TOP_UP = """
WITH wanted AS (
    SELECT s.slot_id, s.clinic_id, s.service_id
      FROM slots s, generate_series(1, %(per_slot)s) AS g
     WHERE s.status = 'available' AND s.remaining > %(per_slot)s AND s.start_time > now()
     LIMIT %(count)s
), made AS (
    INSERT INTO reservations (user_id, pet_id, slot_id, service_id, clinic_id, expires_at,
                              lock_token)
    SELECT gen_random_uuid(), gen_random_uuid(), slot_id, service_id, clinic_id,
           now() + interval '10 minutes', gen_random_uuid()::text
      FROM wanted
    RETURNING slot_id
)
UPDATE slots s SET remaining = s.remaining - n.taken, version = s.version + 1
  FROM (SELECT slot_id, count(*)::int AS taken FROM made GROUP BY slot_id) n
 WHERE s.slot_id = n.slot_id"""


@dataclass(frozen=True)
class Options:
    duration: int
    concurrency: int
    clinics: int
    search_days: int
    search_seconds: float
    expire: int
    pool_max: int
    workers: int
    warmup: float
    as_json: bool


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.booking", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--duration", type=int, default=8, help="seconds per ReserveSlot run (default 8)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=32, help="gRPC workers = pgbench clients (default 32)"
    )
    parser.add_argument(
        "--clinics", type=int, default=10, help=f"clinics of {DAYS * 16} slots each (default 10)"
    )
    parser.add_argument(
        "--search-days", type=int, default=7, help="days one search covers (default 7)"
    )
    parser.add_argument(
        "--search-seconds", type=float, default=4.0, help="seconds per search run (default 4)"
    )
    parser.add_argument(
        "--expire",
        type=int,
        default=50_000,
        help="pending reservations the sweeper expires, at least (default 50000)",
    )
    parser.add_argument("--pool-max", type=int, help="TIKET_DB_POOL_MAX (default: --concurrency)")
    parser.add_argument(
        "--workers", type=int, default=1, help="service processes (tiket serve --workers)"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds left out (default 2)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.duration <= args.warmup:
        parser.error("--duration must be longer than --warmup")
    if args.search_seconds <= SEARCH_WARMUP:
        parser.error(f"--search-seconds must be longer than {SEARCH_WARMUP:g}")
    if not 1 <= args.search_days <= DAYS:
        parser.error(f"--search-days must be 1 to {DAYS}")
    if args.clinics < 1:
        parser.error("--clinics must be at least 1")
    return Options(
        duration=args.duration,
        concurrency=args.concurrency,
        clinics=args.clinics,
        search_days=args.search_days,
        search_seconds=args.search_seconds,
        expire=args.expire,
        pool_max=args.pool_max or max(2, args.concurrency // args.workers),
        workers=args.workers,
        warmup=args.warmup,
        as_json=args.json,
    )


# --- setup ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A slot to reserve, and the token of its clinic's operator (exempt from rate limits,
    so any user id may be named: one rider never holds a slot twice)."""

    slot_id: str
    metadata: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Catalogue:
    slots: list[Target]  # the many slots of the distinct run
    hot: Target
    search: pb.SearchAvailableSlotsRequest
    search_keys: list[str]  # the Redis entries of the searched days


async def create_catalogue(
    stub: booking_pb2_grpc.BookingServiceStub, service: ServiceProcess, options: Options
) -> Catalogue:
    """`options.clinics` clinics with DAYS days of slots, and a clinic with the hot slot."""
    settings = service.settings
    admin = tuple(keys.bearer(settings, Role.ADMIN, "bench"))
    first = datetime.now(ZoneInfo(TIME_ZONE)).date() + timedelta(days=2)
    windows = [
        pb.ScheduleWindow(
            day_of_week=day,
            start=timeofday_pb2.TimeOfDay(hours=OPENING[0]),
            end=timeofday_pb2.TimeOfDay(hours=OPENING[1]),
        )
        for day in range(dayofweek_pb2.MONDAY, dayofweek_pb2.SUNDAY + 1)
    ]
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def clinic(name: str) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        async with gate:
            made = await stub.CreateClinic(
                pb.CreateClinicRequest(name=name, address="Jl. Bench 1", time_zone=TIME_ZONE),
                metadata=admin,
                timeout=CALL_TIMEOUT,
            )
            offered = await stub.CreateClinicService(
                pb.CreateClinicServiceRequest(
                    clinic_id=made.clinic_id,
                    name="Vaksinasi",
                    duration_minutes=30,
                    price=to_money(Decimal(150_000)),
                ),
                metadata=admin,
                timeout=CALL_TIMEOUT,
            )
        operator = keys.bearer(settings, Role.OPERATOR, f"clinic:{made.clinic_id}:bench")
        return made.clinic_id, offered.service_id, tuple(operator)

    async def slots(index: int) -> tuple[str, str, list[Target]]:
        clinic_id, service_id, operator = await clinic(f"Klinik Bench {index}")
        async with gate:
            generated = await stub.GenerateSlots(
                pb.GenerateSlotsRequest(
                    clinic_id=clinic_id,
                    service_id=service_id,
                    first_date=calendar(first),
                    last_date=calendar(first + timedelta(days=DAYS - 1)),
                    windows=windows,
                    capacity=MAX_CAPACITY,
                    request_id=f"bench-{index}",
                ),
                metadata=admin,
                timeout=CALL_TIMEOUT,
            )
        return clinic_id, service_id, [Target(s.slot_id, operator) for s in generated.slots]

    made = await asyncio.gather(*(slots(i) for i in range(options.clinics)))
    hot_clinic, hot_service, hot_operator = await clinic("Klinik Bench hot")
    hot = await stub.CreateSlot(
        pb.CreateSlotRequest(
            clinic_id=hot_clinic,
            service_id=hot_service,
            start_time=stamp(
                datetime(first.year, first.month, first.day, OPENING[0], tzinfo=ZoneInfo(TIME_ZONE))
            ),
            capacity=MAX_CAPACITY,
        ),
        metadata=admin,
        timeout=CALL_TIMEOUT,
    )
    async with await psycopg.AsyncConnection.connect(settings.database_url("booking")) as conn:
        await conn.execute(
            "UPDATE slots SET capacity = %s, remaining = %s WHERE slot_id = %s",
            (HOT_CAPACITY, HOT_CAPACITY, hot.slot_id),
        )
    clinic_id, service_id, _ = made[0]
    days = [first + timedelta(days=i) for i in range(options.search_days)]
    return Catalogue(
        slots=[target for _, _, targets in made for target in targets],
        hot=Target(hot.slot_id, hot_operator),
        search=pb.SearchAvailableSlotsRequest(
            clinic_id=clinic_id,
            service_id=service_id,
            first_date=calendar(days[0]),
            last_date=calendar(days[-1]),
        ),
        search_keys=[settings.redis_prefix + day_key(uuid.UUID(clinic_id), d) for d in days],
    )


async def load_bench_slots(database_url: str, catalogue: Catalogue) -> dict[str, str]:
    """bench_slots(n, id) — the hot slot is n = 0, the many slots 1..N — and the texts of a
    ReservationCreated event the service wrote, as pgbench's -D variables: payload and
    metadata (event store), and body where RESERVE also writes it to the outbox."""
    rows = [(0, catalogue.hot.slot_id)]
    rows += [(n, target.slot_id) for n, target in enumerate(catalogue.slots, 1)]
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await conn.execute("CREATE TABLE bench_slots (n integer PRIMARY KEY, id uuid NOT NULL)")
        async with conn.cursor() as cur:
            await cur.executemany("INSERT INTO bench_slots (n, id) VALUES (%s, %s)", rows)
        cur = await conn.execute(
            """SELECT e.payload::text, e.metadata::text, o.body::text
                 FROM event_store e LEFT JOIN outbox o ON o.event_id = e.event_id
                WHERE e.event_type = 'ReservationCreated' LIMIT 1"""
        )
        found = await cur.fetchone()
        await conn.commit()
    if found is None:
        raise RuntimeError("the service stored no ReservationCreated event to copy for pgbench")
    texts = dict(zip(("payload", "metadata", "body"), found, strict=True))
    return {name: text for name, text in texts.items() if text is not None}


def script_is_current() -> bool:
    """Whether bench/sql/reserve.sql still sends the service's RESERVE (comments and
    pgbench's meta-commands aside, whitespace folded)."""
    lines = [
        line
        for line in SCRIPT.read_text().splitlines()
        if not line.lstrip().startswith(("--", "\\"))
    ]
    sent = " ".join(" ".join(lines).split()).removesuffix(";")
    return sent == " ".join((reservation_store.RESERVE % PGBENCH_PARAMS).split())


# --- the workloads --------------------------------------------------------------------------


async def reserve(stub, target: Target, request_id: str) -> None:
    """One ReserveSlot of `target` for a new rider and pet."""
    await stub.ReserveSlot(
        pb.ReserveSlotRequest(
            slot_id=target.slot_id,
            user_id=str(uuid.uuid4()),
            pet_id=str(uuid.uuid4()),
            request_id=request_id,
        ),
        metadata=target.metadata,
        timeout=CALL_TIMEOUT,
    )


async def warm_up(stubs: Sequence, targets: Sequence[Target]) -> None:
    """One reservation of every slot: the service's slot facts cache and its pool are then as
    they are after a while in production, not cold in the measured window."""
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(n: int, target: Target) -> None:
        async with gate:
            await reserve(stubs[n % len(stubs)], target, f"bench-warm-{n}")

    await asyncio.gather(*(one(n, t) for n, t in enumerate(targets)))


async def run_reserve(
    stubs: Sequence, targets: Sequence[Target], options: Options, sources
) -> Workload:
    """ReserveSlot of a random target from `options.concurrency` workers."""
    work = Workload((GRPC,))
    deadline = work.started + options.duration
    probe = asyncio.create_task(work.probe_cpu(sources, options.warmup, options.duration))
    run = uuid.uuid4().hex[:8]
    await asyncio.gather(
        *(
            _reserver(stubs[n % len(stubs)], targets, deadline, work, f"bench-{run}-{n}")
            for n in range(options.concurrency)
        )
    )
    await probe
    return work


async def _reserver(stub, targets, deadline: float, work: Workload, prefix: str) -> None:
    clock, rng, n = time.perf_counter, random.Random(prefix), 0
    samples = work.samples[GRPC]
    while (began := clock()) < deadline:
        n += 1
        try:
            await reserve(stub, rng.choice(targets), f"{prefix}-{n}")
        except aio.AioRpcError as exc:
            work.errors[f"{GRPC} {exc.code().name}: {(exc.details() or '')[:60]}"] += 1
            continue
        done = clock()
        samples.add(done, done - began)


async def run_search(
    stub, catalogue: Catalogue, metadata, seconds: float, cache: redis.Redis, sources, kind: str
) -> tuple[Workload, int]:
    """SearchAvailableSlots from one caller for `seconds`: "cached" answers from Redis (the
    entries stored by a first call), "uncached" reads PostgreSQL (the entries deleted before
    each call, outside the timing). The workload and the slots in an answer."""
    entries = catalogue.search_keys
    await cache.delete(*entries)  # a fresh start: the first search loads every day
    if kind == "cached":
        await stub.SearchAvailableSlots(catalogue.search, metadata=metadata, timeout=CALL_TIMEOUT)
        stored = await cache.mget(entries)
        if any(value is None for value in stored):
            raise RuntimeError("the first search did not store the days it read in Redis")
    work = Workload((kind,))
    deadline = work.started + seconds
    probe = asyncio.create_task(work.probe_cpu(sources, SEARCH_WARMUP, seconds))
    clock, samples, found = time.perf_counter, work.samples[kind], 0
    while clock() < deadline:
        if kind == "uncached":
            await cache.delete(*entries)
        began = clock()
        try:
            answer = await stub.SearchAvailableSlots(
                catalogue.search, metadata=metadata, timeout=CALL_TIMEOUT
            )
        except aio.AioRpcError as exc:
            work.errors[f"SearchAvailableSlots {exc.code().name}"] += 1
            continue
        done = clock()
        samples.add(done, done - began)
        found = len(answer.slots)
    await probe
    return work, found


# --- the sweeper --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sweep:
    """Expiring every pending reservation: how many, how long, each batch's time."""

    prepared: int  # pending reservations moved past their expiry
    slots: int  # slots they held places of
    expired: int  # what expire_due() reported
    seconds: float  # from the first batch's start to the last full batch's end
    batches: LatencyStats
    left_pending: int
    cpu: dict[str, float]

    @property
    def per_minute(self) -> float:
        return 60 * self.expired / self.seconds if self.seconds else math.nan


async def prepare_expiry(database_url: str, at_least: int) -> tuple[int, int]:
    """Top the pending reservations up to `at_least`, then move every pending one an hour
    back (created_at too: expires_at > created_at), so all are past their expiry in their
    order. (Pending reservations, slots they hold.)"""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute("SELECT count(*) FROM reservations WHERE status = 'pending'")
        [pending] = await cur.fetchone()
        if pending < at_least:
            cur = await conn.execute(
                "SELECT count(*) FROM slots WHERE status = 'available' AND start_time > now()"
            )
            [open_slots] = await cur.fetchone()
            missing = at_least - pending
            common.say(f"  {missing:,} more pending reservations, by SQL …")
            await conn.execute(
                TOP_UP, {"per_slot": -(-missing // max(1, open_slots)), "count": missing}
            )
        cur = await conn.execute(
            """UPDATE reservations
                  SET created_at = created_at - interval '1 hour',
                      expires_at = expires_at - interval '1 hour'
                WHERE status = 'pending'
            RETURNING slot_id"""
        )
        held = [slot_id for (slot_id,) in await cur.fetchall()]
    return len(held), len(set(held))


async def run_sweeper(settings, prepared: tuple[int, int], sources) -> Sweep:
    """ReservationApp.expire_due() — the service's sweeper, as a second replica in this
    process — called until it finds nothing due; each call is one batch (BookingConfig
    sweep_batch) in one transaction, and a full batch is followed at once by the next, as
    libs/periodic.py runs it."""
    clock, batches, expired = time.perf_counter, [], 0
    async with replica(Stack(settings, runtimes={}, channels={})) as second:
        before = common.cpu_snapshot(sources)
        started = ended = clock()
        while count := await second.reservations.expire_due():
            now = clock()
            batches.append(now - ended)
            expired, ended = expired + count, now
        cpu = common.cpu_percent(before, common.cpu_snapshot(sources))
    async with await psycopg.AsyncConnection.connect(settings.database_url("booking")) as conn:
        cur = await conn.execute("SELECT count(*) FROM reservations WHERE status = 'pending'")
        [left] = await cur.fetchone()
    return Sweep(*prepared, expired, ended - started, common.summarize(batches), left, cpu)


async def sweep_problems(settings: Settings, sweep: Sweep) -> list[str]:
    """After the sweep: nothing pending, every expiry counted, every place back."""
    problems = []
    if sweep.left_pending:
        problems.append(f"{sweep.left_pending} reservations still pending after the sweep")
    if sweep.expired != sweep.prepared:
        problems.append(f"{sweep.prepared} reservations were due, {sweep.expired} expired")
    async with await psycopg.AsyncConnection.connect(settings.database_url("booking")) as conn:
        cur = await conn.execute(
            """SELECT count(*) FROM slots s
                WHERE s.remaining <> s.capacity
                  AND NOT EXISTS (SELECT FROM bookings b WHERE b.slot_id = s.slot_id)"""
        )
        [short] = await cur.fetchone()
    if short:
        problems.append(f"{short} slots without bookings have not got all their places back")
    return problems + await places_audit(settings)


async def places_audit(settings: Settings) -> list[str]:
    """services/booking/tests/stack.py's audit: places of every slot, staff overlaps, one
    booking per confirmed reservation, and the money across the booking and user databases."""
    return await audit(settings.database_url("booking"), settings.database_url("user"))


# --- the run ------------------------------------------------------------------------------


@dataclass
class Run:
    """What the phases of one run found, filled in as they go."""

    search: dict[str, Measured] = field(default_factory=dict)  # cached, uncached
    search_cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    search_errors: Counter[str] = field(default_factory=Counter)
    search_slots: int = 0  # slots in one answer
    reserve: dict[str, Workload] = field(default_factory=dict)  # distinct, hot
    pgbench: dict[str, PgbenchResult] = field(default_factory=dict)  # distinct, hot
    sweep: Sweep | None = None
    audits: dict[str, list[str]] = field(default_factory=dict)  # phase -> broken invariants


@dataclass(frozen=True)
class BookingReport:
    options: Options
    slots: int  # of the distinct run
    distinct: Report  # ReserveSlot on random slots of many, and pgbench on the same
    hot: Report  # ReserveSlot on one slot, and pgbench on the same
    search: dict[str, Measured]  # cached, uncached
    search_cpu: dict[str, dict[str, float]]
    search_slots: int
    search_errors: dict[str, int]
    sweep: Sweep
    audits: dict[str, list[str]]
    load_before: float
    script_current: bool

    @property
    def problems(self) -> list[str]:
        return [f"after {phase}: {p}" for phase, found in self.audits.items() for p in found]


async def benchmark(options: Options) -> BookingReport:
    # The user service runs beside it (the booking service's pets and wallet, and the
    # audit's money checks); neither measured RPC calls it.
    env = common.isolated_env(
        list(SERVICES),
        TIKET_DB_POOL_MAX=str(options.pool_max),
        TIKET_WORKERS=str(options.workers),
        TIKET_SWEEP_INTERVAL_SECONDS="3600",  # the service's own sweeper stays out of the way
        # The search caller is a rider: rate limited (the counters run), never refused.
        TIKET_RATE_LIMIT_USER_PER_MINUTE="1000000",
        TIKET_RATE_LIMIT_ADDRESS_PER_MINUTE="1000000",
    )
    services = {name: ServiceProcess(name, env) for name in SERVICES}
    service = services["booking"]
    settings = service.settings
    database_url = settings.database_url("booking")
    run = Run()
    load_before = await common.machine_load()
    try:
        common.say(f"starting the user and booking services (database {database_url}) …")
        for started in services.values():
            await started.start()
        catalogue = await service_phases(service, options, run)
        common.say("stopping the services (SIGTERM), so they take no CPU from pgbench …")
        for started in services.values():
            await started.stop()
        await pgbench_phases(settings, catalogue, options, run)
        common.say(
            f"moving the pending reservations (at least {options.expire:,}) past their expiry …"
        )
        prepared = await prepare_expiry(database_url, options.expire)
        await common.settle_databases([database_url])
        common.say(f"sweeper: expiring {prepared[0]:,} reservations …")
        sources = {"sweeper (this process)": os.getpid(), "postgres": "postgres"}
        run.sweep = await run_sweeper(settings, prepared, {**sources, "redis": "redis-server"})
        run.audits["sweeper"] = await sweep_problems(settings, run.sweep)
    finally:
        for started in services.values():
            await started.stop()
            started.close()
        await common.remove_run_state(settings, list(SERVICES))
    reports = {
        name: Report(
            options,
            work.measure(options.warmup, options.duration),
            dict(work.errors),
            work.cpu,
            run.pgbench[name],
            run.audits[f"{GRPC} {name}"] + run.audits[f"pgbench {name}"],
            load_before,
            GRPC,
        )
        for name, work in run.reserve.items()
    }
    return BookingReport(
        options,
        len(catalogue.slots),
        reports["distinct"],
        reports["hot"],
        run.search,
        run.search_cpu,
        run.search_slots,
        dict(run.search_errors),
        run.sweep,
        run.audits,
        load_before,
        script_is_current(),
    )


async def service_phases(service: ServiceProcess, options: Options, run: Run) -> Catalogue:
    """The catalogue, then the searches and the ReserveSlot runs through the service, each
    followed by the places audit."""
    database_url = service.settings.database_url("booking")
    sources = {
        "service": common.ProcessTree(service.pid),
        "load generator": os.getpid(),
        "postgres": "postgres",
        "redis": "redis-server",
        "rabbitmq": "beam.smp",
    }
    # One HTTP/2 connection reaches one worker process: several, each with an argument of its
    # own (channels with equal arguments would share one connection).
    channels = [
        aio.insecure_channel(
            service.address, options=[("grpc.primary_user_agent", f"bench-booking-{n}")]
        )
        for n in range(2 * options.workers)
    ]
    cache = redis.Redis.from_url(service.settings.redis_url)
    try:
        stubs = [booking_pb2_grpc.BookingServiceStub(c) for c in channels]
        catalogue = await create_catalogue(stubs[0], service, options)
        common.say(
            f"  {options.clinics} clinics, {len(catalogue.slots):,} slots, one hot slot of "
            f"{HOT_CAPACITY:,} places"
        )
        await common.settle_databases([database_url])
        rider = tuple(keys.bearer(service.settings, Role.USER, str(uuid.uuid4())))
        for kind in ("cached", "uncached"):
            common.say(
                f"SearchAvailableSlots, {kind}: one rider for {options.search_seconds:g} s …"
            )
            work, run.search_slots = await run_search(
                stubs[0], catalogue, rider, options.search_seconds, cache, sources, kind
            )
            run.search[kind] = work.measure(SEARCH_WARMUP, options.search_seconds)[kind]
            run.search_cpu[kind] = work.cpu
            run.search_errors.update(work.errors)
        run.audits["search"] = await places_audit(service.settings)
        common.say(
            f"warming the slot cache: a reservation of each of {len(catalogue.slots) + 1:,} slots …"
        )
        await warm_up(stubs, [*catalogue.slots, catalogue.hot])
        for name, targets in (("distinct", catalogue.slots), ("hot", [catalogue.hot])):
            await common.settle_databases([database_url])
            common.say(
                f"{GRPC}, {LABELS[name]}: {options.concurrency} workers for {options.duration} s …"
            )
            run.reserve[name] = await run_reserve(stubs, targets, options, sources)
            run.audits[f"{GRPC} {name}"] = await places_audit(service.settings)
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))
        await cache.aclose()
    return catalogue


async def pgbench_phases(
    settings: Settings, catalogue: Catalogue, options: Options, run: Run
) -> None:
    """RESERVE in pgbench on the same slots as the ReserveSlot runs, each followed by the
    places audit."""
    database_url = settings.database_url("booking")
    variables = await load_bench_slots(database_url, catalogue)
    for name, (first, last) in (("distinct", (1, len(catalogue.slots))), ("hot", (0, 0))):
        await common.settle_databases([database_url])
        common.say(
            f"pgbench, {LABELS[name]}: {options.concurrency} clients for {options.duration} s …"
        )
        run.pgbench[name] = await common.run_pgbench(
            database_url,
            SCRIPT,
            clients=options.concurrency,
            duration=options.duration,
            warmup=options.warmup,
            variables={"first": first, "last": last, **variables},
            cpu_sources={"pgbench": "pgbench", "postgres": "postgres"},
        )
        run.audits[f"pgbench {name}"] = await places_audit(settings)


# --- output -------------------------------------------------------------------------------


def render(report: BookingReport) -> str:
    o, sweep = report.options, report.sweep
    distinct, hot = report.distinct, report.hot
    days = f"{o.search_days} day{'s' if o.search_days > 1 else ''}"
    labelled = [
        (f"{GRPC}, random slot of {report.slots:,}", distinct.grpc[GRPC]),
        ("pgbench reserve.sql, same", distinct.pgbench.window),
        (f"{GRPC}, one hot slot", hot.grpc[GRPC]),
        ("pgbench reserve.sql, same", hot.pgbench.window),
        (f"SearchAvailableSlots {days}, cached", report.search["cached"]),
        (f"SearchAvailableSlots {days}, uncached", report.search["uncached"]),
    ]
    stats = ("mean_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms", "count")
    rows = [[label, m.rate, *(getattr(m.latency, f) for f in stats)] for label, m in labelled]
    busy = report.load_before
    worst_p95 = max(m.latency.p95_ms for m in report.search.values())
    b = sweep.batches
    lines = [
        f"booking: {o.concurrency} workers / pgbench clients, {o.duration} s per run "
        f"({o.warmup:g} s warm-up left out), {o.workers} service process(es), pool max "
        f"{o.pool_max} each; search: one rider, {o.search_seconds:g} s per run, "
        f"{report.search_slots} slots an answer",
        f"machine busy before the run: {busy:.0f} % of all cores{QUIET[busy <= 10]}",
        "",
        common.table(HEADERS, rows),
        "",
        f"{GRPC} / pgbench, distinct slots: {distinct.ratio:.1f} % "
        f"{common.goal(distinct.ratio >= GOAL_RATIO, f'{GOAL_RATIO:g} %')}",
        f"{GRPC} / pgbench, one hot slot: {hot.ratio:.1f} % "
        f"{common.goal(hot.ratio >= GOAL_RATIO, f'{GOAL_RATIO:g} %')}",
        f"search p95: cached {report.search['cached'].latency.p95_ms:.1f} ms, uncached "
        f"{report.search['uncached'].latency.p95_ms:.1f} ms "
        f"{common.goal(worst_p95 < GOAL_SEARCH_P95_MS, f'< {GOAL_SEARCH_P95_MS:g} ms')}",
        f"sweeper: {sweep.expired:,} of {sweep.prepared:,} due reservations ({sweep.slots:,} "
        f"slots) expired in {sweep.seconds:.1f} s = {sweep.per_minute:,.0f}/min "
        f"{common.goal(sweep.per_minute >= GOAL_EXPIRED_PER_MINUTE, f'{GOAL_EXPIRED_PER_MINUTE:,.0f}/min')}"
        f"; {b.count} batches, ms p50 {b.p50_ms:.0f} "
        f"p95 {b.p95_ms:.0f} p99 {b.p99_ms:.0f} max {b.max_ms:.0f}",
        "pgbench's own figures: "
        + "; ".join(
            f"{name} tps {r.pgbench.tps:,.1f}, latency average {r.pgbench.latency_avg_ms:.2f} ms, "
            f"{r.pgbench.processed} transactions, {r.pgbench.failed} failed"
            for name, r in (("distinct", distinct), ("hot", hot))
        ),
        "errors: " + _counts({**report.search_errors, **distinct.errors, **hot.errors}),
        "CPU, % of one core (machine and iowait: % of all cores); per op: ms of CPU time per "
        "operation (reservation, search, expiry) in the window",
        *(
            f"  {label}: "
            + ", ".join(f"{k} {v:.0f}" for k, v in shares.items())
            + f" | per op: {_per_op(shares, rate)}"
            for label, shares, rate in (
                (f"{GRPC} random slots, gRPC", distinct.service_cpu, distinct.grpc[GRPC].rate),
                (
                    f"{GRPC} random slots, pgbench",
                    distinct.pgbench.cpu,
                    distinct.pgbench.window.rate,
                ),
                (f"{GRPC} one hot slot, gRPC", hot.service_cpu, hot.grpc[GRPC].rate),
                (f"{GRPC} one hot slot, pgbench", hot.pgbench.cpu, hot.pgbench.window.rate),
                ("search cached", report.search_cpu["cached"], report.search["cached"].rate),
                ("search uncached", report.search_cpu["uncached"], report.search["uncached"].rate),
                ("sweeper", sweep.cpu, sweep.per_minute / 60),
            )
        ),
    ]
    if not report.script_current:
        lines.append(
            "WARNING: bench/sql/reserve.sql is not the service's RESERVE any more "
            "(services/booking/reservation_store.py): the baseline is of other SQL; update it"
        )
    phases = ", ".join(report.audits)
    if report.problems:
        lines.append("places audit: BROKEN\n" + "\n".join(f"  {p}" for p in report.problems[:20]))
    else:
        lines.append(f"places audit: OK after every phase ({phases})")
    return "\n".join(lines)


def _per_op(shares: dict[str, float], rate: float) -> str:
    """CPU ms per operation of each process (group), and their sum: % of one core ÷ rate."""
    ms = {k: 10 * v / rate for k, v in shares.items() if k not in {"machine", "iowait"} and rate}
    return ", ".join(f"{k} {v:.2f}" for k, v in ms.items()) + f" = {sum(ms.values()):.2f} ms"


def _counts(errors: dict[str, int]) -> str:
    return ", ".join(f"{k} × {v}" for k, v in sorted(errors.items())) or "none"


def as_json(report: BookingReport) -> str:
    data = {
        "options": asdict(report.options),
        "slots": report.slots,
        **{
            name: {
                "grpc": asdict(r.grpc[GRPC]),
                "pgbench": asdict(r.pgbench),
                "ratio_percent": r.ratio,
                "errors": r.errors,
                "cpu_grpc_run": r.service_cpu,
            }
            for name, r in (("distinct", report.distinct), ("hot", report.hot))
        },
        "search": {k: asdict(v) for k, v in report.search.items()},
        "search_cpu": report.search_cpu,
        "search_slots": report.search_slots,
        "search_errors": report.search_errors,
        "sweep": {**asdict(report.sweep), "per_minute": report.sweep.per_minute},
        "machine_busy_before_percent": report.load_before,
        "script_current": report.script_current,
        "audit_ok": not report.problems,
        "problems": report.problems,
    }
    return json.dumps(data, indent=2, default=str).replace("NaN", "null")  # strict JSON


def main(argv: Sequence[str] | None = None) -> None:
    common.run(
        "bench.booking", parse_args(argv), benchmark, render, as_json, lambda r: bool(r.problems)
    )


if __name__ == "__main__":
    main()
