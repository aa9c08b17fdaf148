"""FacilityService against the real booking service: booking, reading and cancelling with the
audit log's request context, approval, the upcoming list, 200 concurrent overlapping requests
(exactly a maximal non-overlapping set succeeds), a week's search across a DST change. The
seed's conflict query answers 0 after every test."""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import grpc
import psycopg
import pytest
import pytest_asyncio
from tiket.booking.v1 import facility_pb2 as pb

from libs.auth import Role
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
from tests.support.grpc_errors import error_reason

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]
BERLIN = ZoneInfo("Europe/Berlin")
CONFIRMED = pb.FACILITY_BOOKING_STATUS_CONFIRMED
PENDING = pb.FACILITY_BOOKING_STATUS_PENDING


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def no_conflicts(stack: Stack) -> AsyncIterator[None]:
    yield
    assert await conflicts(stack.database_url()) == 0


async def audit_rows(stack: Stack, booking_id: str) -> list[dict]:
    async with await psycopg.AsyncConnection.connect(stack.database_url()) as conn:
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        await cur.execute(
            """SELECT action, changed_by, request_id, host(ip_address) AS ip, user_agent,
                      old_values, new_values
                 FROM facility_booking_audit_log WHERE booking_id = %s ORDER BY id""",
            (booking_id,),
        )
        return await cur.fetchall()


