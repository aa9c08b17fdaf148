"""The real user and booking services in this process (port 0, one isolated run: databases,
exchange, Redis prefix), the builders the booking tests share, and the audit of places."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial

import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2
from grpc import aio
from tiket.booking.v1 import booking_pb2 as pb
from tiket.booking.v1 import booking_pb2_grpc
from tiket.user.v1 import user_pb2, user_pb2_grpc

from libs.auth import Role
from libs.auth.service_identity import ServiceIdentity
from libs.cache import Cache
from libs.clients import service_channel
from libs.config import Settings, load
from libs.db.database import open_pool
from libs.money import to_money
from libs.server.runtime import ServiceRuntime
from services.booking import service
from services.booking.availability import Availability
from services.booking.bookings import BookingApp
from services.booking.config import BookingConfig
from services.booking.payments import Payments
from services.booking.reservations import ReservationApp
from services.booking.topups import TopUps
from services.booking.users import Users
from services.notification.service import DEFINITION as NOTIFICATION
from services.user import store as user_store
from services.user.service import DEFINITION as USER
from tests.support import keys
from tests.support.cleanup import remove_run
from tests.support.settings import isolated_env
from tests.support.tcp_proxy import TcpProxy

SERVICES = ("user", "booking")
_cards = itertools.count(1)
_slot_hours = itertools.count(0)


@dataclass
class Stack:
    settings: Settings
    runtimes: dict[str, ServiceRuntime]
    channels: dict[str, aio.Channel]
    # The proxy the booking service reaches the user service through (running_stack(proxied)).
    user_proxy: TcpProxy | None = None

    @property
    def booking(self) -> booking_pb2_grpc.BookingServiceStub:
        return booking_pb2_grpc.BookingServiceStub(self.channels["booking"])

    @property
    def users(self) -> user_pb2_grpc.UserServiceStub:
        return user_pb2_grpc.UserServiceStub(self.channels["user"])

    def metadata(self, role: Role | str = Role.ADMIN, sub: str = "tests") -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {keys.token(self.settings, role, sub)}")]

    def as_rider(self, user_id: str) -> list[tuple[str, str]]:
        return self.metadata(Role.USER, user_id)

    def as_operator(self, clinic_id: str, handle: str = "drh.sari") -> list[tuple[str, str]]:
        return self.metadata(Role.OPERATOR, f"clinic:{clinic_id}:{handle}")

    def database_url(self, name: str = "booking") -> str:
        return self.settings.database_url(name)


@asynccontextmanager
async def running_stack(
    config: BookingConfig | None = None,
    *,
    proxied: bool = False,
    notifying: bool = False,
    **env_overrides: str,
) -> AsyncIterator[Stack]:
    """Start the user service, then the booking service pointed at it (through a
    fault-injection proxy with `proxied`), and with `notifying` the notification service
    that tells riders of booking.* events."""
    env = isolated_env(**env_overrides)
    base = load(env)
    runtimes = {"user": ServiceRuntime(USER, base)}
    channels: dict[str, aio.Channel] = {}
    proxy = None
    try:
        await runtimes["user"].start()
        port = runtimes["user"].port
        if proxied:
            proxy = TcpProxy("127.0.0.1", port)
            await proxy.start()
            port = proxy.port
        settings = load({**env, "TIKET_USER_ADDR": f"127.0.0.1:{port}"})
        definition = replace(
            service.DEFINITION, build=partial(service.build, booking_config=config)
        )
        runtimes["booking"] = ServiceRuntime(definition, settings)
        await runtimes["booking"].start()
        if notifying:
            runtimes["notification"] = ServiceRuntime(NOTIFICATION, settings)
            await runtimes["notification"].start()
        for name, runtime in runtimes.items():
            channels[name] = aio.insecure_channel(f"127.0.0.1:{runtime.port}")
        yield Stack(settings, runtimes, channels, proxy)
    finally:
        for channel in channels.values():
            await channel.close()
        for runtime in reversed(list(runtimes.values())):
            await runtime.stop()
        if proxy is not None:
            await proxy.stop()
        await remove_run(base, [*SERVICES, *(["notification"] if notifying else [])])


@dataclass
class Replica:
    """A second booking replica's use cases (own pool, cache and user channel): what its
    sweeper runs (services/booking/jobs.py)."""

    reservations: ReservationApp
    bookings: BookingApp
    payments: Payments
    top_ups: TopUps


@asynccontextmanager
async def replica(stack: Stack, config: BookingConfig | None = None) -> AsyncIterator[Replica]:
    settings, config = stack.settings, config or BookingConfig()
    pool = await open_pool(settings.database_url("booking"), min_size=1, max_size=4)
    cache = Cache(settings.redis_url, settings.redis_prefix)
    identity = ServiceIdentity.load("booking", settings)
    channel = service_channel(
        settings.addresses["user"], service.USER_SERVICE, callee="user", identity=identity
    )
    availability, users = Availability(pool, cache), Users(channel)
    midtrans = service.gateway_of(config)
    payments = Payments(pool, users, midtrans, config, identity)
    try:
        yield Replica(
            ReservationApp(pool, availability, users, config),
            BookingApp(pool, availability, payments, config, identity),
            payments,
            TopUps(pool, users, midtrans, config),
        )
    finally:
        if midtrans is not None:
            await midtrans.close()
        await channel.close()
        await cache.close()
        await pool.close()


# --- builders ----------------------------------------------------------------------------


def idr(amount: int | str | Decimal):
    return to_money(Decimal(amount))


def stamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def calendar(day: date) -> date_pb2.Date:
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


def future_hour(days: int = 3) -> datetime:
    """A whole UTC hour `days` ahead, a new one per call (so slots of one staff member never
    overlap by accident)."""
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=days)
    return base + timedelta(hours=next(_slot_hours))


@dataclass(frozen=True)
class Clinic:
    clinic: pb.Clinic
    service: pb.ClinicService
    staff: pb.Staff

    @property
    def id(self) -> str:
        return self.clinic.clinic_id


async def new_clinic(
    stack: Stack, *, price: int = 150_000, time_zone: str = "Asia/Jakarta"
) -> Clinic:
    """An active clinic with one 30-minute service at `price` and one staff member."""
    md = stack.metadata()
    clinic = await stack.booking.CreateClinic(
        pb.CreateClinicRequest(
            name="Klinik Hewan Sehat", address="Jl. Sudirman 1", time_zone=time_zone
        ),
        metadata=md,
    )
    offered = await stack.booking.CreateClinicService(
        pb.CreateClinicServiceRequest(
            clinic_id=clinic.clinic_id, name="Vaksinasi", duration_minutes=30, price=idr(price)
        ),
        metadata=md,
    )
    member = await stack.booking.CreateStaff(
        pb.CreateStaffRequest(
            clinic_id=clinic.clinic_id, full_name="drh. Sari", title="Dokter hewan"
        ),
        metadata=md,
    )
    return Clinic(clinic, offered, member)


async def new_slot(
    stack: Stack,
    clinic: Clinic,
    *,
    capacity: int = 1,
    start: datetime | None = None,
    staff: bool = False,
) -> pb.Slot:
    return await stack.booking.CreateSlot(
        pb.CreateSlotRequest(
            clinic_id=clinic.id,
            service_id=clinic.service.service_id,
            staff_id=clinic.staff.staff_id if staff else "",
            start_time=stamp(start or future_hour()),
            capacity=capacity,
        ),
        metadata=stack.metadata(),
    )


async def new_rider(stack: Stack, balance: int = 0) -> tuple[str, str]:
    """(user_id, pet_id) of a new active rider with one pet and `balance` on the wallet."""
    md = stack.metadata()
    card = f"B{uuid.uuid4().hex[:9].upper()}{next(_cards):04d}"
    user = await stack.users.CreateUser(
        user_pb2.CreateUserRequest(card_id=card, full_name="Pemilik"), metadata=md
    )
    pet = await stack.users.AddPet(
        user_pb2.AddPetRequest(user_id=user.id, name="Milo", species="cat"), metadata=md
    )
    if balance:
        await stack.users.TopUp(
            user_pb2.TopUpRequest(user_id=user.id, amount=idr(balance), idempotency_key="init"),
            metadata=md,
        )
    return user.id, pet.id


# --- the audit ---------------------------------------------------------------------------


async def audit(database_url: str, user_url: str) -> list[str]:
    """What would mean a place lost or sold twice, or money lost, checked in the booking and
    user databases:
    - per slot: capacity - remaining = pending reservations + place-holding bookings;
    - remaining never below zero or above capacity (the CHECKs say so too);
    - no staff member with two overlapping slots (seed 000's conflict query);
    - every confirmed reservation has exactly one booking, no booking without one;
    - money in = money out + refunds: per booking, what its wallet payments and refunds
      record is what the wallet's ledger charged and refunded under its reference, and the
      wallet's own invariants hold; no booking is served (confirmed and on) unpaid."""
    problems: list[str] = []
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            """SELECT s.slot_id::text, s.capacity, s.remaining,
                      (SELECT count(*) FROM reservations r
                        WHERE r.slot_id = s.slot_id AND r.status = 'pending')
                    + (SELECT count(*) FROM bookings b WHERE b.slot_id = s.slot_id
                        AND b.status IN ('pending_payment', 'confirmed', 'in_progress',
                                         'completed', 'no_show')) AS taken
                 FROM slots s"""
        )
        for slot_id, capacity, remaining, taken in await cur.fetchall():
            if capacity - remaining != taken or not 0 <= remaining <= capacity:
                problems.append(
                    f"slot {slot_id}: capacity {capacity}, remaining {remaining}, "
                    f"{taken} places held"
                )
        cur = await conn.execute(
            """SELECT a.slot_id::text, b.slot_id::text FROM slots a JOIN slots b
                   ON a.staff_id = b.staff_id AND a.slot_id < b.slot_id
                  AND tstzrange(a.start_time, a.end_time) && tstzrange(b.start_time, b.end_time)"""
        )
        problems += [f"staff slots {a} and {b} overlap" for a, b in await cur.fetchall()]
        cur = await conn.execute(
            """SELECT r.reservation_id::text, count(b.booking_id)
                 FROM reservations r LEFT JOIN bookings b ON b.reservation_id = r.reservation_id
                GROUP BY r.reservation_id, r.status
               HAVING (r.status = 'confirmed') <> (count(b.booking_id) = 1)
                   OR count(b.booking_id) > 1"""
        )
        problems += [f"reservation {r}: {n} bookings" for r, n in await cur.fetchall()]
        cur = await conn.execute(
            """SELECT 'booking-' || booking_id,
                      sum(amount) FILTER (WHERE payment_method <> 'refund'
                                            AND status <> ALL('{pending,failed,expired}')),
                      sum(amount) FILTER (WHERE payment_method = 'refund'
                                            AND status = 'completed')
                 FROM payment_records WHERE payment_provider = 'wallet' GROUP BY booking_id"""
        )
        recorded = {ref: (paid or 0, back or 0) for ref, paid, back in await cur.fetchall()}
        cur = await conn.execute(
            """SELECT b.booking_id::text, b.status, p.status
                 FROM bookings b LEFT JOIN payment_records p ON p.payment_id = b.payment_id
                WHERE b.status IN ('confirmed', 'in_progress', 'completed', 'no_show')
                  AND p.status IS DISTINCT FROM 'completed'
                  AND p.status IS DISTINCT FROM 'partially_refunded'"""
        )
        problems += [f"booking {row[0]} served unpaid: {row[1:]}" for row in await cur.fetchall()]
    async with await psycopg.AsyncConnection.connect(user_url) as conn:
        problems += await user_store.invariant_violations(conn)
        cur = await conn.execute(
            """SELECT reference, -sum(amount) FILTER (WHERE kind = 'charge'),
                      sum(amount) FILTER (WHERE kind = 'refund')
                 FROM ledger_entries WHERE reference LIKE 'booking-%%' GROUP BY reference"""
        )
        moved = {ref: (paid or 0, back or 0) for ref, paid, back in await cur.fetchall()}
    for reference in recorded.keys() | moved.keys():
        if recorded.get(reference, (0, 0)) != moved.get(reference, (0, 0)):
            problems.append(
                f"{reference}: booking records (paid, refunded) {recorded.get(reference)}, "
                f"wallet {moved.get(reference)}"
            )
    return problems


