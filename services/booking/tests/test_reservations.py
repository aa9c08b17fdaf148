"""ReserveSlot, ReleaseReservation, ConfirmReservation and the expiry sweeper against the real
services: places are taken and given back by the database, never twice."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2
from grpc import aio
from tiket.booking.v1 import booking_pb2 as pb

from services.booking.tests.stack import (
    Stack,
    audit,
    confirm,
    idr,
    new_clinic,
    new_rider,
    new_slot,
    replica,
    reserve,
)
from tests.support.grpc_errors import error_reason

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_500_concurrent_reservations_of_3_places_take_exactly_3(stack: Stack) -> None:
    clinic = await new_clinic(stack)
    slot = await new_slot(stack, clinic, capacity=3)
    riders = await asyncio.gather(*(new_rider(stack) for _ in range(20)))
    # 500 calls from 20 riders: most are refused SLOT_FULL, a rider's second ALREADY_RESERVED.
    calls = [riders[i % len(riders)] for i in range(500)]
    results = await asyncio.gather(
        *(
            reserve(stack, slot.slot_id, user, pet, request_id=f"r-{i}")
            for i, (user, pet) in enumerate(calls)
        ),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, pb.Reservation)]
    lost = [r for r in results if not isinstance(r, pb.Reservation)]
    assert len(won) == 3
    assert len({r.user_id for r in won}) == 3  # one rider never holds a slot twice
    for error in lost:
        assert isinstance(error, aio.AioRpcError), error
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION, error.details()
        assert error_reason(error) in {"SLOT_FULL", "ALREADY_RESERVED"}
    assert sum(error_reason(e) == "SLOT_FULL" for e in lost) > 0
    after = await stack.booking.GetSlot(
        pb.GetSlotRequest(slot_id=slot.slot_id), metadata=stack.metadata()
    )
    assert (after.remaining, after.status) == (0, pb.SLOT_STATUS_BOOKED)
    assert await audit(stack.database_url(), stack.database_url("user")) == []
    # Not confirmed in time: the three places come back.
    await expire_now(stack, [r.reservation_id for r in won])
    async with replica(stack) as sweeper:
        assert await sweeper.reservations.expire_due() == 3
    back = await stack.booking.GetSlot(pb.GetSlotRequest(slot_id=slot.slot_id),
                                       metadata=stack.metadata())  # fmt: skip
    assert (back.remaining, back.status) == (3, pb.SLOT_STATUS_AVAILABLE)


async def test_a_retried_reservation_returns_the_first(stack: Stack) -> None:
    clinic = await new_clinic(stack)
    slot = await new_slot(stack, clinic, capacity=2)
    user, pet = await new_rider(stack)
    first = await reserve(stack, slot.slot_id, user, pet, request_id="same")
    again = await reserve(stack, slot.slot_id, user, pet, request_id="same")
    assert again.reservation_id == first.reservation_id
    assert again.lock_token == first.lock_token
    after = await stack.booking.GetSlot(
        pb.GetSlotRequest(slot_id=slot.slot_id), metadata=stack.metadata()
    )
    assert after.remaining == 1


async def test_expired_reservations_give_their_places_back(stack: Stack) -> None:
    clinic = await new_clinic(stack)
    slot = await new_slot(stack, clinic, capacity=2)
    taken = []
    for _ in range(2):
        user, pet = await new_rider(stack)
        taken.append(await reserve(stack, slot.slot_id, user, pet))
    await expire_now(stack, [r.reservation_id for r in taken])
    async with replica(stack) as sweeper:
        assert await sweeper.reservations.expire_due() == 2
        assert await sweeper.reservations.expire_due() == 0
    after = await stack.booking.GetSlot(
        pb.GetSlotRequest(slot_id=slot.slot_id), metadata=stack.metadata()
    )
    assert (after.remaining, after.status) == (2, pb.SLOT_STATUS_AVAILABLE)
    seen = await stack.booking.GetReservation(
        pb.GetReservationRequest(reservation_id=taken[0].reservation_id),
        metadata=stack.metadata(),
    )
    assert seen.status == pb.RESERVATION_STATUS_EXPIRED
    # The rider is told of it (booking.reservation_expired): what, where, on which clock.
    [(told,)] = await rows(
        stack,
        "SELECT payload FROM event_store WHERE aggregate_id = %s AND event_type = %s",
        taken[0].reservation_id,
        "ReservationExpired",
    )
    assert (told["clinicName"], told["serviceName"], told["timeZone"]) == (
        "Klinik Hewan Sehat",
        "Vaksinasi",
        "Asia/Jakarta",
    )


async def expire_now(stack: Stack, reservation_ids: list[str]) -> None:
    """Move reservations' expiry into the past (as if ten minutes had gone by)."""
    async with await psycopg.AsyncConnection.connect(stack.database_url(), autocommit=True) as c:
        await c.execute(
            """UPDATE reservations SET created_at = created_at - %s, expires_at = now() - %s
                WHERE reservation_id = ANY(%s::uuid[])""",
            (timedelta(hours=1), timedelta(seconds=1), reservation_ids),
        )