async def bus_events(stack: Stack, booking_id: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(stack.database_url()) as conn:
        cur = await conn.execute(
            """SELECT o.event_type FROM event_store e JOIN outbox o ON o.event_id = e.event_id
                WHERE e.aggregate_id = %s ORDER BY e.seq""",
            (booking_id,),
        )
        return [row[0] for row in await cur.fetchall()]


async def test_a_user_books_reads_and_cancels_with_an_audit_row_each(stack: Stack) -> None:
    stub, room = facilities(stack), await new_facility(stack)
    user, stranger = str(uuid.uuid4()), str(uuid.uuid4())
    mine = [*stack.as_rider(user), ("x-request-id", "req-book-1")]
    asked = book_request(room, quarter(3, 36), quarter(3, 40), user, request_id="b1")
    booked = await stub.BookFacility(asked, metadata=mine)
    assert booked.status == CONFIRMED and booked.created_by == f"user:{user}"
    assert booked.time_zone == "Asia/Jakarta"
    jakarta = ZoneInfo("Asia/Jakarta")  # the local times, as FreeWindow gives them
    assert booked.local_start == quarter(3, 36).astimezone(jakarta).isoformat()
    assert booked.local_end == quarter(3, 40).astimezone(jakarta).isoformat()
    assert booked.local_start.endswith("+07:00")
    assert await stub.BookFacility(asked, metadata=mine) == booked  # a retry: the first booking
    got = await stub.GetFacilityBooking(
        pb.GetFacilityBookingRequest(booking_id=booked.booking_id, user_id=user),
        metadata=stack.as_rider(user),
    )
    assert got.booking_id == booked.booking_id

    before = await facility_counts(stack.database_url())
    for call, request in (
        (stub.GetFacilityBooking, pb.GetFacilityBookingRequest),
        (stub.CancelFacilityBooking, pb.CancelFacilityBookingRequest),
    ):
        for user_id in (stranger, user):  # their own id, or the owner's
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(
                    request(booking_id=booked.booking_id, user_id=user_id),
                    metadata=stack.as_rider(stranger),
                )
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await facility_counts(stack.database_url()) == before

    cancel = pb.CancelFacilityBookingRequest(booking_id=booked.booking_id, user_id=user)
    cancelled = await stub.CancelFacilityBooking(
        cancel, metadata=[*stack.as_rider(user), ("x-request-id", "req-cancel-1")]
    )
    assert cancelled.status == pb.FACILITY_BOOKING_STATUS_CANCELLED
    assert cancelled.cancelled_by == f"user:{user}"
    assert await stub.CancelFacilityBooking(cancel, metadata=stack.as_rider(user)) == cancelled

    rows = await audit_rows(stack, booked.booking_id)
    assert [r["action"] for r in rows] == ["created", "cancelled"]
    assert [r["request_id"] for r in rows] == ["req-book-1", "req-cancel-1"]
    assert all(r["ip"] == "127.0.0.1" and r["user_agent"] for r in rows)
    assert rows[0]["old_values"] is None and rows[0]["new_values"]["status"] == "confirmed"
    assert rows[1]["old_values"]["status"] == "confirmed"
    assert rows[1]["new_values"]["status"] == "cancelled"
    assert await bus_events(stack, booked.booking_id) == [
        "facility.booking_created",
        "facility.booking_cancelled",
    ]
    # What the rider is told of names the room and where it is (seed 003's facility_location).
    payloads = await bus_payloads(stack, booked.booking_id)
    assert {(p["facilityName"], p["facilityLocation"]) for p in payloads} == {
        (room.name, "Floor 3")
    }


async def bus_payloads(stack: Stack, booking_id: str) -> list[dict]:
    async with await psycopg.AsyncConnection.connect(stack.database_url()) as conn:
        cur = await conn.execute(
            """SELECT e.payload FROM event_store e JOIN outbox o ON o.event_id = e.event_id
                WHERE e.aggregate_id = %s ORDER BY e.seq""",
            (booking_id,),
        )
        return [row[0] for row in await cur.fetchall()]


async def test_staff_book_for_a_user_and_admin_cancel_with_a_reason(stack: Stack) -> None:
    stub, room = facilities(stack), await new_facility(stack)
    user = str(uuid.uuid4())
    operator = stack.metadata(Role.OPERATOR, "frontdesk")
    proxy = await stub.BookFacility(
        book_request(room, quarter(4, 8), quarter(4, 12), user), metadata=operator
    )
    assert proxy.user_id == user and proxy.created_by == "operator:frontdesk"
    mine = await stub.ListMyFacilityBookings(
        pb.ListMyFacilityBookingsRequest(user_id=user), metadata=stack.as_rider(user)
    )
    assert [b.booking_id for b in mine.bookings] == [proxy.booking_id]

    cancel = pb.CancelFacilityBookingRequest(booking_id=proxy.booking_id)
    with pytest.raises(grpc.aio.AioRpcError) as no_reason:
        await stub.CancelFacilityBooking(cancel, metadata=stack.metadata())
    assert no_reason.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    cancel.reason = "room needed for an inspection"
    cancelled = await stub.CancelFacilityBooking(cancel, metadata=stack.metadata())
    assert cancelled.cancellation_reason == "room needed for an inspection"
    rows = await audit_rows(stack, proxy.booking_id)
    assert [(r["action"], r["changed_by"]) for r in rows] == [
        ("created", "operator:frontdesk"),
        ("admin_cancelled", "admin:tests"),
    ]


async def test_the_forwarded_address_of_an_untrusted_peer_is_ignored(stack: Stack) -> None:
    stub, room = facilities(stack), await new_facility(stack)
    user = str(uuid.uuid4())
    forged = [*stack.as_rider(user), ("x-forwarded-for", "203.0.113.9")]
    booked = await stub.BookFacility(
        book_request(room, quarter(5, 4), quarter(5, 8), user), metadata=forged
    )
    (row,) = await audit_rows(stack, booked.booking_id)
    assert row["ip"] == "127.0.0.1"  # no TIKET_TRUSTED_PROXIES: the peer's own address
    assert row["request_id"]  # one is made when the caller sends none


async def test_approval_pending_blocks_time_until_rejected(stack: Stack) -> None:
    stub = facilities(stack)
    room = await new_facility(stack, requires_approval=True)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    start, end = quarter(6, 40), quarter(6, 44)
    pending = await stub.BookFacility(
        book_request(room, start, end, first), metadata=stack.as_rider(first)
    )
    assert pending.status == PENDING
    with pytest.raises(grpc.aio.AioRpcError) as blocked:
        await stub.BookFacility(
            book_request(room, start, end, second), metadata=stack.as_rider(second)
        )
    assert error_reason(blocked.value) == "TIME_CONFLICT"
    with pytest.raises(grpc.aio.AioRpcError) as by_user:
        await stub.ApproveFacilityBooking(
            pb.DecideFacilityBookingRequest(booking_id=pending.booking_id),
            metadata=stack.as_rider(first),
        )
    assert by_user.value.code() == grpc.StatusCode.PERMISSION_DENIED
    reject = pb.DecideFacilityBookingRequest(booking_id=pending.booking_id, reason="closed")
    rejected = await stub.RejectFacilityBooking(reject, metadata=stack.metadata())
    assert rejected.status == pb.FACILITY_BOOKING_STATUS_REJECTED
    retaken = await stub.BookFacility(
        book_request(room, start, end, second), metadata=stack.as_rider(second)
    )
    approve = pb.DecideFacilityBookingRequest(booking_id=retaken.booking_id)
    approved = await stub.ApproveFacilityBooking(approve, metadata=stack.metadata())
    assert approved.status == CONFIRMED and approved.decided_by == "admin:tests"
    assert await stub.RejectFacilityBooking(reject, metadata=stack.metadata()) == rejected
    reject.booking_id = retaken.booking_id
    with pytest.raises(grpc.aio.AioRpcError) as decided:
        await stub.RejectFacilityBooking(reject, metadata=stack.metadata())
    assert error_reason(decided.value) == "BOOKING_NOT_PENDING"
    actions = [r["action"] for r in await audit_rows(stack, retaken.booking_id)]
    assert actions == ["created", "approved"]


async def test_upcoming_bookings_are_paged_in_start_order(stack: Stack) -> None:
    stub, room = facilities(stack), await new_facility(stack)
    user = str(uuid.uuid4())
    starts = [quarter(7, 4 * i) for i in range(5)]
    for start in reversed(starts):
        await stub.BookFacility(
            book_request(room, start, start + timedelta(minutes=30), user),
            metadata=stack.as_rider(user),
        )
    seen, token = [], ""
    while True:
        page = await stub.ListMyFacilityBookings(
            pb.ListMyFacilityBookingsRequest(user_id=user, page_size=2, page_token=token),
            metadata=stack.as_rider(user),
        )
        seen += [b.start_time.ToDatetime(tzinfo=UTC) for b in page.bookings]
        if not (token := page.next_page_token):
            break
    assert seen == starts


async def test_concurrent_overlapping_requests_commit_a_maximal_non_overlapping_set(
    stack: Stack,
) -> None:
    """200 requests of random quarter-hour ranges within 12 hours of one facility at once:
    the committed bookings never overlap, and every refused request overlaps one of them."""
    stub, room = facilities(stack), await new_facility(stack)
    rng = random.Random(15)
    base = quarter(9)
    asked = []
    for _ in range(200):
        first = rng.randrange(0, 48 - 1)
        length = rng.randrange(1, 9)
        asked.append(
            (
                base + timedelta(minutes=15 * first),
                base + timedelta(minutes=15 * min(48, first + length)),
            )
        )

    async def attempt(start: datetime, end: datetime) -> object:
        user = str(uuid.uuid4())
        try:
            return await stub.BookFacility(
                book_request(room, start, end, user), metadata=stack.as_rider(user), timeout=60
            )
        except grpc.aio.AioRpcError as error:
            return error

    answers = await asyncio.gather(*(attempt(s, e) for s, e in asked))
    won = [
        (s, e)
        for (s, e), a in zip(asked, answers, strict=True)
        if isinstance(a, pb.FacilityBooking)
    ]
    lost = [
        (s, e, a)
        for (s, e), a in zip(asked, answers, strict=True)
        if not isinstance(a, pb.FacilityBooking)
    ]
    assert won and lost
    for _, _, error in lost:
        assert isinstance(error, grpc.aio.AioRpcError)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
        assert error_reason(error) == "TIME_CONFLICT"
        assert "booked from" in (error.details() or "")
    ordered = sorted(won)
    for (_, end), (start, _) in itertools.pairwise(ordered):
        assert end <= start, "two committed bookings overlap"
    for start, end, _ in lost:
        assert any(s < end and start < e for s, e in won), f"{start}-{end} was refused for nothing"
    async with await psycopg.AsyncConnection.connect(stack.database_url()) as conn:
        cur = await conn.execute(
            """SELECT start_time, end_time FROM facility_bookings
                WHERE facility_id = %s AND status = 'confirmed' ORDER BY start_time""",
            (room.facility_id,),
        )
        assert [tuple(r) for r in await cur.fetchall()] == ordered


async def test_a_week_search_across_berlins_spring_change_keeps_local_hours(
    stack: Stack,
) -> None:
    """Mon 22 - Mon 29 March 2027 (clocks go forward on Sunday the 28th): open 09:00-17:00
    every day, one booking on the Sunday 10:00-11:00 local."""
    stub = facilities(stack)
    hours = [window(day, (9, 0), (17, 0)) for day in range(1, 8)]
    room = await new_facility(stack, hours, time_zone="Europe/Berlin")
    sunday_ten = datetime(2027, 3, 28, 10, 0, tzinfo=BERLIN)
    user = str(uuid.uuid4())
    await stub.BookFacility(
        book_request(room, sunday_ten, sunday_ten + timedelta(hours=1), user),
        metadata=stack.as_rider(user),
    )
    found = await stub.SearchFacilityAvailability(
        pb.SearchFacilityAvailabilityRequest(
            facility_id=room.facility_id,
            from_time=stamp(datetime(2027, 3, 22, tzinfo=BERLIN)),
            to_time=stamp(datetime(2027, 3, 29, tzinfo=BERLIN)),
            min_duration_minutes=30,
        ),
        metadata=stack.as_rider(user),
    )
    assert found.time_zone == "Europe/Berlin"
    local = [(w.local_start, w.local_end) for w in found.windows]
    expected = [
        (f"2027-03-{d}T09:00:00+01:00", f"2027-03-{d}T17:00:00+01:00") for d in range(22, 28)
    ] + [
        ("2027-03-28T09:00:00+02:00", "2027-03-28T10:00:00+02:00"),
        ("2027-03-28T11:00:00+02:00", "2027-03-28T17:00:00+02:00"),
    ]
    assert local == expected
    utc = [w.start_time.ToDatetime(tzinfo=UTC).hour for w in found.windows]
    assert utc == [8] * 6 + [7, 9]  # the same 09:00 local is an hour earlier in UTC


async def test_a_change_of_hours_by_another_replica_is_honoured(stack: Stack) -> None:
    """BookFacility checks against the facility as this replica last read it; hours changed
    behind its back (by SQL here, as another replica would) are read again, both ways."""
    stub, room = facilities(stack), await new_facility(stack)
    user = str(uuid.uuid4())
    booked = book_request(room, quarter(6, 36), quarter(6, 40), user)
    await stub.BookFacility(booked, metadata=stack.as_rider(user))  # the facility now known

    async def set_hours(opens: int, closes: int) -> None:
        async with await psycopg.AsyncConnection.connect(stack.database_url()) as conn:
            await conn.execute(
                """UPDATE facility_hours SET open_minute = %s, close_minute = %s
                    WHERE facility_id = %s""",
                (opens, closes, room.facility_id),
            )
            await conn.execute(
                "UPDATE facilities SET updated_at = clock_timestamp() WHERE facility_id = %s",
                (room.facility_id,),
            )

    await set_hours(0, 60)  # 00:00-01:00 local (Asia/Jakarta, UTC+7)
    before = await facility_counts(stack.database_url())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.BookFacility(
            book_request(room, quarter(6, 44), quarter(6, 48), user), metadata=stack.as_rider(user)
        )
    assert error_reason(refused.value) == "FACILITY_CLOSED"
    assert await facility_counts(stack.database_url()) == before
    await set_hours(0, 1440)
    made = await stub.BookFacility(
        book_request(room, quarter(6, 44), quarter(6, 48), user), metadata=stack.as_rider(user)
    )
    assert made.status == CONFIRMED
    await set_hours(0, 1440)  # a new version, the same hours: BOOK finds it changed, reads it
    again = await stub.BookFacility(
        book_request(room, quarter(6, 48), quarter(6, 52), user), metadata=stack.as_rider(user)
    )
    assert again.status == CONFIRMED


async def test_a_pending_booking_whose_time_has_passed_is_not_approved_but_may_be_rejected(
    stack: Stack,
) -> None:
    """Staff deciding late: approving a meeting that is over confirmed it after the fact."""
    stub = facilities(stack)
    room = await new_facility(stack, requires_approval=True)
    user = str(uuid.uuid4())
    pending = await stub.BookFacility(
        book_request(room, quarter(6, 48), quarter(6, 52), user), metadata=stack.as_rider(user)
    )
    async with await psycopg.AsyncConnection.connect(stack.database_url()) as conn:
        await conn.execute(  # its time passes while nobody decides
            """UPDATE facility_bookings
                  SET start_time = date_trunc('hour', now()) - interval '3 hours',
                      end_time = date_trunc('hour', now()) - interval '2 hours'
                WHERE booking_id = %s""",
            (pending.booking_id,),
        )
    decide = pb.DecideFacilityBookingRequest(booking_id=pending.booking_id, reason="late")
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await stub.ApproveFacilityBooking(decide, metadata=stack.metadata())
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(late.value) == "BOOKING_ENDED"
    rejected = await stub.RejectFacilityBooking(decide, metadata=stack.metadata())
    assert rejected.status == pb.FACILITY_BOOKING_STATUS_REJECTED
    actions = [r["action"] for r in await audit_rows(stack, pending.booking_id)]
    assert actions == ["created", "rejected"]
