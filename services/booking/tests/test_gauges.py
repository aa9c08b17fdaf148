"""The booking service's business gauges (services/booking/gauges.py) and `tiket facility
health`: bookings by kind and status as the database has them, seed 003's conflict monitor
at 0 — and at the conflicting bookings' count when the exclusion constraint is gone, where
the health check and the CLI say FAIL — without the monitor's own reads turning the index
usage check into a WARN."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import psycopg
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from psycopg_pool import AsyncConnectionPool
from tiket.booking.v1 import facility_pb2 as pb

from cli import facility as facility_cli
from libs.config import Settings
from services.booking import gauges
from services.booking.domain import BookingStatus
from services.booking.tests.facility_support import (
    book_request,
    facilities,
    new_facility,
    quarter,
)
from services.booking.tests.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool(stack: Stack) -> AsyncIterator[AsyncConnectionPool]:
    async with AsyncConnectionPool(stack.database_url(), min_size=1, max_size=2) as opened:
        yield opened


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def cli_settings(stack: Stack) -> Settings:
    """The settings `tiket facility health` would read to reach this stack's booking."""
    booking = f"127.0.0.1:{stack.runtimes['booking'].port}"
    return replace(stack.settings, addresses={**stack.settings.addresses, "booking": booking})


async def test_bookings_by_status_as_the_database_has_them(stack: Stack, pool) -> None:
    staff, stub = stack.metadata(), facilities(stack)
    room = await new_facility(stack)
    gated = await new_facility(stack, requires_approval=True)
    for n in range(3):
        await stub.BookFacility(
            book_request(room, quarter(3, 4 * n), quarter(3, 4 * n + 2)), metadata=staff
        )
    rider = str(uuid.uuid4())
    pending = await stub.BookFacility(
        book_request(gated, quarter(3), quarter(3, 2), rider), metadata=stack.as_rider(rider)
    )
    cancelled = await stub.BookFacility(
        book_request(room, quarter(4), quarter(4, 2)), metadata=staff
    )
    await stub.CancelFacilityBooking(
        pb.CancelFacilityBookingRequest(booking_id=cancelled.booking_id, reason="room closed"),
        metadata=staff,
    )
    assert pending.status == pb.FACILITY_BOOKING_STATUS_PENDING

    async with pool.connection() as conn, conn.transaction():
        await gauges.count(conn)
        cur = await conn.execute(  # this transaction's own scans, not flushed yet
            "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'facility_bookings'"
        )
        assert await cur.fetchone() == (0,)  # read by index only: index_usage stays honest
    await gauges.refresher(pool).work()

    upcoming = "tiket_facility_bookings_upcoming"
    assert sample(upcoming, status="confirmed") == 3  # the cancelled one is not counted
    assert sample(upcoming, status="pending") == 1
    assert sample(upcoming, status="rejected") == 0
    assert sample(upcoming, status="cancelled") is None
    for status in BookingStatus:  # no clinic booking in this module: every status reads 0
        assert sample("tiket_bookings", status=status.value) == 0
    assert sample("tiket_facility_booking_conflicts") == 0
    refreshed = sample(
        "tiket_gauges_refreshed_timestamp_seconds", service="booking", job="bookings"
    )
    assert refreshed and refreshed > 0


async def test_health_passes_and_the_cli_exits_0(stack: Stack, pool) -> None:
    printed: list[str] = []
    assert await facility_cli.check(cli_settings(stack), printed.append) == 0
    table = printed[0]
    assert "booking_conflicts" in table and "index_usage" in table and "FAIL" not in table


async def test_a_conflict_without_the_constraint_is_counted_and_fails_the_health_check(
    stack: Stack, pool
) -> None:
    room = await new_facility(stack)
    made = await facilities(stack).BookFacility(
        book_request(room, quarter(5), quarter(5, 4)), metadata=stack.metadata()
    )
    url = stack.database_url()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("ALTER TABLE facility_bookings DROP CONSTRAINT booking_no_overlap")
        try:
            # The same booking again, half an hour later: overlaps the first.
            await conn.execute(
                """INSERT INTO facility_bookings (facility_id, user_id, start_time, end_time,
                       title, attendee_count, status, created_by, request_id)
                   SELECT facility_id, user_id, start_time + %s, end_time + %s, title,
                          attendee_count, status, created_by, 'duplicate'
                     FROM facility_bookings WHERE booking_id = %s""",
                (timedelta(minutes=30), timedelta(minutes=30), made.booking_id),
            )
            await gauges.refresher(pool).work()
            assert sample("tiket_facility_booking_conflicts") == 2
            printed: list[str] = []
            assert await facility_cli.check(cli_settings(stack), printed.append) == 2
            assert "FAIL" in printed[0]
        finally:
            await conn.execute("DELETE FROM facility_bookings WHERE request_id = 'duplicate'")
            await conn.execute(
                """ALTER TABLE facility_bookings ADD CONSTRAINT booking_no_overlap
                   EXCLUDE USING gist (facility_id WITH =, tstzrange(start_time, end_time) WITH &&)
                   WHERE (status IN ('confirmed', 'pending'))"""
            )
    await gauges.refresher(pool).work()
    assert sample("tiket_facility_booking_conflicts") == 0


async def test_the_cli_says_what_to_do_when_no_booking_service_answers(stack: Stack) -> None:
    settings = replace(
        stack.settings, addresses={**stack.settings.addresses, "booking": "127.0.0.1:1"}
    )
    printed: list[str] = []
    assert await facility_cli.check(settings, printed.append) == 3
    assert "start it (tiket up)" in printed[0]