async def rows(stack: Stack, sql: str, *params) -> list[tuple]:
    async with await psycopg.AsyncConnection.connect(stack.database_url()) as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()


async def test_a_confirmed_reservation_is_a_booking_at_the_slots_price(stack: Stack) -> None:
    clinic = await new_clinic(stack, price=150_000)
    slot = await new_slot(stack, clinic, capacity=2)
    user, pet = await new_rider(stack)
    held = await reserve(stack, slot.slot_id, user, pet)
    booking = await confirm(stack, held, notes="Kucing saya batuk")
    assert booking.status == pb.BOOKING_STATUS_PENDING_PAYMENT
    assert booking.payment_status == pb.PAYMENT_STATUS_PENDING
    assert (booking.total_amount.units, booking.final_amount.units) == (150_000, 150_000)
    assert (booking.slot_id, booking.pet_id, booking.notes) == (
        slot.slot_id,
        pet,
        "Kucing saya batuk",
    )
    # A retry answers with the same booking; the place stays taken once.
    assert (await confirm(stack, held)).booking_id == booking.booking_id
    seen = await stack.booking.GetReservation(
        pb.GetReservationRequest(reservation_id=held.reservation_id, user_id=user),
        metadata=stack.as_rider(user),
    )
    assert (seen.status, seen.booking_id) == (pb.RESERVATION_STATUS_CONFIRMED, booking.booking_id)
    got = await stack.booking.GetBooking(
        pb.GetBookingRequest(booking_id=booking.booking_id, user_id=user),
        metadata=stack.as_rider(user),
    )
    assert got == booking
    after = await stack.booking.GetSlot(
        pb.GetSlotRequest(slot_id=slot.slot_id), metadata=stack.metadata()
    )
    assert after.remaining == 1
    history = await rows(
        stack,
        "SELECT previous_status, new_status, changed_by, change_reason FROM booking_history"
        " WHERE booking_id = %s",
        booking.booking_id,
    )
    assert history == [(None, "pending_payment", f"user:{user}", "reservation_confirmed")]
    stored = await rows(
        stack,
        "SELECT event_type FROM event_store WHERE aggregate_id = ANY(%s::uuid[]) ORDER BY seq",
        [held.reservation_id, booking.booking_id],
    )
    assert [e for (e,) in stored] == [
        "ReservationCreated", "ReservationConfirmed", "BookingCreated"
    ]  # fmt: skip


async def test_staff_may_grant_a_discount_riders_may_not(stack: Stack) -> None:
    clinic = await new_clinic(stack, price=100_000)
    slot = await new_slot(stack, clinic, capacity=2)
    user, pet = await new_rider(stack)
    held = await reserve(stack, slot.slot_id, user, pet)
    with pytest.raises(aio.AioRpcError) as caught:
        await confirm(stack, held, discount=idr(10_000))
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    booking = await stack.booking.ConfirmReservation(
        pb.ConfirmReservationRequest(
            reservation_id=held.reservation_id, lock_token=held.lock_token,
            discount=idr(10_000),
        ),
        metadata=stack.as_operator(clinic.id),
    )  # fmt: skip
    assert (booking.discount_amount.units, booking.final_amount.units) == (10_000, 90_000)


async def test_a_pet_of_another_rider_is_refused_and_nothing_is_booked(stack: Stack) -> None:
    clinic = await new_clinic(stack)
    slot = await new_slot(stack, clinic)
    user, _ = await new_rider(stack)
    _, strangers_pet = await new_rider(stack)
    held = await reserve(stack, slot.slot_id, user, strangers_pet)
    with pytest.raises(aio.AioRpcError) as caught:
        await confirm(stack, held)
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(caught.value) == "PET_NOT_OWNED"
    assert await rows(stack, "SELECT 1 FROM bookings WHERE slot_id = %s", slot.slot_id) == []


