"""Builders and checks the facility tests share: a facility with hours, a booking request, the
seed's conflict query, the row counts of the facility tables."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from google.type import timeofday_pb2
from tiket.booking.v1 import facility_pb2 as pb
from tiket.booking.v1 import facility_pb2_grpc

from services.booking.tests.stack import Stack, stamp

_names = itertools.count(1)
# The seed's conflict query (monitoring / health check), on facility_bookings: pairs of
# distinct bookings of one facility that hold time and overlap.
CONFLICTS = """
    SELECT count(*) FROM facility_bookings b1
      JOIN facility_bookings b2
        ON b1.booking_id <> b2.booking_id AND b1.facility_id = b2.facility_id
     WHERE b1.status IN ('confirmed', 'pending') AND b2.status IN ('confirmed', 'pending')
       AND tstzrange(b1.start_time, b1.end_time) && tstzrange(b2.start_time, b2.end_time)"""
COUNTS = {
    "facilities": "SELECT count(*) FROM facilities",
    "facility_hours": "SELECT count(*) FROM facility_hours",
    "facility_bookings": "SELECT count(*) FROM facility_bookings",
    "facility_booking_series": "SELECT count(*) FROM facility_booking_series",
    "facility_booking_audit_log": "SELECT count(*) FROM facility_booking_audit_log",
    "facility_statuses": "SELECT count(*) FROM facility_bookings WHERE status <> 'confirmed'",
    "outbox": "SELECT count(*) FROM outbox",
    "event_store": "SELECT count(*) FROM event_store",
}


def facilities(stack: Stack) -> facility_pb2_grpc.FacilityServiceStub:
    return facility_pb2_grpc.FacilityServiceStub(stack.channels["booking"])


def window(day: int, opens: tuple[int, int], closes: tuple[int, int]) -> pb.OpeningWindow:
    return pb.OpeningWindow(
        day_of_week=day,
        open=timeofday_pb2.TimeOfDay(hours=opens[0], minutes=opens[1]),
        close=timeofday_pb2.TimeOfDay(hours=closes[0], minutes=closes[1]),
    )


ALL_DAY = [window(day, (0, 0), (24, 0)) for day in range(1, 8)]


async def new_facility(
    stack: Stack,
    hours: list[pb.OpeningWindow] | None = None,
    *,
    time_zone: str = "Asia/Jakarta",
    capacity: int = 20,
    requires_approval: bool = False,
) -> pb.Facility:
    admin = stack.metadata()
    stub = facilities(stack)
    made = await stub.CreateFacility(
        pb.CreateFacilityRequest(
            name=f"Room {next(_names)}",
            location="Floor 3",
            capacity=capacity,
            time_zone=time_zone,
            requires_approval=requires_approval,
        ),
        metadata=admin,
    )
    request = pb.SetFacilityHoursRequest(
        facility_id=made.facility_id, hours=ALL_DAY if hours is None else hours
    )
    return await stub.SetFacilityHours(request, metadata=admin)


def quarter(days: int = 3, quarters: int = 0) -> datetime:
    """A 15-minute boundary `days` ahead (at 00:00 UTC) plus `quarters` quarter hours."""
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=days, minutes=15 * quarters)


def book_request(
    facility: pb.Facility,
    start: datetime,
    end: datetime,
    user_id: str | None = None,
    **fields: object,
) -> pb.BookFacilityRequest:
    base: dict[str, object] = {
        "facility_id": facility.facility_id,
        "user_id": user_id or str(uuid.uuid4()),
        "start_time": stamp(start),
        "end_time": stamp(end),
        "title": "Team Standup",
        "attendee_count": 5,
    }
    return pb.BookFacilityRequest(**{**base, **fields})


async def conflicts(database_url: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        row = await (await conn.execute(CONFLICTS)).fetchone()
        assert row is not None
        return int(row[0])


async def facility_counts(database_url: str) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        counts = {}
        for name, query in COUNTS.items():
            row = await (await conn.execute(query)).fetchone()
            assert row is not None
            counts[name] = int(row[0])
        return counts
