"""GetBookingStats' use case against the real services: bookings made through the API in
several states, the booking_analytics_daily view refreshed, then read per clinic, local day
and service; its refresh is safe on several replicas at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import grpc
import psycopg
import pytest
import pytest_asyncio
from grpc import aio
from psycopg_pool import AsyncConnectionPool
from tiket.booking.v1 import booking_pb2 as pb

from libs.auth import Role
from libs.db.database import open_pool
from libs.errors import NotFound, PermissionDenied
from libs.money import from_money
from services.booking import stats
from services.booking.domain import Actor
from services.booking.tests.stack import (
    Clinic,
    Stack,
    calendar,
    future_hour,
    idr,
    new_clinic,
    row_counts,
    stamp,
)
from services.booking.tests.test_bookings import booked, cancel, pay
from tests.support.grpc_errors import bad_request_fields

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = Actor(Role.ADMIN, "tests")
JAKARTA = ZoneInfo("Asia/Jakarta")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool(stack: Stack) -> AsyncIterator[AsyncConnectionPool]:
    opened = await open_pool(stack.database_url(), min_size=1, max_size=4)
    yield opened
    await opened.close()


def operator(clinic: Clinic) -> Actor:
    return Actor(Role.OPERATOR, f"clinic:{clinic.id}:drh.sari", uuid.UUID(clinic.id))


async def made_at(stack: Stack, booking: pb.Booking, at: datetime) -> None:
    """Move the booking's creation to `at` (a day the test controls). Only for bookings no
    longer pending payment: the sweeper cancels those by their age."""
    async with await psycopg.AsyncConnection.connect(stack.database_url(), autocommit=True) as c:
        await c.execute(
            "UPDATE bookings SET created_at = %s WHERE booking_id = %s", (at, booking.booking_id)
        )


async def started_already(stack: Stack, slot_id: str) -> None:
    """Move a slot (without staff) into the past, so that a no-show may be marked."""
    async with await psycopg.AsyncConnection.connect(stack.database_url(), autocommit=True) as c:
        await c.execute(
            """UPDATE slots SET start_time = now() - interval '2 hours',
                                end_time = now() - interval '90 minutes'
                WHERE slot_id = %s""",
            (slot_id,),
        )


async def priced_slot(stack: Stack, clinic: Clinic, service_id: str, price: int) -> pb.Slot:
    return await stack.booking.CreateSlot(
        pb.CreateSlotRequest(
            clinic_id=clinic.id,
            service_id=service_id,
            start_time=stamp(future_hour()),
            price=idr(price),
        ),
        metadata=stack.metadata(),
    )


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def test_counts_and_revenue_per_local_day_and_service(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    clinic = await new_clinic(stack, price=150_000)  # Asia/Jakarta, UTC+7
    s1 = clinic.service.service_id
    grooming = await stack.booking.CreateClinicService(
        pb.CreateClinicServiceRequest(
            clinic_id=clinic.id, name="Grooming", duration_minutes=60, price=idr(200_000)
        ),
        metadata=stack.metadata(),
    )
    s2 = grooming.service_id
    staff = stack.as_operator(clinic.id)

    # 2024-03-10 20:00 UTC is 03:00 on 11 March in Jakarta: the local day, not the UTC one.
    confirmed, _ = await booked(stack, clinic)
    await pay(stack, confirmed)
    await made_at(stack, confirmed, utc("2024-03-10T20:00"))
    # Paid, then cancelled by the rider: 90 % back, the 15,000 kept is revenue.
    refunded, _ = await booked(stack, clinic)
    await pay(stack, refunded)
    assert (await cancel(stack, refunded)).refund.amount.units == 135_000
    await made_at(stack, refunded, utc("2024-03-11T02:00"))
    # A 100,000 slot of the same service, paid, visited and completed.
    visited, _ = await booked(stack, clinic, slot=await priced_slot(stack, clinic, s1, 100_000))
    await pay(stack, visited)
    for call, request in (
        (stack.booking.StartBooking, pb.StartBookingRequest),
        (stack.booking.CompleteBooking, pb.CompleteBookingRequest),
    ):
        await call(request(booking_id=visited.booking_id), metadata=staff)
    await made_at(stack, visited, utc("2024-03-11T09:00"))
    # Never paid, cancelled: counted, no revenue, not in the average. 23:59 local.
    unpaid, _ = await booked(stack, clinic)
    await cancel(stack, unpaid)
    await made_at(stack, unpaid, utc("2024-03-11T16:59"))
    # Another service the same local day.
    groomed, _ = await booked(stack, clinic, slot=await priced_slot(stack, clinic, s2, 200_000))
    await pay(stack, groomed)
    await made_at(stack, groomed, utc("2024-03-11T03:00"))
    # 17:30 UTC on 11 March is 00:30 on 12 March in Jakarta: a paid no-show keeps its money.
    absent, _ = await booked(stack, clinic)
    await pay(stack, absent)
    await started_already(stack, absent.slot_id)
    await stack.booking.MarkNoShow(
        pb.MarkNoShowRequest(booking_id=absent.booking_id), metadata=staff
    )
    await made_at(stack, absent, utc("2024-03-11T17:30"))
    # Made now and not paid yet: today's row, no revenue.
    pending, _ = await booked(stack, clinic)

    assert await stats.refresh(pool)
    clinic_id = uuid.UUID(clinic.id)
    rows = await stats.daily(pool, ADMIN, clinic_id, date(2024, 3, 10), date(2024, 3, 12))
    got = {
        (r.day, str(r.service_id)): (
            r.total_bookings, r.completed_bookings, r.cancelled_bookings, r.no_show_bookings,
            r.total_revenue, r.avg_booking_value,
        )
        for r in rows
    }  # fmt: skip
    assert got == {
        (date(2024, 3, 11), s1): (4, 1, 2, 0, Decimal("265000.00"), Decimal("133333.33")),
        (date(2024, 3, 11), s2): (1, 0, 0, 0, Decimal("200000.00"), Decimal("200000.00")),
        (date(2024, 3, 12), s1): (1, 0, 0, 1, Decimal("150000.00"), Decimal("150000.00")),
    }
    assert [r.day for r in rows] == sorted(r.day for r in rows)  # by day

    # One service only; an operator of the clinic reads it too.
    only = await stats.daily(
        pool, operator(clinic), clinic_id, date(2024, 3, 1), date(2024, 3, 31), uuid.UUID(s2)
    )
    assert [(r.day, str(r.service_id), r.total_bookings) for r in only] == [
        (date(2024, 3, 11), s2, 1)
    ]

    # Today's (local) row, as the RPC answers it.
    today = pending.created_at.ToDatetime(tzinfo=UTC).astimezone(JAKARTA).date()
    [row] = await stats.daily(pool, ADMIN, clinic_id, today, today)
    answer = stats.message(row)
    assert (answer.date.year, answer.date.month, answer.date.day) == (
        today.year, today.month, today.day,
    )  # fmt: skip
    assert (answer.service_id, answer.total_bookings, answer.cancelled_bookings) == (s1, 1, 0)
    assert from_money(answer.total_revenue) == Decimal("0.00")
    assert answer.total_revenue.currency_code == "IDR"
    assert not answer.HasField("avg_booking_value")  # nothing paid that day

    # The view is a snapshot: a cancellation shows at the next refresh.
    await cancel(stack, pending)
    [row] = await stats.daily(pool, ADMIN, clinic_id, today, today)
    assert row.cancelled_bookings == 0
    assert await stats.refresh(pool)
    [row] = await stats.daily(pool, ADMIN, clinic_id, today, today)
    assert (row.total_bookings, row.cancelled_bookings) == (1, 1)

    [first] = [r for r in rows if (r.day, str(r.service_id)) == (date(2024, 3, 11), s1)]
    message = stats.message(first)
    assert (message.total_revenue.units, message.avg_booking_value.units) == (265_000, 133_333)
    assert message.avg_booking_value.nanos == 330_000_000


async def test_an_operator_reads_only_their_own_clinic(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    mine, theirs = await new_clinic(stack), await new_clinic(stack)
    day = date(2024, 3, 11)
    with pytest.raises(PermissionDenied):
        await stats.daily(pool, operator(mine), uuid.UUID(theirs.id), day, day)
    no_clinic = Actor(Role.OPERATOR, "terminal-7")
    with pytest.raises(PermissionDenied):
        await stats.daily(pool, no_clinic, uuid.UUID(mine.id), day, day)
    rider = Actor(Role.USER, str(uuid.uuid4()))
    with pytest.raises(PermissionDenied):
        await stats.daily(pool, rider, uuid.UUID(mine.id), day, day)
    # Refused before the clinic is looked up: an unknown one is PERMISSION_DENIED too.
    with pytest.raises(PermissionDenied):
        await stats.daily(pool, operator(mine), uuid.uuid4(), day, day)
    assert await stats.daily(pool, operator(mine), uuid.UUID(mine.id), day, day) == []


async def test_unknown_clinic_or_another_clinics_service_is_not_found(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    mine, theirs = await new_clinic(stack), await new_clinic(stack)
    day = date(2024, 3, 11)
    with pytest.raises(NotFound, match="clinic"):
        await stats.daily(pool, ADMIN, uuid.uuid4(), day, day)
    with pytest.raises(NotFound, match="service"):
        await stats.daily(
            pool, ADMIN, uuid.UUID(mine.id), day, day, uuid.UUID(theirs.service.service_id)
        )


async def test_concurrent_refreshes_never_fail_and_one_replica_refreshes_at_a_time(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    clinic = await new_clinic(stack)
    booking, _ = await booked(stack, clinic)
    await pay(stack, booking)
    day = booking.created_at.ToDatetime(tzinfo=UTC).astimezone(JAKARTA).date()
    results = await asyncio.gather(*(stats.refresh(pool) for _ in range(4)))
    assert True in results  # the others skipped (or ran after it): none failed
    # A second replica (its own pool) at the same time as this one.
    async with AsyncConnectionPool(
        stack.database_url(), min_size=1, max_size=2, open=False, kwargs={"autocommit": True}
    ) as other:
        both = await asyncio.gather(stats.refresh(pool), stats.refresh(other))
    assert True in both
    # While another session holds the lock, a refresh skips rather than waits.
    async with await psycopg.AsyncConnection.connect(stack.database_url()) as holder:
        await holder.execute("SELECT pg_advisory_xact_lock(%s)", (stats.REFRESH_LOCK,))
        assert await asyncio.wait_for(stats.refresh(pool), 5) is False
        # Readers are never blocked by a refresh.
        await stats.daily(pool, ADMIN, uuid.UUID(clinic.id), day, day)
        await holder.rollback()
    assert await stats.refresh(pool) is True
    [row] = await stats.daily(pool, ADMIN, uuid.UUID(clinic.id), day, day)
    assert (row.total_bookings, row.total_revenue) == (1, Decimal("150000.00"))


async def test_the_refresher_refreshes_at_start_then_hourly(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    clinic = await new_clinic(stack)
    booking, _ = await booked(stack, clinic)
    day = booking.created_at.ToDatetime(tzinfo=UTC).astimezone(JAKARTA).date()
    job = stats.refresher(pool)
    assert job.interval == 3600
    await job.start()
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while not await stats.daily(pool, ADMIN, uuid.UUID(clinic.id), day, day):
            assert asyncio.get_running_loop().time() < deadline, "the view was not refreshed"
            await asyncio.sleep(0.05)
    finally:
        await job.stop()
    await cancel(stack, booking)  # leaves nothing pending for the module's audit


async def test_the_rpc_checks_its_fields_then_the_clinic_then_answers(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    clinic, other = await new_clinic(stack), await new_clinic(stack)
    booking, _ = await booked(stack, clinic)
    await pay(stack, booking)
    assert await stats.refresh(pool)
    day = booking.created_at.ToDatetime(tzinfo=UTC).astimezone(JAKARTA).date()
    good = pb.GetBookingStatsRequest(
        clinic_id=clinic.id, first_date=calendar(day), last_date=calendar(day)
    )
    answer = await stack.booking.GetBookingStats(good, metadata=stack.as_operator(clinic.id))
    [row] = answer.days
    assert (row.service_id, row.total_bookings, row.total_revenue.units) == (
        clinic.service.service_id, 1, 150_000,
    )  # fmt: skip
    one = pb.GetBookingStatsRequest(service_id=other.service.service_id)
    one.MergeFrom(good)  # the range of `good`, another clinic's service
    with pytest.raises(aio.AioRpcError) as caught:
        await stack.booking.GetBookingStats(one, metadata=stack.metadata())
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND

    before = await row_counts(stack.database_url())
    first, far = calendar(day), calendar(day + timedelta(days=92))  # 93 days
    ask = pb.GetBookingStatsRequest
    for field, bad in (
        ("clinic_id", ask(first_date=first, last_date=first)),
        ("clinic_id", ask(clinic_id="clinic-1", first_date=first, last_date=first)),
        ("first_date", ask(clinic_id=clinic.id, last_date=first)),
        ("last_date", ask(clinic_id=clinic.id, first_date=far, last_date=first)),
        ("last_date", ask(clinic_id=clinic.id, first_date=first, last_date=far)),
        ("service_id", ask(clinic_id=clinic.id, first_date=first, last_date=first, service_id="x")),
    ):
        with pytest.raises(aio.AioRpcError) as caught:
            # Bad input is INVALID_ARGUMENT even for an operator of another clinic.
            await stack.booking.GetBookingStats(bad, metadata=stack.as_operator(other.id))
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, (field, bad)
        assert bad_request_fields(caught.value) == [field]
    with pytest.raises(aio.AioRpcError) as caught:
        await stack.booking.GetBookingStats(good, metadata=stack.as_operator(other.id))
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(aio.AioRpcError) as caught:
        await stack.booking.GetBookingStats(good, metadata=stack.as_rider(booking.user_id))
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert await row_counts(stack.database_url()) == before