async def swept_reservation(stack: Stack) -> tuple[pb.Slot, pb.Reservation]:
    """A slot of one place and its reservation, expired and swept (the place is back)."""
    clinic = await new_clinic(stack)
    slot = await new_slot(stack, clinic, capacity=1)
    user, pet = await new_rider(stack)
    held = await reserve(stack, slot.slot_id, user, pet)
    await expire_now(stack, [held.reservation_id])
    async with replica(stack) as sweeper:
        assert await sweeper.reservations.expire_due() >= 1
    return slot, held


async def test_an_expired_reservation_is_taken_again_while_its_place_is_free(
    stack: Stack,
) -> None:
    slot, held = await swept_reservation(stack)
    booking = await confirm(stack, held)  # nobody took the place meanwhile
    assert booking.status == pb.BOOKING_STATUS_PENDING_PAYMENT
    after = await stack.booking.GetSlot(
        pb.GetSlotRequest(slot_id=slot.slot_id), metadata=stack.metadata()
    )
    assert (after.remaining, after.status) == (0, pb.SLOT_STATUS_BOOKED)


async def test_an_expired_reservation_whose_place_was_taken_is_refused(stack: Stack) -> None:
    slot, held = await swept_reservation(stack)
    other, other_pet = await new_rider(stack)
    await reserve(stack, slot.slot_id, other, other_pet)
    with pytest.raises(aio.AioRpcError) as caught:
        await confirm(stack, held)
    assert error_reason(caught.value) == "RESERVATION_EXPIRED"
    assert await rows(stack, "SELECT 1 FROM bookings WHERE slot_id = %s", slot.slot_id) == []


async def start_now(stack: Stack, slot_id: str) -> None:
    """Move the slot so that it started a minute ago (as if the rider had waited)."""
    async with await psycopg.AsyncConnection.connect(stack.database_url(), autocommit=True) as c:
        await c.execute(
            """UPDATE slots SET start_time = now() - interval '1 minute',
                                end_time = now() + interval '29 minutes',
                                date = (now() AT TIME ZONE 'Asia/Jakarta')::date
                WHERE slot_id = %s""",
            (slot_id,),
        )


@pytest.mark.parametrize("expired", [False, True], ids=["pending", "expired-unswept"])
async def test_a_reservation_whose_slot_has_started_is_not_confirmed(
    stack: Stack, expired: bool
) -> None:
    clinic = await new_clinic(stack)
    slot = await new_slot(stack, clinic, capacity=1)
    user, pet = await new_rider(stack)
    held = await reserve(stack, slot.slot_id, user, pet)
    await start_now(stack, slot.slot_id)
    if expired:
        await expire_now(stack, [held.reservation_id])  # not swept yet: it still holds its place
    with pytest.raises(aio.AioRpcError) as caught:
        await confirm(stack, held)
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(caught.value) == "SLOT_NOT_AVAILABLE"
    assert "started at" in (caught.value.details() or "")
    assert await rows(stack, "SELECT 1 FROM bookings WHERE slot_id = %s", slot.slot_id) == []
    [(status,)] = await rows(
        stack, "SELECT status FROM reservations WHERE reservation_id = %s", held.reservation_id
    )
    assert status == "pending"  # the sweeper gives its place back when it is due


async def test_a_swept_reservation_whose_slot_has_started_says_so(stack: Stack) -> None:
    slot, held = await swept_reservation(stack)
    await start_now(stack, slot.slot_id)
    with pytest.raises(aio.AioRpcError) as caught:
        await confirm(stack, held)
    assert error_reason(caught.value) == "SLOT_NOT_AVAILABLE"
    assert "started at" in (caught.value.details() or "")


async def test_a_released_place_is_back_and_a_second_release_changes_nothing(
    stack: Stack,
) -> None:
    clinic = await new_clinic(stack)
    slot = await new_slot(stack, clinic, capacity=1)
    user, pet = await new_rider(stack)
    held = await reserve(stack, slot.slot_id, user, pet)
    request = pb.ReleaseReservationRequest(
        reservation_id=held.reservation_id, user_id=user, lock_token=held.lock_token
    )
    released = await stack.booking.ReleaseReservation(request, metadata=stack.as_rider(user))
    assert released.status == pb.RESERVATION_STATUS_CANCELLED
    again = await stack.booking.ReleaseReservation(request, metadata=stack.as_rider(user))
    assert again.status == pb.RESERVATION_STATUS_CANCELLED
    after = await stack.booking.GetSlot(
        pb.GetSlotRequest(slot_id=slot.slot_id), metadata=stack.metadata()
    )
    assert (after.remaining, after.status) == (1, pb.SLOT_STATUS_AVAILABLE)