# --- what the error and fuzz tests share ---------------------------------------------------

# What a refused request must leave as it was: rows of every table, and the places and
# pending reservations (a refusal after a lock must not half-change them).
_STATE = {
    "clinics": "SELECT count(*) FROM clinics",
    "clinic_services": "SELECT count(*) FROM clinic_services",
    "staff": "SELECT count(*) FROM staff",
    "slot_batches": "SELECT count(*) FROM slot_batches",
    "slots": "SELECT count(*) FROM slots",
    "reservations": "SELECT count(*) FROM reservations",
    "bookings": "SELECT count(*) FROM bookings",
    "booking_history": "SELECT count(*) FROM booking_history",
    "event_store": "SELECT count(*) FROM event_store",
    "outbox": "SELECT count(*) FROM outbox",
    "places_remaining": "SELECT coalesce(sum(remaining), 0) FROM slots",
    "pending_reservations": "SELECT count(*) FROM reservations WHERE status = 'pending'",
    "facilities": "SELECT count(*) FROM facilities",
    "facility_hours": "SELECT count(*) FROM facility_hours",
    "facility_bookings": "SELECT count(*) FROM facility_bookings",
}
_STATE_QUERY = "SELECT " + ", ".join(f"({sql}) AS {name}" for name, sql in _STATE.items())


async def row_counts(database_url: str) -> dict[str, int]:
    """Row counts of the booking database and its places, by name (a diff reads well)."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(_STATE_QUERY)
        row = await cur.fetchone()
    assert row is not None
    return dict(zip(_STATE, map(int, row), strict=True))


async def reserve(
    stack: Stack, slot_id: str, user_id: str, pet_id: str, **fields
) -> pb.Reservation:
    """ReserveSlot as the rider `user_id` (extra request fields: request_id)."""
    return await stack.booking.ReserveSlot(
        pb.ReserveSlotRequest(slot_id=slot_id, user_id=user_id, pet_id=pet_id, **fields),
        metadata=stack.as_rider(user_id),
    )


async def confirm(stack: Stack, reservation: pb.Reservation, **fields) -> pb.Booking:
    """ConfirmReservation of `reservation` as its rider (extra fields: notes)."""
    return await stack.booking.ConfirmReservation(
        pb.ConfirmReservationRequest(
            reservation_id=reservation.reservation_id,
            user_id=reservation.user_id,
            lock_token=reservation.lock_token,
            **fields,
        ),
        metadata=stack.as_rider(reservation.user_id),
    )
