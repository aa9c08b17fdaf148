"""UpdateFacilityBooking against the real booking service: a move into a free range writes the
audit row `updated` (old and new values) and facility.booking_updated; a move onto another
booking is TIME_CONFLICT naming that booking's local range and changes nothing; of two
concurrent moves into the same free hour exactly one wins; another user is PERMISSION_DENIED
and nothing is written. The seed's conflict query answers 0 after every test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import grpc
import psycopg
import pytest
import pytest_asyncio
from tiket.booking.v1 import facility_pb2 as pb

from libs.auth import Role
from services.booking.tests import facility_support as fs
from services.booking.tests.stack import Stack, stamp
from tests.support.grpc_errors import bad_request_fields, error_reason

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def no_conflicts(stack: Stack) -> AsyncIterator[None]:
    yield
    assert await fs.conflicts(stack.database_url()) == 0


def move(
    booking: pb.FacilityBooking, start: datetime, end: datetime, **fields: object
) -> pb.UpdateFacilityBookingRequest:
    base: dict[str, object] = {
        "booking_id": booking.booking_id,
        "user_id": booking.user_id,
        "start_time": stamp(start),
        "end_time": stamp(end),
    }
    return pb.UpdateFacilityBookingRequest(**{**base, **fields})


async def history(stack: Stack, booking_id: str) -> tuple[list[dict], list[str]]:
    """The booking's audit rows and the types of its events on the bus."""
    async with await psycopg.AsyncConnection.connect(stack.database_url()) as conn:
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        await cur.execute(
            """SELECT action, changed_by, request_id, old_values, new_values
                 FROM facility_booking_audit_log WHERE booking_id = %s ORDER BY id""",
            (booking_id,),
        )
        rows = await cur.fetchall()
        found = await conn.execute(
            """SELECT o.event_type FROM event_store e JOIN outbox o ON o.event_id = e.event_id
                WHERE e.aggregate_id = %s ORDER BY e.seq""",
            (booking_id,),
        )
        return rows, [row[0] for row in await found.fetchall()]


async def test_a_move_into_a_free_range_is_audited_and_announced(stack: Stack) -> None:
    stub, room = fs.facilities(stack), await fs.new_facility(stack)
    user = str(uuid.uuid4())
    booked = await stub.BookFacility(
        fs.book_request(room, fs.quarter(3, 40), fs.quarter(3, 44), user),
        metadata=stack.as_rider(user),
    )
    asked = move(booked, fs.quarter(3, 48), fs.quarter(3, 54), attendee_count=7, request_id="m1")
    moved = await stub.UpdateFacilityBooking(
        asked, metadata=[*stack.as_rider(user), ("x-request-id", "req-move-1")]
    )
    assert moved.booking_id == booked.booking_id
    assert moved.start_time == stamp(fs.quarter(3, 48)) and moved.end_time == stamp(
        fs.quarter(3, 54)
    )
    assert moved.attendee_count == 7 and moved.title == booked.title
    assert moved.status == pb.FACILITY_BOOKING_STATUS_CONFIRMED
    # A retry finds the booking as asked: unchanged, nothing written.
    before = await fs.facility_counts(stack.database_url())
    assert await stub.UpdateFacilityBooking(asked, metadata=stack.as_rider(user)) == moved
    assert await fs.facility_counts(stack.database_url()) == before

    rows, kinds = await history(stack, booked.booking_id)
    assert [r["action"] for r in rows] == ["created", "updated"]
    updated = rows[1]
    assert updated["request_id"] == "req-move-1" and updated["changed_by"] == f"user:{user}"
    assert updated["old_values"]["start_time"] == fs.quarter(3, 40).isoformat()
    assert updated["old_values"]["attendee_count"] == 5
    assert updated["new_values"]["start_time"] == fs.quarter(3, 48).isoformat()
    assert updated["new_values"]["end_time"] == fs.quarter(3, 54).isoformat()
    assert updated["new_values"]["attendee_count"] == 7
    assert kinds == ["facility.booking_created", "facility.booking_updated"]

    # Resizing over its own old range is no conflict; staff may move anyone's booking.
    operator = stack.metadata(Role.OPERATOR, "frontdesk")
    resized = await stub.UpdateFacilityBooking(
        move(moved, fs.quarter(3, 46), fs.quarter(3, 56), user_id=""), metadata=operator
    )
    assert resized.start_time == stamp(fs.quarter(3, 46)) and resized.attendee_count == 7
    rows, _ = await history(stack, booked.booking_id)
    assert [(r["action"], r["changed_by"]) for r in rows][-1] == ("updated", "operator:frontdesk")