async def test_a_search_never_shows_a_place_a_reservation_took(stack: Stack) -> None:
    clinic = await new_clinic(stack)
    slot = await new_slot(stack, clinic, capacity=1)
    day = slot.date
    search = pb.SearchAvailableSlotsRequest(
        clinic_id=clinic.id, service_id=clinic.service.service_id, first_date=day, last_date=day
    )
    before = await stack.booking.SearchAvailableSlots(search, metadata=stack.metadata())
    assert slot.slot_id in {s.slot_id for s in before.slots}  # and now it is cached
    user, pet = await new_rider(stack)
    held = await reserve(stack, slot.slot_id, user, pet)
    after = await stack.booking.SearchAvailableSlots(search, metadata=stack.metadata())
    assert slot.slot_id not in {s.slot_id for s in after.slots}
    await stack.booking.ReleaseReservation(
        pb.ReleaseReservationRequest(
            reservation_id=held.reservation_id, user_id=user, lock_token=held.lock_token
        ),
        metadata=stack.as_rider(user),
    )
    back = await stack.booking.SearchAvailableSlots(search, metadata=stack.metadata())
    assert [s.remaining for s in back.slots if s.slot_id == slot.slot_id] == [1]


async def set_active(stack: Stack, clinic_id: str, active: bool) -> None:
    await stack.booking.UpdateClinic(
        pb.UpdateClinicRequest(
            clinic=pb.Clinic(clinic_id=clinic_id, active=active),
            update_mask=field_mask_pb2.FieldMask(paths=["active"]),
        ),
        metadata=stack.metadata(),
    )


async def test_a_deactivated_clinic_takes_no_new_places(stack: Stack) -> None:
    clinic = await new_clinic(stack)
    slot = await new_slot(stack, clinic, capacity=2)
    user, pet = await new_rider(stack)
    booked = await confirm(stack, await reserve(stack, (await new_slot(stack, clinic)).slot_id,
                                                user, pet))  # fmt: skip
    search = pb.SearchAvailableSlotsRequest(
        clinic_id=clinic.id,
        service_id=clinic.service.service_id,
        first_date=slot.date,
        last_date=slot.date,
    )
    before = await stack.booking.SearchAvailableSlots(search, metadata=stack.as_rider(user))
    assert slot.slot_id in {s.slot_id for s in before.slots}  # and now it is cached

    await set_active(stack, clinic.id, False)
    after = await stack.booking.SearchAvailableSlots(search, metadata=stack.as_rider(user))
    assert after.slots == []
    with pytest.raises(aio.AioRpcError) as caught:
        await reserve(stack, slot.slot_id, user, pet)
    assert error_reason(caught.value) == "CLINIC_INACTIVE"
    with pytest.raises(aio.AioRpcError) as caught:
        await stack.booking.RescheduleBooking(
            pb.RescheduleBookingRequest(
                booking_id=booked.booking_id, user_id=user, new_slot_id=slot.slot_id
            ),
            metadata=stack.as_rider(user),
        )
    assert error_reason(caught.value) == "CLINIC_INACTIVE"
    unchanged = await stack.booking.GetSlot(
        pb.GetSlotRequest(slot_id=slot.slot_id), metadata=stack.metadata()
    )
    assert unchanged.remaining == 2
    assert await rows(stack, "SELECT 1 FROM reservations WHERE slot_id = %s", slot.slot_id) == []

    await set_active(stack, clinic.id, True)
    back = await stack.booking.SearchAvailableSlots(search, metadata=stack.as_rider(user))
    assert slot.slot_id in {s.slot_id for s in back.slots}
    assert (await reserve(stack, slot.slot_id, user, pet)).status == pb.RESERVATION_STATUS_PENDING


async def test_an_expired_reservation_of_a_deactivated_clinic_is_not_taken_again(
    stack: Stack,
) -> None:
    slot, held = await swept_reservation(stack)
    await set_active(stack, held.clinic_id, False)
    with pytest.raises(aio.AioRpcError) as caught:
        await confirm(stack, held)
    assert error_reason(caught.value) == "CLINIC_INACTIVE"
    assert await rows(stack, "SELECT 1 FROM bookings WHERE slot_id = %s", slot.slot_id) == []
