"""The booking service's events reach the rider: the real user, booking and notification
services, a booking paid, moved, reminded of and cancelled, a reservation expired, a room
booked and cancelled, and the texts the notification service made of them, in the rider's
language (Indonesian by default): what, where, when on the place's own clock, how much."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
import pytest_asyncio
from google.protobuf.timestamp_pb2 import Timestamp
from tiket.booking.v1 import booking_pb2 as pb
from tiket.booking.v1 import facility_pb2
from tiket.notification.v1 import notification_pb2, notification_pb2_grpc

from services.booking.tests.facility_support import book_request, facilities, new_facility, quarter
from services.booking.tests.stack import (
    Stack,
    audit,
    future_hour,
    idr,
    new_clinic,
    new_rider,
    new_slot,
    replica,
    reserve,
    running_stack,
    stamp,
)
from services.booking.tests.test_bookings import booked, cancel, pay
from services.booking.tests.test_reservations import expire_now
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


MONTHS = "Januari Februari Maret April Mei Juni Juli Agustus September Oktober November Desember"


def on_clock(at: Timestamp, zone: str) -> str:
    """An instant as the rider reads it: on the place's wall clock, with the date and zone."""
    local = at.ToDatetime(tzinfo=UTC).astimezone(ZoneInfo(zone))
    month = MONTHS.split()[local.month - 1]
    return f"{local.day} {month} {local.year} pukul {local:%H:%M} {local:%Z}"


async def test_the_rider_hears_what_where_when_and_how_much(stack: Stack) -> None:
    # The clinic is in Bali (WITA): the rider (Jakarta by default) is told its own clock.
    clinic = await new_clinic(stack, price=150_000, time_zone="Asia/Makassar")
    booking, user = await booked(stack, clinic)
    await pay(stack, booking)
    await cancel(stack, booking)
    told = await texts(stack, user, "booking.paid", "booking.cancelled")
    visit = f"Vaksinasi di Klinik Hewan Sehat pada {on_clock(booking.slot_start, 'Asia/Makassar')}"
    assert visit.endswith(" WITA")
    assert told == {  # one message for the payment that confirmed it, not two
        "booking.paid": (
            f"Pembayaran Rp 150.000 untuk {visit} telah diterima; pemesanan Anda telah"
            " dikonfirmasi."
        ),
        "booking.cancelled": (
            f"Pemesanan Anda untuk {visit} telah dibatalkan. Pengembalian dana: Rp 135.000."
        ),
    }


async def test_a_booking_left_unpaid_says_why_it_was_cancelled(stack: Stack) -> None:
    clinic = await new_clinic(stack, price=100_000)
    booking, user = await booked(stack, clinic)
    async with await psycopg.AsyncConnection.connect(stack.database_url(), autocommit=True) as c:
        await c.execute(
            "UPDATE bookings SET created_at = %s WHERE booking_id = %s",
            (datetime.now(UTC) - timedelta(hours=1), booking.booking_id),
        )  # past the payment window
    async with replica(stack) as sweeper:
        assert await sweeper.bookings.expire_unpaid() >= 1
    told = await texts(stack, user, "booking.cancelled")
    assert told["booking.cancelled"] == (
        "Pemesanan Anda untuk Vaksinasi di Klinik Hewan Sehat pada"
        f" {on_clock(booking.slot_start, 'Asia/Jakarta')} dibatalkan karena pembayaran"
        " Rp 100.000 tidak diterima tepat waktu. Silakan pesan kembali jika masih dibutuhkan."
    )


async def test_a_moved_visit_says_from_when_to_when(stack: Stack) -> None:
    clinic = await new_clinic(stack, price=100_000)
    booking, user = await booked(stack, clinic)
    await pay(stack, booking)
    cheaper = await stack.booking.CreateSlot(
        pb.CreateSlotRequest(
            clinic_id=clinic.id, service_id=clinic.service.service_id,
            start_time=stamp(future_hour()), price=idr(70_000),
        ),
        metadata=stack.metadata(),
    )  # fmt: skip
    await stack.booking.RescheduleBooking(
        pb.RescheduleBookingRequest(
            booking_id=booking.booking_id, user_id=user, new_slot_id=cheaper.slot_id
        ),
        metadata=stack.as_rider(user),
    )
    told = await texts(stack, user, "booking.rescheduled")
    assert told["booking.rescheduled"] == (
        "Jadwal pemesanan Anda untuk Vaksinasi di Klinik Hewan Sehat telah diubah dari"
        f" {on_clock(booking.slot_start, 'Asia/Jakarta')} menjadi"
        f" {on_clock(cheaper.start_time, 'Asia/Jakarta')}."
        " Pengembalian selisih harga: Rp 30.000."
    )


async def test_an_expired_reservation_names_the_visit_it_held(stack: Stack) -> None:
    clinic = await new_clinic(stack)
    slot = await new_slot(stack, clinic)
    user, pet = await new_rider(stack)
    held = await reserve(stack, slot.slot_id, user, pet)
    await expire_now(stack, [held.reservation_id])
    async with replica(stack) as sweeper:
        assert await sweeper.reservations.expire_due() == 1
    told = await texts(stack, user, "booking.reservation_expired")
    assert told["booking.reservation_expired"] == (
        "Reservasi Anda untuk Vaksinasi di Klinik Hewan Sehat pada"
        f" {on_clock(slot.start_time, 'Asia/Jakarta')} telah kedaluwarsa karena tidak"
        " dikonfirmasi tepat waktu."
    )


async def test_a_room_booking_names_the_room_where_it_is_and_its_hours(stack: Stack) -> None:
    stub, room = facilities(stack), await new_facility(stack, time_zone="Asia/Jayapura")
    user, _ = await new_rider(stack)
    booked_room = await stub.BookFacility(
        book_request(room, quarter(3, 4), quarter(3, 8), user), metadata=stack.as_rider(user)
    )
    await stub.CancelFacilityBooking(
        facility_pb2.CancelFacilityBookingRequest(booking_id=booked_room.booking_id, user_id=user),
        metadata=stack.as_rider(user),
    )
    told = await texts(stack, user, "facility.booking_created", "facility.booking_cancelled")
    start = on_clock(booked_room.start_time, "Asia/Jayapura")  # 10:00 WIT
    end = booked_room.end_time.ToDatetime(tzinfo=UTC).astimezone(ZoneInfo("Asia/Jayapura"))
    when = start.replace(" WIT", f"–{end:%H:%M} WIT")
    what = f'{room.name} (Floor 3) untuk "Team Standup" pada {when}'
    assert told == {
        "facility.booking_created": f"Pemesanan {what} telah dibuat.",
        "facility.booking_cancelled": f"Pemesanan {what} telah dibatalkan.",
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
        "Pengingat: kunjungan Anda untuk Vaksinasi di Klinik Hewan Sehat pada"
        f" {on_clock(booking.slot_start, 'Asia/Jakarta')}. Sampai jumpa di klinik!"
    )
    events = await stack.booking.GetBookingEvents(
        pb.GetBookingEventsRequest(booking_id=booking.booking_id), metadata=stack.metadata()
    )
    assert [e.event_type for e in events.events].count("BookingReminder") == 1