async def test_a_move_onto_another_booking_is_a_conflict_and_changes_nothing(
    stack: Stack,
) -> None:
    stub = fs.facilities(stack)
    room = await fs.new_facility(stack, time_zone="Asia/Jakarta")
    mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    booked = await stub.BookFacility(
        fs.book_request(room, fs.quarter(4, 40), fs.quarter(4, 44), mine),
        metadata=stack.as_rider(mine),
    )
    await stub.BookFacility(
        fs.book_request(room, fs.quarter(4, 48), fs.quarter(4, 52), theirs),
        metadata=stack.as_rider(theirs),
    )
    before = await fs.facility_counts(stack.database_url())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.UpdateFacilityBooking(
            move(booked, fs.quarter(4, 46), fs.quarter(4, 50)), metadata=stack.as_rider(mine)
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(refused.value) == "TIME_CONFLICT"
    details = refused.value.details() or ""
    other_local = (fs.quarter(4, 48) + timedelta(hours=7)).replace(tzinfo=None)
    assert f"{other_local:%Y-%m-%dT%H:%M}+07:00" in details and theirs not in details
    assert await fs.facility_counts(stack.database_url()) == before
    got = await stub.GetFacilityBooking(
        pb.GetFacilityBookingRequest(booking_id=booked.booking_id, user_id=mine),
        metadata=stack.as_rider(mine),
    )
    assert got.start_time == booked.start_time and got.end_time == booked.end_time


async def attempt(stack: Stack, request: pb.UpdateFacilityBookingRequest) -> object:
    """The moved booking, or the refusal."""
    try:
        return await fs.facilities(stack).UpdateFacilityBooking(
            request, metadata=stack.as_rider(request.user_id), timeout=30
        )
    except grpc.aio.AioRpcError as error:
        return error


async def test_of_two_concurrent_moves_into_one_free_hour_exactly_one_wins(stack: Stack) -> None:
    stub = fs.facilities(stack)
    for round_ in range(5):
        room = await fs.new_facility(stack)
        day = 5 + round_
        users = [str(uuid.uuid4()), str(uuid.uuid4())]
        booked = [
            await stub.BookFacility(
                fs.book_request(room, fs.quarter(day, 4 * i), fs.quarter(day, 4 * i + 4), user),
                metadata=stack.as_rider(user),
            )
            for i, user in enumerate(users)
        ]
        free_start, free_end = fs.quarter(day, 40), fs.quarter(day, 44)

        moves = [move(b, free_start, free_end) for b in booked]
        answers = await asyncio.gather(*(attempt(stack, m) for m in moves))
        won = [a for a in answers if isinstance(a, pb.FacilityBooking)]
        lost = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
        assert len(won) == 1 and len(lost) == 1, answers
        assert lost[0].code() == grpc.StatusCode.FAILED_PRECONDITION, lost[0].details()
        assert error_reason(lost[0]) == "TIME_CONFLICT"
        loser = next(b for b in booked if b.booking_id != won[0].booking_id)
        async with await psycopg.AsyncConnection.connect(stack.database_url()) as conn:
            cur = await conn.execute(
                """SELECT booking_id::text, start_time FROM facility_bookings
                    WHERE facility_id = %s ORDER BY start_time""",
                (room.facility_id,),
            )
            rows = dict(await cur.fetchall())
        assert rows[won[0].booking_id] == free_start
        assert stamp(rows[loser.booking_id]) == loser.start_time  # where it was
        rows_won, _ = await history(stack, won[0].booking_id)
        rows_lost, _ = await history(stack, loser.booking_id)
        assert [r["action"] for r in rows_won] == ["created", "updated"]
        assert [r["action"] for r in rows_lost] == ["created"]


async def test_another_user_cannot_move_a_booking_and_nothing_is_written(stack: Stack) -> None:
    stub, room = fs.facilities(stack), await fs.new_facility(stack)
    owner, stranger = str(uuid.uuid4()), str(uuid.uuid4())
    booked = await stub.BookFacility(
        fs.book_request(room, fs.quarter(3, 20), fs.quarter(3, 24), owner),
        metadata=stack.as_rider(owner),
    )
    before = await fs.facility_counts(stack.database_url())
    for user_id in (stranger, owner):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.UpdateFacilityBooking(
                move(booked, fs.quarter(3, 28), fs.quarter(3, 32), user_id=user_id),
                metadata=stack.as_rider(stranger),
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await fs.facility_counts(stack.database_url()) == before


async def test_a_move_keeps_the_rules_of_booking(stack: Stack) -> None:
    stub = fs.facilities(stack)
    start = fs.quarter(3, 40)
    office = await fs.new_facility(
        stack, [fs.window(start.isoweekday(), (9, 0), (12, 0))], time_zone="UTC", capacity=6
    )
    user = str(uuid.uuid4())
    rider = stack.as_rider(user)
    booked = await stub.BookFacility(
        fs.book_request(office, start, start + timedelta(hours=1), user), metadata=rider
    )
    invalid = [
        (move(booked, start + timedelta(minutes=7), start + timedelta(hours=1)), "start_time"),
        (move(booked, start, start + timedelta(hours=25)), "end_time"),
        (move(booked, start, start), "end_time"),
        (move(booked, fs.quarter(-1), fs.quarter(-1, 4)), "start_time"),
        (move(booked, start, start + timedelta(hours=1), attendee_count=1001), "attendee_count"),
        (move(booked, start, start + timedelta(hours=1), booking_id="b-1"), "booking_id"),
    ]
    refusals = [
        (move(booked, start + timedelta(hours=2), start + timedelta(hours=3)), "FACILITY_CLOSED"),
        (move(booked, start, start + timedelta(hours=1), attendee_count=7), "OVER_CAPACITY"),
    ]
    before = await fs.facility_counts(stack.database_url())
    for request, field in invalid:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.UpdateFacilityBooking(request, metadata=rider)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert bad_request_fields(refused.value) == [field]
    for request, reason in refusals:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.UpdateFacilityBooking(request, metadata=rider)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, reason
        assert error_reason(refused.value) == reason
    unknown = move(booked, start, start + timedelta(hours=1), booking_id=str(uuid.uuid4()))
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.UpdateFacilityBooking(unknown, metadata=stack.metadata())
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert await fs.facility_counts(stack.database_url()) == before

    await stub.CancelFacilityBooking(
        pb.CancelFacilityBookingRequest(booking_id=booked.booking_id, user_id=user), metadata=rider
    )
    with pytest.raises(grpc.aio.AioRpcError) as cancelled:
        await stub.UpdateFacilityBooking(
            move(booked, start, start + timedelta(minutes=30)), metadata=rider
        )
    assert error_reason(cancelled.value) == "BOOKING_NOT_UPDATABLE"


async def test_a_users_move_of_an_approved_booking_needs_approval_again(stack: Stack) -> None:
    """On a facility that needs approval, staff approved one range and count: the user moving
    or resizing the booking makes it PENDING again (the approval no longer says anything about
    it); staff moving it keep it as it is."""
    stub, room = fs.facilities(stack), await fs.new_facility(stack, requires_approval=True)
    user = str(uuid.uuid4())
    booked = await stub.BookFacility(
        fs.book_request(room, fs.quarter(4, 40), fs.quarter(4, 44), user),
        metadata=stack.as_rider(user),
    )
    approve = pb.DecideFacilityBookingRequest(booking_id=booked.booking_id, reason="ok")
    approved = await stub.ApproveFacilityBooking(approve, metadata=stack.metadata())
    assert approved.status == pb.FACILITY_BOOKING_STATUS_CONFIRMED

    moved = await stub.UpdateFacilityBooking(
        move(approved, fs.quarter(4, 48), fs.quarter(4, 56), attendee_count=15),
        metadata=stack.as_rider(user),
    )
    assert moved.status == pb.FACILITY_BOOKING_STATUS_PENDING
    assert (moved.decided_by, moved.decision_reason) == ("", "")
    rows, _ = await history(stack, booked.booking_id)
    assert rows[-1]["action"] == "updated"
    assert (rows[-1]["old_values"]["status"], rows[-1]["new_values"]["status"]) == (
        "confirmed",
        "pending",
    )

    approved = await stub.ApproveFacilityBooking(approve, metadata=stack.metadata())
    assert approved.status == pb.FACILITY_BOOKING_STATUS_CONFIRMED
    by_staff = await stub.UpdateFacilityBooking(
        move(approved, fs.quarter(4, 60), fs.quarter(4, 68), user_id=""),
        metadata=stack.metadata(Role.OPERATOR, "frontdesk"),
    )
    assert by_staff.status == pb.FACILITY_BOOKING_STATUS_CONFIRMED
    assert by_staff.decided_by == "admin:tests"
