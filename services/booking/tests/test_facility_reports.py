"""GetFacilityCalendar, GetFacilityUtilizationReport and CheckFacilityHealth against the real
booking service: staff see every field of a calendar, a user the times only of others'
bookings; utilization per local day of a known set of bookings across Berlin's spring clock
change (a 23-hour day), clipped to the opening hours; the health check passes."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import grpc
import pytest
from tiket.booking.v1 import facility_pb2 as pb

from libs.auth import Role
from services.booking.tests import facility_support as fs
from services.booking.tests.stack import Stack, stamp
from tests.support.grpc_errors import bad_request_fields

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]
BERLIN = ZoneInfo("Europe/Berlin")


def berlin(day: int, hour: int, month: int = 3) -> datetime:
    return datetime(2027, month, day, hour, tzinfo=BERLIN)


async def test_staff_see_the_whole_calendar_a_user_only_their_own_details(
    stack: Stack,
) -> None:
    stub, room = fs.facilities(stack), await fs.new_facility(stack)
    mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    first = await stub.BookFacility(
        fs.book_request(room, fs.quarter(3, 36), fs.quarter(3, 40), mine, title="Mine"),
        metadata=stack.as_rider(mine),
    )
    second = await stub.BookFacility(
        fs.book_request(room, fs.quarter(3, 44), fs.quarter(3, 48), theirs, title="Secret"),
        metadata=stack.as_rider(theirs),
    )
    gone = await stub.BookFacility(
        fs.book_request(room, fs.quarter(3, 52), fs.quarter(3, 56), mine),
        metadata=stack.as_rider(mine),
    )
    await stub.CancelFacilityBooking(
        pb.CancelFacilityBookingRequest(booking_id=gone.booking_id, user_id=mine),
        metadata=stack.as_rider(mine),
    )
    await stub.BookFacility(  # outside the range asked for
        fs.book_request(room, fs.quarter(4, 36), fs.quarter(4, 40), mine),
        metadata=stack.as_rider(mine),
    )
    asked = pb.GetFacilityCalendarRequest(
        facility_id=room.facility_id, from_time=stamp(fs.quarter(3)), to_time=stamp(fs.quarter(4))
    )
    staff = await stub.GetFacilityCalendar(asked, metadata=stack.metadata(Role.OPERATOR, "desk"))
    assert [b.booking_id for b in staff.bookings] == [first.booking_id, second.booking_id]
    assert [b.title for b in staff.bookings] == ["Mine", "Secret"]
    assert staff.bookings[1].user_id == theirs

    user = await stub.GetFacilityCalendar(asked, metadata=stack.as_rider(mine))
    own, other = user.bookings
    assert own.title == "Mine" and own.user_id == mine and own.attendee_count == 5
    assert other.start_time == second.start_time and other.end_time == second.end_time
    assert other.status == pb.FACILITY_BOOKING_STATUS_CONFIRMED and other.time_zone
    assert (other.local_start, other.local_end) == (second.local_start, second.local_end)
    assert other.local_start
    assert (other.user_id, other.title, other.created_by, other.attendee_count) == ("", "", "", 0)

    too_long = pb.GetFacilityCalendarRequest(
        facility_id=room.facility_id, from_time=stamp(fs.quarter(3)), to_time=stamp(fs.quarter(35))
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.GetFacilityCalendar(too_long, metadata=stack.metadata())
    assert bad_request_fields(refused.value) == ["to_time"]


async def test_utilization_per_local_day_across_berlins_spring_change(stack: Stack) -> None:
    """Fri 26 - Mon 29 March 2027 (clocks go forward on Sunday the 28th). Hours at the end:
    09:00-17:00 every day but Sunday, open all day (23 hours). Bookings made while the room was
    open all day, so one reaches outside the final hours and is clipped."""
    stub = fs.facilities(stack)
    room = await fs.new_facility(
        stack, fs.ALL_DAY, time_zone="Europe/Berlin", requires_approval=True
    )
    staff, user = stack.metadata(), str(uuid.uuid4())
    confirmed = [
        (berlin(26, 9), berlin(26, 10)),  # Fri 60
        (berlin(26, 16), berlin(26, 18)),  # Fri 60 of 120 (closes 17:00)
        (berlin(28, 1), berlin(28, 4)),  # Sun 01:00-04:00 local: 2 real hours
        (berlin(28, 23), berlin(29, 10)),  # Sun 60, Mon 60 (opens 09:00)
    ]
    for start, end in confirmed:
        await stub.BookFacility(fs.book_request(room, start, end, user), metadata=staff)
    pending = await stub.BookFacility(
        fs.book_request(room, berlin(27, 10), berlin(27, 11), user), metadata=stack.as_rider(user)
    )
    assert pending.status == pb.FACILITY_BOOKING_STATUS_PENDING
    cancelled = await stub.BookFacility(
        fs.book_request(room, berlin(27, 12), berlin(27, 13), user), metadata=staff
    )
    await stub.CancelFacilityBooking(
        pb.CancelFacilityBookingRequest(booking_id=cancelled.booking_id, reason="x"),
        metadata=staff,
    )
    other = await fs.new_facility(stack, fs.ALL_DAY, time_zone="Europe/Berlin")
    await stub.BookFacility(
        fs.book_request(other, berlin(26, 9), berlin(26, 17), user), metadata=staff
    )
    hours = [fs.window(day, (9, 0), (17, 0)) for day in range(1, 7)] + [
        fs.window(7, (0, 0), (24, 0))
    ]
    await stub.SetFacilityHours(
        pb.SetFacilityHoursRequest(facility_id=room.facility_id, hours=hours), metadata=staff
    )

    report = await stub.GetFacilityUtilizationReport(
        pb.GetFacilityUtilizationReportRequest(
            facility_id=room.facility_id,
            from_time=stamp(berlin(26, 0)),
            to_time=stamp(berlin(30, 0)),
        ),
        metadata=staff,
    )
    rows = [(d.date, d.booked_minutes, d.open_minutes, d.utilization_percent) for d in report.days]
    assert rows == [
        ("2027-03-26", 120, 480, 25.0),
        ("2027-03-27", 0, 480, 0.0),
        ("2027-03-28", 180, 23 * 60, 13.04),
        ("2027-03-29", 60, 480, 12.5),
    ]
    assert {d.facility_id for d in report.days} == {room.facility_id}

    every = await stub.GetFacilityUtilizationReport(
        pb.GetFacilityUtilizationReportRequest(
            from_time=stamp(berlin(26, 0)), to_time=stamp(berlin(27, 0))
        ),
        metadata=staff,
    )
    days = {(d.facility_id, d.date): d.booked_minutes for d in every.days}
    assert days[(room.facility_id, "2027-03-26")] == 120
    assert days[(other.facility_id, "2027-03-26")] == 480

    for refused_range, field in (
        ((berlin(1, 0), berlin(1, 0, month=4) + timedelta(days=1)), "to_time"),
        ((berlin(26, 0), berlin(26, 0)), "to_time"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetFacilityUtilizationReport(
                pb.GetFacilityUtilizationReportRequest(
                    facility_id=room.facility_id,
                    from_time=stamp(refused_range[0]),
                    to_time=stamp(refused_range[1]),
                ),
                metadata=staff,
            )
        assert bad_request_fields(refused.value) == [field]
    with pytest.raises(grpc.aio.AioRpcError) as by_user:
        await stub.GetFacilityUtilizationReport(
            pb.GetFacilityUtilizationReportRequest(facility_id=room.facility_id),
            metadata=stack.as_rider(user),
        )
    assert by_user.value.code() == grpc.StatusCode.PERMISSION_DENIED
    unknown = pb.GetFacilityUtilizationReportRequest(
        facility_id=str(uuid.uuid4()), from_time=stamp(berlin(26, 0)), to_time=stamp(berlin(27, 0))
    )
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetFacilityUtilizationReport(unknown, metadata=staff)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_health_check_passes_for_staff_only(stack: Stack) -> None:
    stub = fs.facilities(stack)
    answer = await stub.CheckFacilityHealth(
        pb.CheckFacilityHealthRequest(), metadata=stack.metadata()
    )
    checks = {c.check_name: c for c in answer.checks}
    assert set(checks) == {"booking_conflicts", "index_usage"}
    assert (checks["booking_conflicts"].status, checks["booking_conflicts"].value) == ("PASS", 0)
    assert checks["index_usage"].status in {"PASS", "WARN"}
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CheckFacilityHealth(
            pb.CheckFacilityHealthRequest(), metadata=stack.as_rider(str(uuid.uuid4()))
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
