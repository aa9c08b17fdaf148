"""Demo data: seed 001's PetPro veterinary clinics — two clinics (Jakarta on WIB, Denpasar
on WITA), their services at Indonesian prices, their staff, and two weeks of slots from
today (Monday to Saturday, 09:00-12:00 and 13:00-17:00 on each clinic's own wall clock).

Loaded through the public API, idempotently: every create carries a request_id, and slots
are generated one local day at a time under a request_id naming that day, so running it
again (the same day or a later one) returns what exists and only adds the days that came
into the two weeks since. A demo clinic staff changed since (UpdateClinic) is left as it
is, and so is a day on which staff gave a demo staff member slots of their own that the
demo's would overlap."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import grpc
from google.type import date_pb2, timeofday_pb2
from grpc import aio
from tiket.booking.v1 import booking_pb2 as pb
from tiket.booking.v1 import booking_pb2_grpc

from libs.money import rupiah, to_money
from services.booking.facilities import demo as facility_demo

# Days ahead of today (in the clinic's time zone) that get slots: today and the next 14.
DAYS_AHEAD = 14
OPEN_DAYS = range(0, 6)  # date.weekday(): Monday … Saturday; closed on Sunday
WINDOWS = ((time(9), time(12)), (time(13), time(17)))  # lunch break 12:00-13:00


@dataclass(frozen=True)
class DemoService:
    key: str  # part of its request_ids
    name: str
    minutes: int
    price: int  # IDR
    capacity: int
    staff: str  # the one staff member whose slots these are
    title: str


@dataclass(frozen=True)
class DemoClinic:
    key: str
    name: str
    address: str
    time_zone: str
    services: tuple[DemoService, ...]


DEMO_CLINICS = (
    DemoClinic(
        "petpro-sudirman",
        "Klinik Hewan PetPro Sudirman",
        "Jl. Jend. Sudirman Kav. 45, Karet Semanggi, Jakarta Selatan 12930",
        "Asia/Jakarta",
        (
            DemoService(
                "vaksinasi", "Vaksinasi", 30, 150_000, 1, "drh. Ayu Lestari", "Dokter hewan"
            ),
            DemoService(
                "pemeriksaan",
                "Pemeriksaan Umum",
                30,
                100_000,
                1,
                "drh. Bambang Pratama",
                "Dokter hewan",
            ),
            DemoService("grooming", "Grooming", 60, 120_000, 2, "Rudi Hartono", "Groomer"),
        ),
    ),
    DemoClinic(
        "petpro-denpasar",
        "Klinik Hewan PetPro Denpasar",
        "Jl. Teuku Umar No. 88, Dauh Puri Kauh, Denpasar 80114",
        "Asia/Makassar",
        (
            DemoService(
                "pemeriksaan",
                "Pemeriksaan Umum",
                30,
                100_000,
                1,
                "drh. Made Wirawan",
                "Dokter hewan",
            ),
        ),
    ),
)
# The clinic and service `tiket demo booking` books.
DEMO_CLINIC = DEMO_CLINICS[0]
DEMO_SERVICE = DEMO_CLINIC.services[0]


async def load(
    channel: aio.Channel,
    metadata: list[tuple[str, str]],
    out: Callable[[str], None],
    riders: Sequence[str] = (),
) -> None:
    """The clinics with their slots, then seed 003's facilities (booked for `riders`, the
    user ids of the user service's demo riders, when given)."""
    stub = booking_pb2_grpc.BookingServiceStub(channel)
    for demo in DEMO_CLINICS:
        try:
            clinic = await stub.CreateClinic(
                pb.CreateClinicRequest(
                    name=demo.name,
                    address=demo.address,
                    time_zone=demo.time_zone,
                    request_id=f"demo-clinic-{demo.key}",
                ),
                metadata=metadata,
            )
        except aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            # Staff changed it since (UpdateClinic: renamed, deactivated …): theirs now.
            out(f"  clinic {demo.name}: changed since it was loaded; left as it is, no slots added")
            continue
        out(f"  clinic {clinic.name} ({clinic.time_zone})  id={clinic.clinic_id}")
        today = datetime.now(ZoneInfo(clinic.time_zone)).date()
        days = [today + timedelta(days=n) for n in range(DAYS_AHEAD + 1)]
        open_days = [day for day in days if day.weekday() in OPEN_DAYS]
        for offered in demo.services:
            slots, left_out = await _service_with_slots(
                stub, metadata, demo, clinic, offered, open_days
            )
            out(
                f"    {offered.name:<17} {offered.minutes:>3} min  {rupiah(Decimal(offered.price)):>11}"
                f"  {offered.staff:<21} {slots:>4} slots {days[0]} … {days[-1]}"
            )
            for day, why in left_out:
                out(f"      {day}: no {offered.name} slots made: {why}")
    await facility_demo.load(channel, metadata, out, riders)


async def _service_with_slots(
    stub: booking_pb2_grpc.BookingServiceStub,
    metadata: list[tuple[str, str]],
    demo: DemoClinic,
    clinic: pb.Clinic,
    offered: DemoService,
    days: list[date],
) -> tuple[int, list[tuple[date, str]]]:
    """The service, its staff member and their slots of `days`: how many slots, and the days
    left out with the reason (staff gave the member overlapping slots of their own)."""
    key = f"demo-{demo.key}-{offered.key}"
    service = await stub.CreateClinicService(
        pb.CreateClinicServiceRequest(
            clinic_id=clinic.clinic_id,
            name=offered.name,
            duration_minutes=offered.minutes,
            price=to_money(Decimal(offered.price)),
            default_capacity=offered.capacity,
            request_id=f"{key}-service",
        ),
        metadata=metadata,
    )
    staff = await stub.CreateStaff(
        pb.CreateStaffRequest(
            clinic_id=clinic.clinic_id,
            full_name=offered.staff,
            title=offered.title,
            request_id=f"{key}-staff",
        ),
        metadata=metadata,
    )
    made, left_out = 0, []
    for day in days:
        try:
            generated = await stub.GenerateSlots(
                pb.GenerateSlotsRequest(
                    clinic_id=clinic.clinic_id,
                    service_id=service.service_id,
                    staff_id=staff.staff_id,
                    first_date=_date(day),
                    last_date=_date(day),
                    windows=[_window(day, start, end) for start, end in WINDOWS],
                    request_id=f"{key}-slots-{day.isoformat()}",
                ),
                metadata=metadata,
            )
        except aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            left_out.append((day, exc.details() or exc.code().name))
            continue
        made += len(generated.slots)
    return made, left_out


def _date(day: date) -> date_pb2.Date:
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


def _window(day: date, start: time, end: time) -> pb.ScheduleWindow:
    return pb.ScheduleWindow(
        day_of_week=day.isoweekday(),  # google.type.DayOfWeek: MONDAY = 1 … SUNDAY = 7
        start=timeofday_pb2.TimeOfDay(hours=start.hour, minutes=start.minute),
        end=timeofday_pb2.TimeOfDay(hours=end.hour, minutes=end.minute),
    )
