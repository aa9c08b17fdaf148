"""BookFacilitySeries and CancelFacilitySeries against the real booking service: a weekly series
across the Europe/Berlin spring change keeps 09:00 local, all-or-nothing refusals and
skip_conflicts, retries, cancelling the rest of a series, other users, bad rules. The seed's
conflict query answers 0 after every test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
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
)
from services.booking.tests.stack import Stack, stamp
from tests.support.grpc_errors import bad_request_fields, error_reason

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]
BERLIN = ZoneInfo("Europe/Berlin")
CONFIRMED = pb.FACILITY_BOOKING_STATUS_CONFIRMED
CANCELLED = pb.FACILITY_BOOKING_STATUS_CANCELLED
HOUR = timedelta(hours=1)


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def no_conflicts(stack: Stack) -> AsyncIterator[None]:
    yield
    assert await conflicts(stack.database_url()) == 0


def spring_change() -> date:
    """The next last Sunday of March (Europe/Berlin's spring change) at least two weeks away."""
    today = datetime.now(UTC).date()
    for year in (today.year, today.year + 1):
        last = date(year, 3, 31)
        sunday = last - timedelta(days=(last.weekday() + 1) % 7)
        if sunday - timedelta(days=14) > today:
            return sunday
    raise AssertionError("unreachable")


def thursdays(count: int = 4, hour: int = 9) -> list[datetime]:
    """`count` weekly Thursdays at `hour`:00 Berlin time (UTC), from ten days before the
    spring change: the first two before it, the others after."""
    first = spring_change() - timedelta(days=10)
    return [
        datetime.combine(first + timedelta(weeks=n), datetime.min.time())
        .replace(hour=hour, tzinfo=BERLIN)
        .astimezone(UTC)
        for n in range(count)
    ]


def series_request(
    room: pb.Facility, user: str, start: datetime, rule: str = "FREQ=WEEKLY;COUNT=4", **fields
) -> pb.BookFacilitySeriesRequest:
    first = book_request(room, start, start + HOUR, user, request_id=f"series-{uuid.uuid4()}")
    return pb.BookFacilitySeriesRequest(first=first, rrule=rule, user_id=user, **fields)


async def refused(call, request, metadata) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(request, metadata=metadata)
    return error.value


async def taken_by_someone(stack: Stack, room: pb.Facility, start: datetime) -> None:
    """A booking of another user overlapping [start, start + 1 h) by half an hour."""
    half = start + timedelta(minutes=30)
    asked = book_request(room, half, half + HOUR)
    await facilities(stack).BookFacility(asked, metadata=stack.metadata())


async def audit_actions(stack: Stack, booking_ids: list[str]) -> list[tuple[str, str | None]]:
    async with await psycopg.AsyncConnection.connect(stack.database_url()) as conn:
        cur = await conn.execute(
            """SELECT action, request_id FROM facility_booking_audit_log
                WHERE booking_id = ANY(%s::uuid[]) ORDER BY id""",
            (booking_ids,),
        )
        return [(row[0], row[1]) for row in await cur.fetchall()]


async def bus_events(stack: Stack, booking_ids: list[str]) -> list[str]:
    async with await psycopg.AsyncConnection.connect(stack.database_url()) as conn:
        cur = await conn.execute(
            """SELECT o.event_type FROM event_store e JOIN outbox o ON o.event_id = e.event_id
                WHERE e.aggregate_id = ANY(%s::uuid[]) ORDER BY e.seq""",
            (booking_ids,),
        )
        return [row[0] for row in await cur.fetchall()]


async def test_a_weekly_series_keeps_nine_local_across_the_spring_change(stack: Stack) -> None:
    stub = facilities(stack)
    room = await new_facility(stack, time_zone="Europe/Berlin")
    user = str(uuid.uuid4())
    mine = [*stack.as_rider(user), ("x-request-id", "req-series-1")]
    starts = thursdays()
    made = await stub.BookFacilitySeries(series_request(room, user, starts[0]), metadata=mine)
    assert [b.start_time.ToDatetime(tzinfo=UTC) for b in made.bookings] == starts
    assert [s.hour for s in starts] == [8, 8, 7, 7]  # UTC: 09:00 CET, then 09:00 CEST
    assert {b.start_time.ToDatetime(tzinfo=UTC).astimezone(BERLIN).hour for b in made.bookings} == {
        9
    }
    assert all(b.end_time.seconds - b.start_time.seconds == 3600 for b in made.bookings)
    assert {b.series_id for b in made.bookings} == {made.series_id}
    assert {b.status for b in made.bookings} == {CONFIRMED}
    assert not made.skipped and not made.skipped_occurrences
    ids = [b.booking_id for b in made.bookings]
    assert await audit_actions(stack, ids) == [("created", "req-series-1")] * 4
    assert await bus_events(stack, ids) == ["facility.booking_created"] * 4
    got = await stub.GetFacilityBooking(
        pb.GetFacilityBookingRequest(booking_id=ids[2], user_id=user), metadata=mine
    )
    assert got.series_id == made.series_id


async def test_all_or_nothing_refuses_naming_the_first_failing_occurrence(stack: Stack) -> None:
    stub = facilities(stack)
    room = await new_facility(stack, time_zone="Europe/Berlin")
    user = str(uuid.uuid4())
    starts = thursdays()
    await taken_by_someone(stack, room, starts[3])
    await taken_by_someone(stack, room, starts[2])
    before = await facility_counts(stack.database_url())
    error = await refused(
        stub.BookFacilitySeries, series_request(room, user, starts[0]), stack.as_rider(user)
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "TIME_CONFLICT"
    third = starts[2].astimezone(BERLIN)
    assert "occurrence 3 of the series" in (error.details() or "")
    assert f"{third:%Y-%m-%d} 09:00 to {third:%Y-%m-%d} 10:00 local time" in (error.details() or "")
    assert await facility_counts(stack.database_url()) == before


async def test_skip_conflicts_lists_exactly_the_conflicting_occurrences(stack: Stack) -> None:
    stub = facilities(stack)
    room = await new_facility(stack, time_zone="Europe/Berlin")
    user, other = str(uuid.uuid4()), str(uuid.uuid4())
    starts = thursdays()
    await taken_by_someone(stack, room, starts[1])
    await taken_by_someone(stack, room, starts[3])
    asked = series_request(room, user, starts[0], skip_conflicts=True)
    made = await stub.BookFacilitySeries(asked, metadata=stack.as_rider(user))
    assert [b.start_time.ToDatetime(tzinfo=UTC) for b in made.bookings] == [starts[0], starts[2]]
    assert [s.ToDatetime(tzinfo=UTC) for s in made.skipped] == [starts[1], starts[3]]
    assert [o.reason for o in made.skipped_occurrences] == ["TIME_CONFLICT"] * 2
    assert made.skipped_occurrences[1].local_start.endswith("T09:00:00+02:00")

    before = await facility_counts(stack.database_url())
    nothing = series_request(room, other, starts[0], skip_conflicts=True)
    error = await refused(stub.BookFacilitySeries, nothing, stack.as_rider(other))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no occurrence can be booked" in (error.details() or "")
    assert await facility_counts(stack.database_url()) == before


async def test_a_retry_applies_nothing_twice(stack: Stack) -> None:
    stub = facilities(stack)
    room = await new_facility(stack, time_zone="Europe/Berlin")
    user = str(uuid.uuid4())
    starts = thursdays()
    await taken_by_someone(stack, room, starts[2])
    asked = series_request(room, user, starts[0], skip_conflicts=True)
    made = await stub.BookFacilitySeries(asked, metadata=stack.as_rider(user))
    before = await facility_counts(stack.database_url())
    assert await stub.BookFacilitySeries(asked, metadata=stack.as_rider(user)) == made
    assert await facility_counts(stack.database_url()) == before

    other_rule = pb.BookFacilitySeriesRequest()
    other_rule.CopyFrom(asked)
    other_rule.rrule = "FREQ=WEEKLY;COUNT=3"
    error = await refused(stub.BookFacilitySeries, other_rule, stack.as_rider(user))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert await facility_counts(stack.database_url()) == before


async def test_concurrent_retries_make_one_series(stack: Stack) -> None:
    stub = facilities(stack)
    room = await new_facility(stack, time_zone="Europe/Berlin")
    user = str(uuid.uuid4())
    asked = series_request(room, user, thursdays()[0])
    before = await facility_counts(stack.database_url())
    answers = await asyncio.gather(
        *(stub.BookFacilitySeries(asked, metadata=stack.as_rider(user)) for _ in range(6))
    )
    assert all(answer == answers[0] for answer in answers)
    after = await facility_counts(stack.database_url())
    assert after["facility_booking_series"] == before["facility_booking_series"] + 1
    assert after["facility_bookings"] == before["facility_bookings"] + 4


async def test_cancel_from_a_middle_occurrence_cancels_the_rest_only(stack: Stack) -> None:
    stub = facilities(stack)
    room = await new_facility(stack, time_zone="Europe/Berlin")
    user = str(uuid.uuid4())
    starts = thursdays()
    made = await stub.BookFacilitySeries(
        series_request(room, user, starts[0]), metadata=stack.as_rider(user)
    )
    ids = [b.booking_id for b in made.bookings]
    cancel = pb.CancelFacilitySeriesRequest(
        series_id=made.series_id, user_id=user, from_time=stamp(starts[2])
    )
    mine = [*stack.as_rider(user), ("x-request-id", "req-cancel-rest")]
    rest = await stub.CancelFacilitySeries(cancel, metadata=mine)
    assert [b.booking_id for b in rest.cancelled] == ids[2:]
    assert {(b.status, b.cancelled_by) for b in rest.cancelled} == {(CANCELLED, f"user:{user}")}
    calendar = await stub.GetFacilityCalendar(
        pb.GetFacilityCalendarRequest(
            facility_id=room.facility_id,
            from_time=stamp(starts[0]),
            to_time=stamp(starts[3] + HOUR),
        ),
        metadata=stack.as_rider(user),
    )
    assert [b.booking_id for b in calendar.bookings] == ids[:2]
    rows = await audit_actions(stack, ids[2:])
    assert [action for action, _ in rows] == ["created"] * 2 + ["cancelled"] * 2
    assert [request_id for _, request_id in rows[2:]] == ["req-cancel-rest"] * 2
    assert (
        await bus_events(stack, ids[2:])
        == ["facility.booking_created"] * 2 + ["facility.booking_cancelled"] * 2
    )

    before = await facility_counts(stack.database_url())
    assert await stub.CancelFacilitySeries(cancel, metadata=mine) == rest  # a retry
    assert await facility_counts(stack.database_url()) == before

    staff = pb.CancelFacilitySeriesRequest(series_id=made.series_id, reason="room closed")
    everything = await stub.CancelFacilitySeries(staff, metadata=stack.metadata(Role.OPERATOR))
    assert [b.booking_id for b in everything.cancelled] == ids
    assert (await audit_actions(stack, ids[:1]))[-1][0] == "admin_cancelled"


async def test_another_user_is_denied_and_nothing_is_written(stack: Stack) -> None:
    stub = facilities(stack)
    room = await new_facility(stack, time_zone="Europe/Berlin")
    user, stranger = str(uuid.uuid4()), str(uuid.uuid4())
    starts = thursdays()
    made = await stub.BookFacilitySeries(
        series_request(room, user, starts[0]), metadata=stack.as_rider(user)
    )
    before = await facility_counts(stack.database_url())
    theirs = series_request(room, user, starts[0] + HOUR)
    error = await refused(stub.BookFacilitySeries, theirs, stack.as_rider(stranger))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    for user_id in (stranger, user):
        cancel = pb.CancelFacilitySeriesRequest(series_id=made.series_id, user_id=user_id)
        error = await refused(stub.CancelFacilitySeries, cancel, stack.as_rider(stranger))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    disguised = series_request(room, stranger, starts[0] + HOUR)
    disguised.first.user_id = user
    error = await refused(stub.BookFacilitySeries, disguised, stack.as_rider(stranger))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(error) == ["first.user_id"]
    assert await facility_counts(stack.database_url()) == before


async def test_bad_input_is_refused_naming_the_field(stack: Stack) -> None:
    stub = facilities(stack)
    room = await new_facility(stack, time_zone="Europe/Berlin")
    user = str(uuid.uuid4())
    start = thursdays()[0]
    before = await facility_counts(stack.database_url())
    for rule in ("FREQ=MONTHLY;COUNT=3", "FREQ=WEEKLY", "FREQ=DAILY;COUNT=105", "FREQ=DAILY;X=1"):
        error = await refused(
            stub.BookFacilitySeries, series_request(room, user, start, rule), stack.as_rider(user)
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, rule
        assert bad_request_fields(error) == ["rrule"], rule
    keyless = series_request(room, user, start)
    keyless.first.request_id = ""
    error = await refused(stub.BookFacilitySeries, keyless, stack.as_rider(user))
    assert bad_request_fields(error) == ["first.request_id"]
    assert await facility_counts(stack.database_url()) == before


async def test_an_occurrence_the_clock_skips_is_skipped_or_refused(stack: Stack) -> None:
    stub = facilities(stack)
    room = await new_facility(stack, time_zone="Europe/Berlin")
    user = str(uuid.uuid4())
    eve = spring_change() - timedelta(days=1)
    start = datetime.combine(eve, datetime.min.time()).replace(hour=2, minute=30, tzinfo=BERLIN)
    rule = "FREQ=DAILY;COUNT=3"
    error = await refused(
        stub.BookFacilitySeries,
        series_request(room, user, start.astimezone(UTC), rule),
        stack.as_rider(user),
    )
    assert error_reason(error) == "NONEXISTENT_LOCAL_TIME"
    assert "occurrence 2 of the series" in (error.details() or "")
    made = await stub.BookFacilitySeries(
        series_request(room, user, start.astimezone(UTC), rule, skip_conflicts=True),
        metadata=stack.as_rider(user),
    )
    assert len(made.bookings) == 2
    assert [o.reason for o in made.skipped_occurrences] == ["NONEXISTENT_LOCAL_TIME"]
    assert made.skipped_occurrences[0].local_start == f"{spring_change()}T02:30:00"
