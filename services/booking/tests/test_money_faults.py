"""Money under faults: the wallet (user service) cut off while a booking is paid or
refunded. Nothing is lost and nothing is taken twice: the move waits as a pending record,
and once the wallet answers again the sweeper drives it to its end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import grpc
import pytest
import pytest_asyncio
from grpc import aio
from tiket.booking.v1 import booking_pb2 as pb
from tiket.user.v1 import user_pb2

from services.booking.config import BookingConfig
from services.booking.tests.stack import Stack, audit, idr, new_clinic, replica, running_stack
from services.booking.tests.test_bookings import balance, booked, cancel, pay
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="module")
# The sweeper of these tests drives every pending move at once.
AT_ONCE = BookingConfig(settle_after=timedelta(microseconds=1))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[Stack]:
    async with running_stack(
        proxied=True,
        TIKET_SWEEP_INTERVAL_SECONDS="3600",
        TIKET_BOOKING_USER_TIMEOUT_SECONDS="0.5",
    ) as running:
        yield running
        assert running.user_proxy is not None
        running.user_proxy.restore()
        problems = await audit(running.database_url(), running.database_url("user"))
        assert problems == [], f"audit failed: {problems}"


async def settle(stack: Stack, config: BookingConfig = AT_ONCE) -> int:
    async with replica(stack, config) as sweeper:
        return await sweeper.payments.settle()


async def settled_once(stack: Stack, config: BookingConfig = AT_ONCE) -> None:
    """Run the sweeper until it finishes a move: gRPC reconnects to a restored wallet after
    its own backoff, so the first rounds may still find it unreachable."""
    done: list[int] = []

    async def round_done() -> bool:
        done.append(await settle(stack, config))
        return done[-1] > 0

    await wait_until(round_done, "the sweeper to finish the pending move", within=60)


async def test_a_payment_the_wallet_never_answered_is_confirmed_once_it_does(
    stack: Stack,
) -> None:
    assert stack.user_proxy is not None
    clinic = await new_clinic(stack, price=100_000)
    booking, user = await booked(stack, clinic)
    stack.user_proxy.cut()
    try:
        with pytest.raises(aio.AioRpcError) as caught:
            await pay(stack, booking)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert await settle(stack) == 0  # still cut: nothing can end
    finally:
        stack.user_proxy.restore()
    seen = await stack.booking.GetBooking(
        pb.GetBookingRequest(booking_id=booking.booking_id), metadata=stack.metadata()
    )
    assert seen.status == pb.BOOKING_STATUS_PENDING_PAYMENT
    await settled_once(stack)
    seen = await stack.booking.GetBooking(
        pb.GetBookingRequest(booking_id=booking.booking_id), metadata=stack.metadata()
    )
    assert seen.status == pb.BOOKING_STATUS_CONFIRMED
    # The rider's retry answers the same payment; the wallet was charged once.
    again = await pay(stack, booking)
    assert again.payment.payment_id == seen.payment_id
    assert await balance(stack, user) == Decimal("400000.00")


async def test_a_refund_the_wallet_never_answered_is_credited_once_it_does(
    stack: Stack,
) -> None:
    assert stack.user_proxy is not None
    clinic = await new_clinic(stack, price=100_000)
    booking, user = await booked(stack, clinic)
    await pay(stack, booking)
    stack.user_proxy.cut()
    try:
        cancelled = await cancel(stack, booking)
    finally:
        stack.user_proxy.restore()
    assert cancelled.booking.status == pb.BOOKING_STATUS_CANCELLED
    assert cancelled.refund.status == "pending"
    assert await balance(stack, user) == Decimal("400000.00")
    await settled_once(stack)
    assert await balance(stack, user) == Decimal("490000.00")
    assert await settle(stack) == 0  # nothing more to credit
    assert await balance(stack, user) == Decimal("490000.00")


async def test_a_refund_a_full_wallet_refused_waits_until_it_fits(stack: Stack) -> None:
    """A wallet holds at most Rp 20.000.000: a refund that would take it past the cap is
    refused by the wallet for now, never lost — it stays pending and the sweeper credits it
    once the rider has spent enough."""
    clinic = await new_clinic(stack, price=150_000)
    booking, user = await booked(stack, clinic, balance=19_900_000)
    await pay(stack, booking)
    await stack.users.TopUp(
        user_pb2.TopUpRequest(user_id=user, amount=idr(250_000), idempotency_key="to-the-cap"),
        metadata=stack.metadata(),
    )
    cancelled = await cancel(stack, booking)  # 90 %: 135.000 back, no room for it
    assert cancelled.refund.status == "pending"
    assert await balance(stack, user) == Decimal("20000000.00")
    assert await settle(stack) == 0  # still no room: it waits
    await stack.users.Charge(
        user_pb2.ChargeRequest(
            user_id=user, amount=idr(150_000), idempotency_key="spend", reference="shop-1"
        ),
        metadata=stack.metadata(),
    )
    await settled_once(stack)
    assert await balance(stack, user) == Decimal("19985000.00")
