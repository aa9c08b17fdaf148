"""Paying through the gateway against a local server that speaks the Midtrans API: the Snap
payment page, the signed HTTP notification the booking process receives, the status API
that confirms it, refunds back through the gateway, and wallet top-ups paid there."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import grpc
import psycopg
import pytest
import pytest_asyncio
from grpc import aio
from tiket.booking.v1 import booking_pb2 as pb

from libs.money import from_money
from services.booking.config import BookingConfig, load
from services.booking.tests.stack import (
    Stack,
    audit,
    future_hour,
    idr,
    new_clinic,
    running_stack,
    stamp,
)
from services.booking.tests.test_bookings import balance, booked, cancel
from services.booking.tests.test_money_faults import settled_once
from services.booking.webhook import PATH
from tests.support.grpc_errors import error_reason
from tests.support.midtrans import FakeMidtrans, Order
from tests.support.processes import free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")
SERVER_KEY = "SB-Mid-server-tiket-tests"


@dataclass
class Gateway:
    stack: Stack
    midtrans: FakeMidtrans
    endpoint: str
    config: BookingConfig

    async def notify(self, order_id: str, **changes) -> int:
        return await self.midtrans.notify(
            self.endpoint, self.midtrans.notification(order_id, **changes)
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway() -> AsyncIterator[Gateway]:
    midtrans = FakeMidtrans(SERVER_KEY)
    await midtrans.start()
    port = free_port()
    env = {
        "TIKET_BOOKING_MIDTRANS_SERVER_KEY": SERVER_KEY,
        "TIKET_BOOKING_MIDTRANS_SNAP_URL": midtrans.url,
        "TIKET_BOOKING_MIDTRANS_API_URL": midtrans.url,
        "TIKET_BOOKING_HTTP_PORT": str(port),
        "TIKET_BOOKING_SETTLE_AFTER_SECONDS": "0.001",
    }
    config = load(env)
    try:
        async with running_stack(config, TIKET_SWEEP_INTERVAL_SECONDS="3600") as stack:
            yield Gateway(stack, midtrans, f"http://127.0.0.1:{port}{PATH}", config)
            problems = await audit(stack.database_url(), stack.database_url("user"))
            assert problems == [], f"audit failed: {problems}"
    finally:
        await midtrans.stop()


async def pay_at_gateway(stack: Stack, booking: pb.Booking) -> pb.PayBookingResponse:
    return await stack.booking.PayBooking(
        pb.PayBookingRequest(
            booking_id=booking.booking_id,
            user_id=booking.user_id,
            method=pb.PAYMENT_METHOD_GATEWAY,
            idempotency_key="snap-1",
        ),
        metadata=stack.as_rider(booking.user_id),
    )


async def opened(gateway: Gateway, price: int = 150_000) -> tuple[pb.Booking, str, str]:
    """(a booking whose payment page is open at the gateway, its rider, the order id)."""
    clinic = await new_clinic(gateway.stack, price=price)
    booking, user = await booked(gateway.stack, clinic)
    page = await pay_at_gateway(gateway.stack, booking)
    return booking, user, f"pay-{page.payment.payment_id}"


async def count(stack: Stack, sql: str, *params) -> int:
    async with await psycopg.AsyncConnection.connect(stack.database_url()) as conn:
        row = await (await conn.execute(sql, params)).fetchone()
    assert row is not None
    return row[0]


async def get(stack: Stack, booking: pb.Booking) -> pb.Booking:
    return await stack.booking.GetBooking(
        pb.GetBookingRequest(booking_id=booking.booking_id), metadata=stack.metadata()
    )


async def test_a_notification_replayed_three_times_makes_one_payment(gateway: Gateway) -> None:
    stack = gateway.stack
    clinic = await new_clinic(stack, price=150_000)
    booking, _ = await booked(stack, clinic)
    page = await pay_at_gateway(stack, booking)
    assert page.booking.status == pb.BOOKING_STATUS_PENDING_PAYMENT
    assert page.payment.payment_url.startswith(gateway.midtrans.url)
    assert (page.payment.provider, page.payment.status) == ("midtrans", "pending")
    # A retry answers the same page; no second Snap transaction.
    assert (await pay_at_gateway(stack, booking)).payment.payment_url == page.payment.payment_url
    assert gateway.midtrans.calls.count("create") == 1

    order = f"pay-{page.payment.payment_id}"
    gateway.midtrans.pay(order)
    assert [await gateway.notify(order) for _ in range(3)] == [200, 200, 200]
    paid = await get(stack, booking)
    assert (paid.status, paid.payment_status) == (
        pb.BOOKING_STATUS_CONFIRMED,
        pb.PAYMENT_STATUS_PAID,
    )
    events = await stack.booking.GetBookingEvents(
        pb.GetBookingEventsRequest(booking_id=booking.booking_id), metadata=stack.metadata()
    )
    assert [e.event_type for e in events.events].count("BookingPaid") == 1
    assert await count(stack, "SELECT count(*) FROM gateway_notifications WHERE order_id = %s",
                       order) == 1  # fmt: skip


async def test_a_bad_signature_is_refused_and_nothing_is_written(gateway: Gateway) -> None:
    stack = gateway.stack
    booking, _, order = await opened(gateway)
    gateway.midtrans.pay(order)
    assert await gateway.notify(order, server_key="not-the-server-key") == 401
    forged = gateway.midtrans.notification(order)
    forged["gross_amount"] = "1.00"  # the signature no longer matches
    assert await gateway.midtrans.notify(gateway.endpoint, forged) == 401
    assert (await get(stack, booking)).status == pb.BOOKING_STATUS_PENDING_PAYMENT
    assert await count(stack, "SELECT count(*) FROM gateway_notifications WHERE order_id = %s",
                       order) == 0  # fmt: skip


async def test_a_payment_after_the_cancellation_is_refunded(gateway: Gateway) -> None:
    stack = gateway.stack
    clinic = await new_clinic(stack, price=120_000)
    booking, _ = await booked(stack, clinic)
    page = await pay_at_gateway(stack, booking)
    cancelled = await cancel(stack, booking)  # the rider gives up, then pays anyway
    assert cancelled.booking.payment_status == pb.PAYMENT_STATUS_FAILED
    order = f"pay-{page.payment.payment_id}"
    gateway.midtrans.pay(order)
    assert await gateway.notify(order) == 200
    seen = await get(stack, booking)
    assert (seen.status, seen.payment_status) == (
        pb.BOOKING_STATUS_CANCELLED,
        pb.PAYMENT_STATUS_REFUNDED,
    )
    assert sum(gateway.midtrans.orders[order].refunds.values()) == Decimal(120_000)


async def test_a_cancellation_refunds_through_the_gateway_that_paid(gateway: Gateway) -> None:
    stack = gateway.stack
    booking, user, order = await opened(gateway, 100_000)
    gateway.midtrans.pay(order)
    assert await gateway.notify(order) == 200
    cancelled = await cancel(stack, booking)
    assert (cancelled.refund.provider, cancelled.refund.status) == ("midtrans", "completed")
    assert cancelled.refund.amount.units == 90_000
    assert list(gateway.midtrans.orders[order].refunds.values()) == [Decimal(90_000)]
    assert await balance(stack, user) == Decimal("500000.00")  # the wallet was not touched


async def test_with_the_status_api_down_the_payment_waits_and_is_confirmed_later(
    gateway: Gateway,
) -> None:
    stack = gateway.stack
    booking, _, order = await opened(gateway)
    gateway.midtrans.pay(order)
    gateway.midtrans.status_down = True
    try:
        assert await gateway.notify(order) == 503  # Midtrans sends it again later
    finally:
        gateway.midtrans.status_down = False
    assert (await get(stack, booking)).status == pb.BOOKING_STATUS_PENDING_PAYMENT
    await settled_once(stack, gateway.config)  # the sweeper asks the status API itself
    assert (await get(stack, booking)).status == pb.BOOKING_STATUS_CONFIRMED


async def test_an_expired_gateway_payment_frees_the_booking_for_another_try(
    gateway: Gateway,
) -> None:
    stack = gateway.stack
    booking, _, order = await opened(gateway)
    gateway.midtrans.expire(order)
    assert await gateway.notify(order) == 200
    retry = await stack.booking.PayBooking(
        pb.PayBookingRequest(
            booking_id=booking.booking_id, user_id=booking.user_id,
            method=pb.PAYMENT_METHOD_WALLET, idempotency_key="wallet-after-expiry",
        ),
        metadata=stack.as_rider(booking.user_id),
    )  # fmt: skip
    assert retry.booking.status == pb.BOOKING_STATUS_CONFIRMED


async def test_a_top_up_paid_at_the_gateway_credits_the_wallet_once(gateway: Gateway) -> None:
    stack = gateway.stack
    clinic = await new_clinic(stack)
    _, user = await booked(stack, clinic, balance=0)
    request = pb.CreateTopUpRequest(user_id=user, amount=idr(75_000), idempotency_key="topup-1")
    intent = await stack.booking.CreateTopUp(request, metadata=stack.as_rider(user))
    assert (intent.status, intent.order_id) == ("pending", f"topup-{intent.intent_id}")
    assert intent.payment_url.startswith(gateway.midtrans.url)
    again = await stack.booking.CreateTopUp(request, metadata=stack.as_rider(user))
    assert again.intent_id == intent.intent_id
    gateway.midtrans.pay(intent.order_id)
    assert [await gateway.notify(intent.order_id) for _ in range(3)] == [200, 200, 200]
    assert await balance(stack, user) == Decimal("75000.00")


async def test_an_order_that_is_not_ours_is_not_found(gateway: Gateway) -> None:
    order = Order("another-shop-1", Decimal(10_000), transaction_status="settlement")
    gateway.midtrans.orders[order.order_id] = order
    assert await gateway.notify(order.order_id) == 404


async def test_a_retry_of_a_payment_key_by_another_method_is_refused(gateway: Gateway) -> None:
    """The same idempotency_key with the other method is another request: refused, and the
    first payment stays what it was — the wallet is never charged for a payment page that
    is open at the gateway (the rider could pay twice), nor a wallet payment opened there."""
    stack = gateway.stack
    booking, user, _ = await opened(gateway)
    with pytest.raises(aio.AioRpcError) as caught:
        await stack.booking.PayBooking(
            pb.PayBookingRequest(
                booking_id=booking.booking_id,
                user_id=user,
                method=pb.PAYMENT_METHOD_WALLET,
                idempotency_key="snap-1",
            ),
            metadata=stack.as_rider(user),
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert await balance(stack, user) == Decimal("500000.00")
    shown = await get(stack, booking)
    assert (shown.status, shown.payment_status) == (
        pb.BOOKING_STATUS_PENDING_PAYMENT,
        pb.PAYMENT_STATUS_PENDING,
    )


async def test_a_booking_whose_payment_is_under_way_is_not_moved(gateway: Gateway) -> None:
    """The payment page was opened for the booking's price: moved to a dearer slot meanwhile,
    the booking would be confirmed by paying the old price."""
    stack = gateway.stack
    clinic = await new_clinic(stack, price=150_000)
    booking, user = await booked(stack, clinic)
    page = await pay_at_gateway(stack, booking)
    dearer = await stack.booking.CreateSlot(
        pb.CreateSlotRequest(
            clinic_id=clinic.id,
            service_id=clinic.service.service_id,
            start_time=stamp(future_hour()),
            price=idr(200_000),
        ),
        metadata=stack.metadata(),
    )
    with pytest.raises(aio.AioRpcError) as caught:
        await stack.booking.RescheduleBooking(
            pb.RescheduleBookingRequest(
                booking_id=booking.booking_id, user_id=user, new_slot_id=dearer.slot_id
            ),
            metadata=stack.as_rider(user),
        )
    assert error_reason(caught.value) == "PAYMENT_IN_PROGRESS"
    order = f"pay-{page.payment.payment_id}"
    gateway.midtrans.pay(order)
    assert await gateway.notify(order) == 200
    paid = await get(stack, booking)
    assert (paid.status, paid.slot_id) == (pb.BOOKING_STATUS_CONFIRMED, booking.slot_id)
    assert from_money(paid.final_amount) == from_money(page.payment.amount) == Decimal(150_000)
