"""Behind Envoy or an Istio gateway the booking service's peer is the proxy: with the proxy's
network in TIKET_TRUSTED_PROXIES, the audit log records the client address the proxy
forwarded (the right-most x-forwarded-for hop that is not a trusted proxy itself), not the
proxy's — and a client cannot slip its own hop past the proxy."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
import pytest_asyncio

from services.booking.tests.facility_support import (
    book_request,
    facilities,
    new_facility,
    quarter,
)
from services.booking.tests.stack import Stack, audit, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[Stack]:
    """The tests call from 127.0.0.1: here that is the trusted proxy."""
    async with running_stack(
        TIKET_SWEEP_INTERVAL_SECONDS="3600", TIKET_TRUSTED_PROXIES="127.0.0.0/8"
    ) as running:
        yield running
        assert await audit(running.database_url(), running.database_url("user")) == []


async def audited_address(stack: Stack, booking_id: str) -> str:
    async with await psycopg.AsyncConnection.connect(stack.database_url()) as conn:
        cur = await conn.execute(
            "SELECT host(ip_address) FROM facility_booking_audit_log WHERE booking_id = %s",
            (booking_id,),
        )
        (row,) = await cur.fetchall()
    return row[0]


@pytest.mark.parametrize(
    ("forwarded", "recorded"),
    [
        (["198.51.100.7"], "198.51.100.7"),  # the client the proxy saw
        # The client sent its own header; the proxy appended the address it saw.
        (["203.0.113.9, 198.51.100.7"], "198.51.100.7"),
        # Two proxies of ours in a row: the hop before them.
        (["198.51.100.7, 127.0.0.2"], "198.51.100.7"),
        ([], "127.0.0.1"),  # nothing forwarded: the peer itself
    ],
)
async def test_the_audit_log_records_the_address_the_trusted_proxy_forwarded(
    stack: Stack, forwarded: list[str], recorded: str
) -> None:
    stub, room = facilities(stack), await new_facility(stack)
    user = str(uuid.uuid4())
    metadata = [*stack.as_rider(user), *(("x-forwarded-for", hops) for hops in forwarded)]
    booked = await stub.BookFacility(
        book_request(room, quarter(5, 4), quarter(5, 8), user), metadata=metadata
    )
    assert await audited_address(stack, booked.booking_id) == recorded
