"""Demo data for facility booking: seed 003's sample data — two facilities and its four
bookings (Team Standup, Client Call, Project Review, One-on-One) for three users.

The seed's rows are dated 2025-06-15/16 at 09:00-15:00 UTC: in the past (a booking must not
be) and, in Jakarta, outside any office's hours. They keep their titles, attendee counts and
order, on the facilities' own wall clock (Mon-Fri 08:00-18:00, the seed's "8 AM-6 PM"), on
the next two working days. Loaded through the public API under request_ids naming the day,
so running it again the same day books nothing twice. What staff changed since is theirs:
a room's hours are set only when it is new, a demo booking moved since is left where it is,
and one its room now refuses (closed then, or taken) is left out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import grpc
from google.type import timeofday_pb2
from grpc import aio
from tiket.booking.v1 import facility_pb2 as pb
from tiket.booking.v1 import facility_pb2_grpc

from libs.timestamps import to_timestamp

ZONE = "Asia/Jakarta"
OPEN, CLOSE = time(8), time(18)
WORKING_DAYS = range(1, 6)  # google.type.DayOfWeek: MONDAY = 1 … FRIDAY = 5


@dataclass(frozen=True)
class DemoFacility:
    key: str
    name: str
    location: str
    capacity: int


@dataclass(frozen=True)
class DemoBooking:
    facility: int  # index into DEMO_FACILITIES (the seed's facility 1 and 2)
    rider: int  # index into the riders (the seed's users 1, 2, 3)
    day: int  # 0 = the next working day, 1 = the one after
    start: time
    end: time
    title: str
    attendees: int


DEMO_FACILITIES = (
    DemoFacility("merapi", "Ruang Rapat Merapi", "Menara Tiket lt. 5, Jakarta Selatan", 12),
    DemoFacility("bromo", "Aula Bromo", "Menara Tiket lt. 2, Jakarta Selatan", 40),
)
DEMO_BOOKINGS = (
    DemoBooking(0, 0, 0, time(9), time(10), "Team Standup", 5),
    DemoBooking(0, 1, 0, time(10, 30), time(11, 30), "Client Call", 3),
    DemoBooking(1, 0, 0, time(14), time(15), "Project Review", 8),
    DemoBooking(0, 2, 1, time(9, 15), time(10, 15), "One-on-One", 2),
)


async def load(
    channel: aio.Channel,
    metadata: list[tuple[str, str]],
    out: Callable[[str], None],
    riders: Sequence[str],
) -> None:
    """The facilities, their hours and (when three riders' user ids are given) the bookings."""
    stub = facility_pb2_grpc.FacilityServiceStub(channel)
    facilities = [await _facility(stub, metadata, demo) for demo in DEMO_FACILITIES]
    for facility in facilities:
        out(f"  facility {facility.name} ({facility.time_zone}, {facility.capacity} seats)")
    if len(riders) < 3:
        out("  (no riders seeded: facility bookings skipped)")
        return
    days = _next_working_days(datetime.now(ZoneInfo(ZONE)).date(), 2)
    for n, demo in enumerate(DEMO_BOOKINGS):
        day = days[demo.day]
        line = (
            f"    {day} {demo.start:%H:%M}-{demo.end:%H:%M}  {demo.title:<15}"
            f" {demo.attendees:>2} people  {DEMO_FACILITIES[demo.facility].name}"
        )
        try:
            made = await stub.BookFacility(
                pb.BookFacilityRequest(
                    facility_id=facilities[demo.facility].facility_id,
                    user_id=riders[demo.rider],
                    start_time=to_timestamp(_at(day, demo.start)),
                    end_time=to_timestamp(_at(day, demo.end)),
                    title=demo.title,
                    attendee_count=demo.attendees,
                    request_id=f"demo-facility-{day.isoformat()}-{n}",
                ),
                metadata=metadata,
            )
        except aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
                out(f"{line}: changed since it was loaded; left as it is")
            elif exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                out(f"{line}: not booked: {exc.details()}")
            else:
                raise
            continue
        out(f"{line}  id={made.booking_id}")


async def _facility(
    stub: facility_pb2_grpc.FacilityServiceStub,
    metadata: list[tuple[str, str]],
    demo: DemoFacility,
) -> pb.Facility:
    made = await stub.CreateFacility(
        pb.CreateFacilityRequest(
            name=demo.name,
            location=demo.location,
            capacity=demo.capacity,
            time_zone=ZONE,
            request_id=f"demo-facility-{demo.key}",
        ),
        metadata=metadata,
    )
    if made.updated_at != made.created_at:
        return made  # staff set its hours since it was made (SetFacilityHours): theirs now
    hours = [
        pb.OpeningWindow(day_of_week=day, open=_time_of_day(OPEN), close=_time_of_day(CLOSE))
        for day in WORKING_DAYS
    ]
    request = pb.SetFacilityHoursRequest(facility_id=made.facility_id, hours=hours)
    return await stub.SetFacilityHours(request, metadata=metadata)


def _next_working_days(today: date, count: int) -> list[date]:
    days: list[date] = []
    day = today
    while len(days) < count:
        day += timedelta(days=1)
        if day.isoweekday() in WORKING_DAYS:
            days.append(day)
    return days


def _at(day: date, at: time) -> datetime:
    return datetime.combine(day, at, tzinfo=ZoneInfo(ZONE))


def _time_of_day(at: time) -> timeofday_pb2.TimeOfDay:
    return timeofday_pb2.TimeOfDay(hours=at.hour, minutes=at.minute)
