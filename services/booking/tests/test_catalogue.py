"""The clinic catalogue and its slots against the real service: overlaps of a staff member's
slots are impossible (the exclusion constraint decides, also between concurrent requests),
and a weekly schedule keeps the clinic's local time across a clock change."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.type import dayofweek_pb2, timeofday_pb2
from grpc import aio
from tiket.booking.v1 import booking_pb2 as pb

from services.booking.tests.stack import (
    Stack,
    calendar,
    future_hour,
    new_clinic,
    new_rider,
    new_slot,
    stamp,
)
from tests.support.grpc_errors import error_reason

pytestmark = pytest.mark.asyncio(loop_scope="module")
BERLIN = ZoneInfo("Europe/Berlin")


async def test_of_20_concurrent_overlapping_staff_slots_exactly_one_is_made(
    stack: Stack,
) -> None:
    clinic = await new_clinic(stack)
    start = future_hour()

    async def create(i: int) -> pb.Slot:
        """One staff member's slot, asked again (the same request_id) while the service
        answers UNAVAILABLE: on a busy machine the 20 may wait longer than the pool's
        timeout for a connection ("retry shortly"), as a client would then."""
        request = pb.CreateSlotRequest(
            clinic_id=clinic.id,
            service_id=clinic.service.service_id,
            staff_id=clinic.staff.staff_id,
            start_time=stamp(start + timedelta(minutes=i % 6 * 5)),
            request_id=f"overlap-{clinic.id}-{i}",
        )
        for attempt in range(4):
            try:
                return await stack.booking.CreateSlot(request, metadata=stack.metadata())
            except aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        return await stack.booking.CreateSlot(request, metadata=stack.metadata())

    # Each starts 5 minutes after the one before and lasts 30: every pair overlaps.
    results = await asyncio.gather(*(create(i) for i in range(20)), return_exceptions=True)
    made = [r for r in results if isinstance(r, pb.Slot)]
    assert len(made) == 1
    refused = [r for r in results if not isinstance(r, pb.Slot)]
    for error in refused:
        assert isinstance(error, aio.AioRpcError), error
        assert error.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED)
    overlap = next(e for e in refused if e.code() is grpc.StatusCode.FAILED_PRECONDITION)
    assert error_reason(overlap) == "SLOT_OVERLAP"
    assert made[0].slot_id in overlap.details()


async def test_a_weekly_schedule_across_the_spring_change_keeps_nine_oclock_local(
    stack: Stack,
) -> None:
    clinic = await new_clinic(stack, time_zone="Europe/Berlin")
    nine = timeofday_pb2.TimeOfDay(hours=9)
    ten = timeofday_pb2.TimeOfDay(hours=10)
    request = pb.GenerateSlotsRequest(
        clinic_id=clinic.id,
        service_id=clinic.service.service_id,
        staff_id=clinic.staff.staff_id,
        first_date=calendar(date(2027, 3, 22)),
        last_date=calendar(date(2027, 4, 4)),
        windows=[
            pb.ScheduleWindow(day_of_week=day, start=nine, end=ten)
            for day in (dayofweek_pb2.MONDAY, dayofweek_pb2.SUNDAY)
        ],
        capacity=2,
        request_id="berlin-spring",
    )
    made = await stack.booking.GenerateSlots(request, metadata=stack.as_operator(clinic.id))
    local = [s.start_time.ToDatetime().replace(tzinfo=ZoneInfo("UTC")).astimezone(BERLIN)
             for s in made.slots]  # fmt: skip
    assert [t.strftime("%a %d %H:%M") for t in local[::2]] == [
        "Mon 22 09:00", "Sun 28 09:00", "Mon 29 09:00", "Sun 04 09:00"
    ]  # fmt: skip
    assert {t.strftime("%H:%M") for t in local} == {"09:00", "09:30"}
    assert [s.start_time.ToDatetime().hour for s in made.slots[::2]] == [8, 7, 7, 7]
    assert made.skipped == 0 and all(s.capacity == 2 for s in made.slots)
    # A retry returns the same slots; the same request_id with another schedule is refused.
    again = await stack.booking.GenerateSlots(request, metadata=stack.metadata())
    assert [s.slot_id for s in again.slots] == [s.slot_id for s in made.slots]
    request.capacity = 3
    with pytest.raises(aio.AioRpcError) as caught:
        await stack.booking.GenerateSlots(request, metadata=stack.metadata())
    assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS
    # The same schedule under a new request_id overlaps every slot: nothing is made.
    request.request_id, request.capacity = "berlin-spring-2", 2
    with pytest.raises(aio.AioRpcError) as caught:
        await stack.booking.GenerateSlots(request, metadata=stack.metadata())
    assert error_reason(caught.value) == "SLOT_OVERLAP"
    search = await stack.booking.SearchAvailableSlots(
        pb.SearchAvailableSlotsRequest(
            clinic_id=clinic.id,
            service_id=clinic.service.service_id,
            first_date=calendar(date(2027, 3, 28)),
            last_date=calendar(date(2027, 3, 28)),
        ),
        metadata=stack.metadata(),
    )
    assert [s.slot_id for s in search.slots] == [s.slot_id for s in made.slots[2:4]]


async def test_an_operator_manages_only_their_own_clinic(stack: Stack) -> None:
    ours, theirs = await new_clinic(stack), await new_clinic(stack)
    request = pb.CreateStaffRequest(clinic_id=theirs.id, full_name="drh. Budi")
    with pytest.raises(aio.AioRpcError) as caught:
        await stack.booking.CreateStaff(request, metadata=stack.as_operator(ours.id))
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    listed = await stack.booking.ListStaff(
        pb.ListStaffRequest(clinic_id=theirs.id), metadata=stack.metadata()
    )
    assert [s.full_name for s in listed.staff] == ["drh. Sari"]
    request.clinic_id = ours.id
    made = await stack.booking.CreateStaff(request, metadata=stack.as_operator(ours.id))
    assert made.clinic_id == ours.id


async def test_lists_page_through_everything_once(stack: Stack) -> None:
    clinic = await new_clinic(stack)
    for i in range(4):
        await stack.booking.CreateClinicService(
            pb.CreateClinicServiceRequest(
                clinic_id=clinic.id, name=f"Grooming {i}", duration_minutes=60,
                price=clinic.service.price,
            ),
            metadata=stack.metadata(),
        )  # fmt: skip
    seen, token = [], ""
    while True:
        page = await stack.booking.ListClinicServices(
            pb.ListClinicServicesRequest(clinic_id=clinic.id, page_size=2, page_token=token),
            metadata=stack.metadata(),
        )
        seen += [s.name for s in page.services]
        if not (token := page.next_page_token):
            break
    assert seen == ["Vaksinasi", "Grooming 0", "Grooming 1", "Grooming 2", "Grooming 3"]


async def test_a_slot_out_of_service_refuses_new_reservations_and_comes_back(
    stack: Stack,
) -> None:
    clinic = await new_clinic(stack)
    slot = await new_slot(stack, clinic, capacity=2)
    staff = stack.as_operator(clinic.id)
    closed = await stack.booking.UpdateSlotStatus(
        pb.UpdateSlotStatusRequest(
            slot_id=slot.slot_id, status=pb.SLOT_STATUS_MAINTENANCE,
            expected_version=slot.version, reason="AC diperbaiki",
        ),
        metadata=staff,
    )  # fmt: skip
    assert (closed.status, closed.version) == (pb.SLOT_STATUS_MAINTENANCE, slot.version + 1)
    user, pet = await new_rider(stack)
    with pytest.raises(aio.AioRpcError) as caught:
        await stack.booking.ReserveSlot(
            pb.ReserveSlotRequest(slot_id=slot.slot_id, user_id=user, pet_id=pet),
            metadata=stack.as_rider(user),
        )
    assert error_reason(caught.value) == "SLOT_NOT_AVAILABLE"
    stale = pb.UpdateSlotStatusRequest(
        slot_id=slot.slot_id, status=pb.SLOT_STATUS_AVAILABLE, expected_version=slot.version
    )
    with pytest.raises(aio.AioRpcError) as caught:
        await stack.booking.UpdateSlotStatus(stale, metadata=staff)
    assert caught.value.code() is grpc.StatusCode.ABORTED
    other = await new_clinic(stack)
    stale.expected_version = closed.version
    with pytest.raises(aio.AioRpcError) as caught:
        await stack.booking.UpdateSlotStatus(stale, metadata=stack.as_operator(other.id))
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    reopened = await stack.booking.UpdateSlotStatus(stale, metadata=staff)
    assert reopened.status == pb.SLOT_STATUS_AVAILABLE
    held = await stack.booking.ReserveSlot(
        pb.ReserveSlotRequest(slot_id=slot.slot_id, user_id=user, pet_id=pet),
        metadata=stack.as_rider(user),
    )
    assert held.status == pb.RESERVATION_STATUS_PENDING


async def test_a_clinic_is_renamed_but_keeps_its_clock_once_it_has_slots(stack: Stack) -> None:
    clinic = await new_clinic(stack)
    renamed = await stack.booking.UpdateClinic(
        pb.UpdateClinicRequest(
            clinic=pb.Clinic(clinic_id=clinic.id, name="Klinik Hewan Sehat Baru"),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        ),
        metadata=stack.as_operator(clinic.id),
    )
    assert (renamed.name, renamed.time_zone) == ("Klinik Hewan Sehat Baru", "Asia/Jakarta")
    await new_slot(stack, clinic)
    move = pb.UpdateClinicRequest(
        clinic=pb.Clinic(clinic_id=clinic.id, time_zone="Asia/Makassar"),
        update_mask=field_mask_pb2.FieldMask(paths=["time_zone"]),
    )
    with pytest.raises(aio.AioRpcError) as caught:
        await stack.booking.UpdateClinic(move, metadata=stack.metadata())
    assert error_reason(caught.value) == "CLINIC_HAS_SLOTS"
    move.update_mask.paths[:] = ["created_at"]
    with pytest.raises(aio.AioRpcError) as caught:
        await stack.booking.UpdateClinic(move, metadata=stack.metadata())
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    seen = await stack.booking.GetClinic(
        pb.GetClinicRequest(clinic_id=clinic.id), metadata=stack.metadata()
    )
    assert (seen.name, seen.time_zone) == ("Klinik Hewan Sehat Baru", "Asia/Jakarta")
