"""Every refusal of BookFacility names its field or reason, and writes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from tiket.booking.v1 import facility_pb2 as pb

from services.booking.tests.facility_support import (
    book_request,
    conflicts,
    facilities,
    facility_counts,
    new_facility,
    quarter,
    window,
)
from services.booking.tests.stack import Stack, stamp
from tests.support.grpc_errors import bad_request_fields, error_reason

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]
START = quarter(3, 40)  # 10:00 UTC, three days ahead
Change = Callable[[pb.BookFacilityRequest], None]


def _set(**fields: object) -> Change:
    def change(request: pb.BookFacilityRequest) -> None:
        for name, value in fields.items():
            if isinstance(value, datetime):
                getattr(request, name).CopyFrom(stamp(value))
            else:
                setattr(request, name, value)

    return change


INVALID = [
    ("12:07 start", _set(start_time=START + timedelta(minutes=7)), "start_time"),
    ("seconds", _set(end_time=START + timedelta(minutes=30, seconds=1)), "end_time"),
    ("25 hours", _set(end_time=START + timedelta(hours=25)), "end_time"),
    ("end before start", _set(end_time=START - timedelta(minutes=15)), "end_time"),
    ("end at start", _set(end_time=START), "end_time"),
    ("past", _set(start_time=quarter(-1), end_time=quarter(-1, 4)), "start_time"),
    ("0 attendees", _set(attendee_count=0), "attendee_count"),
    ("1001 attendees", _set(attendee_count=1001), "attendee_count"),
    ("no title", _set(title="  "), "title"),
    ("junk facility", _set(facility_id="room-1"), "facility_id"),
    ("junk user", _set(user_id="42"), "user_id"),
    ("ftp url", _set(external_meeting_url="ftp://x"), "external_meeting_url"),
]


@pytest.mark.parametrize(("case", "change", "field"), INVALID, ids=[c[0] for c in INVALID])
async def test_bad_input_names_the_field_and_writes_nothing(
    stack: Stack, case: str, change: Change, field: str
) -> None:
    room = await new_facility(stack)
    request = book_request(room, START, START + timedelta(hours=1))
    change(request)
    before = await facility_counts(stack.database_url())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await facilities(stack).BookFacility(request, metadata=stack.metadata())
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
    assert bad_request_fields(refused.value) == [field]
    assert await facility_counts(stack.database_url()) == before


async def test_business_refusals_name_their_reason_and_write_nothing(stack: Stack) -> None:
    stub = facilities(stack)
    weekday = START.isoweekday()
    office = await new_facility(stack, [window(weekday, (8, 0), (9, 0))])
    small = await new_facility(stack, capacity=4)
    closed_down = await stub.CreateFacility(
        pb.CreateFacilityRequest(name="Old hall", capacity=10, inactive=True),
        metadata=stack.metadata(),
    )
    cases = [
        (book_request(office, START, START + timedelta(hours=1)), "FACILITY_CLOSED"),
        (book_request(small, START, START + timedelta(hours=1), attendee_count=5), "OVER_CAPACITY"),
        (book_request(closed_down, START, START + timedelta(hours=1)), "FACILITY_INACTIVE"),
    ]
    before = await facility_counts(stack.database_url())
    for request, reason in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.BookFacility(request, metadata=stack.metadata())
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, reason
        assert error_reason(refused.value) == reason
    with pytest.raises(grpc.aio.AioRpcError) as closed:
        await stub.BookFacility(cases[0][0], metadata=stack.metadata())
    assert "08:00-09:00" in (closed.value.details() or "")
    unknown = book_request(small, START, START + timedelta(hours=1), facility_id=str(uuid.uuid4()))
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.BookFacility(unknown, metadata=stack.metadata())
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert await facility_counts(stack.database_url()) == before
    assert await conflicts(stack.database_url()) == 0


async def test_a_conflict_names_the_local_time_range_not_the_owner(stack: Stack) -> None:
    stub = facilities(stack)
    room = await new_facility(stack, time_zone="Asia/Jakarta")
    owner = str(uuid.uuid4())
    await stub.BookFacility(
        book_request(room, START, START + timedelta(hours=1), owner), metadata=stack.metadata()
    )
    before = await facility_counts(stack.database_url())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.BookFacility(
            book_request(room, START + timedelta(minutes=30), START + timedelta(hours=2)),
            metadata=stack.metadata(),
        )
    assert error_reason(refused.value) == "TIME_CONFLICT"
    details = refused.value.details() or ""
    local = START.astimezone(UTC).replace(tzinfo=None) + timedelta(hours=7)
    assert f"{local:%Y-%m-%dT%H:%M}+07:00" in details and owner not in details
    assert await facility_counts(stack.database_url()) == before
