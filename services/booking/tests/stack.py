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
from libs.cache import Cache
from libs.config import Settings, load
from libs.db.database import open_pool
from libs.money import to_money
from libs.server.runtime import ServiceRuntime
from services.booking import service
from services.booking.availability import Availability
from services.booking.config import BookingConfig
from services.booking.reservations import ReservationApp
from services.booking.users import Users
from services.user.service import DEFINITION as USER
from tests.support import keys
from tests.support.cleanup import remove_run
from tests.support.settings import isolated_env

SERVICES = ("user", "booking")
_cards = itertools.count(1)
_slot_hours = itertools.count(0)


@dataclass
class Stack:
    settings: Settings
    runtimes: dict[str, ServiceRuntime]
    channels: dict[str, aio.Channel]

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
    config: BookingConfig | None = None, **env_overrides: str
) -> AsyncIterator[Stack]:
    """Start the user service, then the booking service pointed at it."""
    env = isolated_env(**env_overrides)
    base = load(env)
    runtimes = {"user": ServiceRuntime(USER, base)}
    channels: dict[str, aio.Channel] = {}
    try:
        await runtimes["user"].start()
        settings = load({**env, "TIKET_USER_ADDR": f"127.0.0.1:{runtimes['user'].port}"})
        definition = replace(
            service.DEFINITION, build=partial(service.build, booking_config=config)
        )
        runtimes["booking"] = ServiceRuntime(definition, settings)
        await runtimes["booking"].start()
        for name, runtime in runtimes.items():
            channels[name] = aio.insecure_channel(f"127.0.0.1:{runtime.port}")
        yield Stack(settings, runtimes, channels)
    finally:
        for channel in channels.values():
            await channel.close()
        for runtime in reversed(list(runtimes.values())):
            await runtime.stop()
        await remove_run(base, SERVICES)


@asynccontextmanager
async def sweeper_of(
    stack: Stack, config: BookingConfig | None = None
) -> AsyncIterator[ReservationApp]:
    """A second booking replica's reservations (own pool and cache): its expire_due() is
    what the sweeper runs."""
    settings = stack.settings
    pool = await open_pool(settings.database_url("booking"), min_size=1, max_size=4)
    cache = Cache(settings.redis_url, settings.redis_prefix)
    try:
        yield ReservationApp(pool, Availability(pool, cache), NO_USERS, config or BookingConfig())
    finally:
        await cache.close()
        await pool.close()


class _NoUsers(Users):
    """Expiring reservations never calls the user service."""

    def __init__(self) -> None:
        pass


NO_USERS = _NoUsers()


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


async def audit(database_url: str) -> list[str]:
    """What would mean a place lost or sold twice, checked in the booking database:
    - per slot: capacity - remaining = pending reservations + place-holding bookings;
    - remaining never below zero or above capacity (the CHECKs say so too);
    - no staff member with two overlapping slots (seed 000's conflict query);
    - every confirmed reservation has exactly one booking, no booking without one."""
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
