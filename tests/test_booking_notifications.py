"""The booking service's events reach the rider: the real user, booking and notification
services, a booking paid, reminded of and cancelled, and the texts the notification service
made of it, in the rider's language (Indonesian by default)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from tiket.booking.v1 import booking_pb2 as pb
from tiket.notification.v1 import notification_pb2, notification_pb2_grpc

from services.booking.tests.stack import Stack, audit, new_clinic, new_slot, replica, running_stack
from services.booking.tests.test_bookings import booked, cancel, pay
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[Stack]:
    async with running_stack(notifying=True, TIKET_SWEEP_INTERVAL_SECONDS="3600") as running:
        yield running
        assert await audit(running.database_url(), running.database_url("user")) == []


async def texts(stack: Stack, user_id: str, *types: str) -> dict[str, str]:
    """event type -> message of the rider's notifications of `types`, once all arrived."""
    notifications = notification_pb2_grpc.NotificationServiceStub(stack.channels["notification"])
    found: dict[str, str] = {}

    async def arrived() -> bool:
        answer = await notifications.ListNotifications(
            notification_pb2.ListNotificationsRequest(user_id=user_id), metadata=stack.metadata()
        )
        found.clear()
        found.update(
            {n.event_type: n.message for n in answer.notifications if n.event_type in types}
        )
        return len(found) == len(types)

    await wait_until(arrived, f"{types} notifications for {user_id}", within=60)
    return found


async def test_the_rider_hears_of_the_payment_and_the_cancellation(stack: Stack) -> None:
    clinic = await new_clinic(stack, price=150_000)
    booking, user = await booked(stack, clinic)
    await pay(stack, booking)
    await cancel(stack, booking)
    told = await texts(stack, user, "booking.paid", "booking.confirmed", "booking.cancelled")
    reference = booking.booking_id
    assert told == {
        "booking.paid": f"Pembayaran pemesanan Anda {reference} telah diterima.",
        "booking.confirmed": f"Pemesanan Anda {reference} telah dikonfirmasi.",
        "booking.cancelled": f"Pemesanan Anda {reference} telah dibatalkan.",
    }


async def test_a_visit_tomorrow_is_reminded_once(stack: Stack) -> None:
    clinic = await new_clinic(stack)
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=3)
    slot = await new_slot(stack, clinic, start=soon)
    booking, user = await booked(stack, clinic, slot=slot)
    await pay(stack, booking)
    async with replica(stack) as sweeper:
        assert await sweeper.bookings.remind_due() >= 1
        assert await sweeper.bookings.remind_due() == 0  # once
    told = await texts(stack, user, "booking.reminder")
    assert told["booking.reminder"] == (
        f"Pengingat: kunjungan Anda {booking.booking_id} dimulai dalam 24 jam. "
        "Sampai jumpa di klinik!"
    )
    events = await stack.booking.GetBookingEvents(
        pb.GetBookingEventsRequest(booking_id=booking.booking_id), metadata=stack.metadata()
    )
    assert [e.event_type for e in events.events].count("BookingReminder") == 1
