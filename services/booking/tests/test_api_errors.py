"""Bad input, unknown ids, business refusals, access and retries of the booking service's
catalogue, slots, reservations and bookings: each gets the documented status
(INVALID_ARGUMENT naming the field in a google.rpc.BadRequest, NOT_FOUND, FAILED_PRECONDITION
with its ErrorInfo reason, PERMISSION_DENIED, ALREADY_EXISTS) and a refusal writes nothing.
The money and visit RPCs' refusals are in test_bookings.py and test_gateway.py."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import grpc
import pytest
import pytest_asyncio
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2, dayofweek_pb2, money_pb2, timeofday_pb2
from grpc import aio
from tiket.booking.v1 import booking_pb2 as pb

from libs.auth import Role
from services.booking.tests.stack import (
    Clinic,
    Stack,
    calendar,
    confirm,
    future_hour,
    idr,
    new_clinic,
    new_rider,
    new_slot,
    reserve,
    row_counts,
    stamp,
)
from tests.support.grpc_errors import bad_request_fields, error_reason, status_bytes

pytestmark = pytest.mark.asyncio(loop_scope="module")

PRICE = 150_000
JAKARTA = ZoneInfo("Asia/Jakarta")
BUILT = frozenset(
    {
        "CreateClinic",
        "GetClinic",
        "ListClinics",
        "CreateClinicService",
        "ListClinicServices",
        "CreateStaff",
        "ListStaff",
        "CreateSlot",
        "GenerateSlots",
        "GetSlot",
        "SearchAvailableSlots",
        "ReserveSlot",
        "GetReservation",
        "ReleaseReservation",
        "ConfirmReservation",
        "GetBooking",
    }
)
METHODS = pb.DESCRIPTOR.services_by_name["BookingService"].methods_by_name
MISSING = "5b0d3a8e-0000-4000-8000-000000000000"  # a well-formed id nothing has


@dataclass(frozen=True)
class Scene:
    """Two clinics, a slot of clinic A with a place held by rider A, and rider B."""

    a: Clinic
    b: Clinic
    slot: pb.Slot
    rider_a: tuple[str, str]
    rider_b: tuple[str, str]
    held: pb.Reservation


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scene(stack: Stack) -> Scene:
    a, b = await new_clinic(stack, price=PRICE), await new_clinic(stack)
    slot = await new_slot(stack, a, capacity=5)
    rider_a, rider_b = await new_rider(stack), await new_rider(stack)
    held = await reserve(stack, slot.slot_id, *rider_a)
    return Scene(a, b, slot, rider_a, rider_b, held)


async def refusal(call: Awaitable[object]) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as caught:
        await call
    return caught.value


def call(stack: Stack, method: str, request, metadata=None) -> Awaitable[object]:
    return getattr(stack.booking, method)(request, metadata=metadata or stack.metadata())


def local_day(days: int) -> date:
    """The clinic's (Jakarta's) date `days` from today."""
    return datetime.now(JAKARTA).date() + timedelta(days=days)


def at(hours: int, minutes: int = 0) -> timeofday_pb2.TimeOfDay:
    return timeofday_pb2.TimeOfDay(hours=hours, minutes=minutes)


def window(day: date, start: timeofday_pb2.TimeOfDay, end: timeofday_pb2.TimeOfDay):
    return pb.ScheduleWindow(day_of_week=day.isoweekday(), start=start, end=end)


def built(cls, valid: dict, changes: dict):
    """`cls` from the valid fields with `changes` applied; a change to None leaves it unset."""
    fields = {**valid, **changes}
    return cls(**{k: v for k, v in fields.items() if v is not None})


def slot_request(s: Scene, **changes) -> pb.CreateSlotRequest:
    valid = {
        "clinic_id": s.a.id,
        "service_id": s.a.service.service_id,
        "start_time": stamp(future_hour()),
    }
    return built(pb.CreateSlotRequest, valid, changes)


def generate_request(s: Scene, **changes) -> pb.GenerateSlotsRequest:
    day = local_day(30)
    valid = {
        "clinic_id": s.a.id,
        "service_id": s.a.service.service_id,
        "first_date": calendar(day),
        "last_date": calendar(day),
        "windows": [window(day, at(9), at(10))],
        "request_id": f"gen-{uuid.uuid4()}",
    }
    return built(pb.GenerateSlotsRequest, valid, changes)


def service_request(s: Scene, **changes) -> pb.CreateClinicServiceRequest:
    valid = {"clinic_id": s.a.id, "name": "Grooming", "duration_minutes": 30, "price": idr(1)}
    return built(pb.CreateClinicServiceRequest, valid, changes)


def search_request(s: Scene, **changes) -> pb.SearchAvailableSlotsRequest:
    valid = {
        "clinic_id": s.a.id,
        "service_id": s.a.service.service_id,
        "first_date": calendar(local_day(0)),
        "last_date": calendar(local_day(7)),
    }
    return built(pb.SearchAvailableSlotsRequest, valid, changes)


def confirm_request(s: Scene, **changes) -> pb.ConfirmReservationRequest:
    valid = {"reservation_id": s.held.reservation_id, "lock_token": s.held.lock_token}
    return built(pb.ConfirmReservationRequest, valid, changes)


def release_request(s: Scene, **changes) -> pb.ReleaseReservationRequest:
    valid = {"reservation_id": s.held.reservation_id, "lock_token": s.held.lock_token}
    return built(pb.ReleaseReservationRequest, valid, changes)


def reserve_request(s: Scene, **changes) -> pb.ReserveSlotRequest:
    user, pet = s.rider_a
    valid = {"slot_id": s.slot.slot_id, "user_id": user, "pet_id": pet}
    return built(pb.ReserveSlotRequest, valid, changes)


YESTERDAY = date.today() - timedelta(days=2)
PAST = datetime.now(UTC) - timedelta(hours=1)
Case = tuple[str, Callable[[Scene], object], str]
BAD_INPUT: list[Case] = [
    # catalogue
    ("CreateClinic", lambda s: pb.CreateClinicRequest(), "name"),
    ("CreateClinic", lambda s: pb.CreateClinicRequest(name="   "), "name"),
    ("CreateClinic", lambda s: pb.CreateClinicRequest(name="x" * 256), "name"),
    ("CreateClinic", lambda s: pb.CreateClinicRequest(name="Klinik\x00"), "name"),
    ("CreateClinic", lambda s: pb.CreateClinicRequest(name="K", address="a" * 2001), "address"),
    (
        "CreateClinic",
        lambda s: pb.CreateClinicRequest(name="K", time_zone="Mars/Base"),
        "time_zone",
    ),
    (
        "CreateClinic",
        lambda s: pb.CreateClinicRequest(name="K", time_zone="../../etc"),
        "time_zone",
    ),
    (
        "CreateClinic",
        lambda s: pb.CreateClinicRequest(name="K", request_id="r" * 101),
        "request_id",
    ),
    ("GetClinic", lambda s: pb.GetClinicRequest(), "clinic_id"),
    ("GetClinic", lambda s: pb.GetClinicRequest(clinic_id="klinik-1"), "clinic_id"),
    ("ListClinics", lambda s: pb.ListClinicsRequest(page_size=501), "page_size"),
    ("ListClinics", lambda s: pb.ListClinicsRequest(page_size=-1), "page_size"),
    ("ListClinics", lambda s: pb.ListClinicsRequest(page_token="garbage"), "page_token"),
    ("CreateClinicService", lambda s: service_request(s, clinic_id="x"), "clinic_id"),
    ("CreateClinicService", lambda s: service_request(s, name=""), "name"),
    ("CreateClinicService", lambda s: service_request(s, duration_minutes=4), "duration_minutes"),
    ("CreateClinicService", lambda s: service_request(s, duration_minutes=481), "duration_minutes"),
    ("CreateClinicService", lambda s: service_request(s, price=None), "price"),
    ("CreateClinicService", lambda s: service_request(s, price=idr(-1)), "price"),
    (
        "CreateClinicService",
        lambda s: service_request(s, price=money_pb2.Money(currency_code="USD", units=5)),
        "price.currency_code",
    ),
    (
        "CreateClinicService",
        lambda s: service_request(s, price=money_pb2.Money(units=5, nanos=1)),
        "price.nanos",
    ),
    (
        "CreateClinicService",
        lambda s: service_request(s, default_capacity=1001),
        "default_capacity",
    ),
    ("CreateClinicService", lambda s: service_request(s, default_capacity=-1), "default_capacity"),
    ("CreateClinicService", lambda s: service_request(s, request_id="\t\n"), "request_id"),
    ("ListClinicServices", lambda s: pb.ListClinicServicesRequest(), "clinic_id"),
    (
        "ListClinicServices",
        lambda s: pb.ListClinicServicesRequest(clinic_id=s.a.id, page_token="e30="),
        "page_token",
    ),
    ("CreateStaff", lambda s: pb.CreateStaffRequest(clinic_id=s.a.id), "full_name"),
    ("CreateStaff", lambda s: pb.CreateStaffRequest(clinic_id="1", full_name="A"), "clinic_id"),
    (
        "CreateStaff",
        lambda s: pb.CreateStaffRequest(clinic_id=s.a.id, full_name="A", title="t" * 101),
        "title",
    ),
    ("ListStaff", lambda s: pb.ListStaffRequest(clinic_id=s.a.id, page_size=501), "page_size"),
    # slots
    ("CreateSlot", lambda s: slot_request(s, clinic_id=""), "clinic_id"),
    ("CreateSlot", lambda s: slot_request(s, service_id="service"), "service_id"),
    ("CreateSlot", lambda s: slot_request(s, staff_id="drh.sari"), "staff_id"),
    ("CreateSlot", lambda s: slot_request(s, start_time=None), "start_time"),
    ("CreateSlot", lambda s: slot_request(s, start_time=stamp(PAST)), "start_time"),
    (
        "CreateSlot",
        lambda s: slot_request(s, start_time=Timestamp(seconds=2_000_000_000, nanos=-1)),
        "start_time",
    ),
    (
        "CreateSlot",
        lambda s: slot_request(s, start_time=Timestamp(seconds=2**62)),
        "start_time",
    ),
    (
        "CreateSlot",
        lambda s: slot_request(s, start_time=stamp(future_hour(9)), end_time=stamp(PAST)),
        "end_time",
    ),
    (
        "CreateSlot",
        lambda s: slot_request(
            s,
            start_time=stamp(future_hour(9)),
            end_time=stamp(future_hour(9) + timedelta(days=2)),
        ),
        "end_time",
    ),
    ("CreateSlot", lambda s: slot_request(s, capacity=1001), "capacity"),
    ("CreateSlot", lambda s: slot_request(s, capacity=-1), "capacity"),
    ("CreateSlot", lambda s: slot_request(s, price=idr(-5)), "price"),
    ("CreateSlot", lambda s: slot_request(s, request_id="r" * 101), "request_id"),
    ("GenerateSlots", lambda s: generate_request(s, request_id=""), "request_id"),
    ("GenerateSlots", lambda s: generate_request(s, clinic_id="c"), "clinic_id"),
    ("GenerateSlots", lambda s: generate_request(s, first_date=None), "first_date"),
    (
        "GenerateSlots",
        lambda s: generate_request(s, first_date=date_pb2.Date(year=2030, month=2, day=30)),
        "first_date",
    ),
    (
        "GenerateSlots",
        lambda s: generate_request(s, last_date=calendar(local_day(29))),
        "last_date",
    ),
    (
        "GenerateSlots",
        lambda s: generate_request(s, last_date=calendar(local_day(30 + 92))),
        "last_date",
    ),
    (
        "GenerateSlots",
        lambda s: generate_request(
            s, first_date=calendar(YESTERDAY), last_date=calendar(YESTERDAY)
        ),
        "first_date",
    ),
    ("GenerateSlots", lambda s: generate_request(s, windows=[]), "windows"),
    (
        "GenerateSlots",
        lambda s: generate_request(s, windows=[pb.ScheduleWindow(start=at(9), end=at(10))]),
        "windows[0].day_of_week",
    ),
    (
        "GenerateSlots",
        lambda s: generate_request(
            s,
            windows=[
                pb.ScheduleWindow(
                    day_of_week=dayofweek_pb2.MONDAY,
                    start=timeofday_pb2.TimeOfDay(hours=9, seconds=30),
                    end=at(10),
                )
            ],
        ),
        "windows[0].start",
    ),
    (
        "GenerateSlots",
        lambda s: generate_request(
            s,
            windows=[pb.ScheduleWindow(day_of_week=dayofweek_pb2.MONDAY, start=at(9), end=at(24))],
        ),
        "windows[0].end",
    ),
    (
        "GenerateSlots",
        lambda s: generate_request(
            s,
            windows=[pb.ScheduleWindow(day_of_week=dayofweek_pb2.MONDAY, start=at(10), end=at(9))],
        ),
        "windows[0].end",
    ),
    (
        "GenerateSlots",
        lambda s: generate_request(
            s,
            windows=[
                pb.ScheduleWindow(day_of_week=dayofweek_pb2.MONDAY, start=at(9), end=at(11)),
                pb.ScheduleWindow(day_of_week=dayofweek_pb2.MONDAY, start=at(10), end=at(12)),
            ],
        ),
        "windows[1]",
    ),
    ("GenerateSlots", lambda s: generate_request(s, slot_minutes=3), "slot_minutes"),
    ("GenerateSlots", lambda s: generate_request(s, slot_minutes=481), "slot_minutes"),
    ("GenerateSlots", lambda s: generate_request(s, capacity=1001), "capacity"),
    ("GetSlot", lambda s: pb.GetSlotRequest(slot_id="slot-1"), "slot_id"),
    ("SearchAvailableSlots", lambda s: search_request(s, clinic_id=""), "clinic_id"),
    ("SearchAvailableSlots", lambda s: search_request(s, service_id="x"), "service_id"),
    ("SearchAvailableSlots", lambda s: search_request(s, staff_id="x"), "staff_id"),
    ("SearchAvailableSlots", lambda s: search_request(s, first_date=None), "first_date"),
    (
        "SearchAvailableSlots",
        lambda s: search_request(s, last_date=calendar(local_day(31))),
        "last_date",
    ),
    # reservations and bookings
    ("ReserveSlot", lambda s: reserve_request(s, slot_id=""), "slot_id"),
    ("ReserveSlot", lambda s: reserve_request(s, user_id="rider"), "user_id"),
    ("ReserveSlot", lambda s: reserve_request(s, pet_id="milo"), "pet_id"),
    ("ReserveSlot", lambda s: reserve_request(s, request_id="r" * 101), "request_id"),
    ("GetReservation", lambda s: pb.GetReservationRequest(reservation_id="1"), "reservation_id"),
    (
        "GetReservation",
        lambda s: pb.GetReservationRequest(reservation_id=s.held.reservation_id, user_id="u"),
        "user_id",
    ),
    ("ReleaseReservation", lambda s: release_request(s, reservation_id=""), "reservation_id"),
    ("ReleaseReservation", lambda s: release_request(s, lock_token=""), "lock_token"),
    ("ReleaseReservation", lambda s: release_request(s, lock_token="t" * 65), "lock_token"),
    ("ReleaseReservation", lambda s: release_request(s, user_id="me"), "user_id"),
    ("ConfirmReservation", lambda s: confirm_request(s, reservation_id="r"), "reservation_id"),
    ("ConfirmReservation", lambda s: confirm_request(s, lock_token=""), "lock_token"),
    ("ConfirmReservation", lambda s: confirm_request(s, notes="n" * 2001), "notes"),
    ("ConfirmReservation", lambda s: confirm_request(s, notes="a\x07b"), "notes"),
    ("ConfirmReservation", lambda s: confirm_request(s, discount=idr(-1)), "discount"),
    (
        "ConfirmReservation",
        lambda s: confirm_request(s, discount=money_pb2.Money(currency_code="EUR", units=1)),
        "discount.currency_code",
    ),
    ("GetBooking", lambda s: pb.GetBookingRequest(), "booking_id"),
    ("GetBooking", lambda s: pb.GetBookingRequest(booking_id=MISSING, user_id="x"), "user_id"),
]


@pytest.mark.parametrize(
    ("method", "build", "field"),
    [pytest.param(m, b, f, id=f"{m}-{f}-{i}") for i, (m, b, f) in enumerate(BAD_INPUT)],
)
async def test_bad_input_names_the_field_and_writes_nothing(
    stack: Stack, scene: Scene, method: str, build, field: str
) -> None:
    request = build(scene)
    before = await row_counts(stack.database_url())
    error = await refusal(call(stack, method, request))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert field in bad_request_fields(error), (field, error.details())
    assert await row_counts(stack.database_url()) == before


async def test_every_built_rpc_has_bad_input_cases() -> None:
    assert {method for method, _, _ in BAD_INPUT} == BUILT


async def test_malformed_requests_are_invalid_argument_for_any_caller(
    stack: Stack, scene: Scene
) -> None:
    """Fields are checked before access: an operator of another clinic, or a rider naming
    someone else, learns nothing but what is wrong with the request."""
    before = await row_counts(stack.database_url())
    user_b, _ = scene.rider_b
    calls = [
        ("CreateSlot", slot_request(scene, capacity=-1), stack.as_operator(scene.b.id), "capacity"),
        (
            "GenerateSlots",
            generate_request(scene, windows=[]),
            stack.as_operator(scene.b.id),
            "windows",
        ),
        (
            "CreateClinicService",
            service_request(scene, name=""),
            stack.as_operator(scene.b.id),
            "name",
        ),
        (
            "ConfirmReservation",
            confirm_request(scene, user_id=user_b, lock_token=""),
            stack.as_rider(user_b),
            "lock_token",
        ),
    ]
    for method, request, metadata, field in calls:
        error = await refusal(call(stack, method, request, metadata))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (method, error.details())
        assert field in bad_request_fields(error)
    assert await row_counts(stack.database_url()) == before


FAR_FUTURE = datetime(9999, 12, 31, 20, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("method", "build"),
    [
        pytest.param(
            "CreateSlot",
            lambda s: slot_request(s, start_time=stamp(FAR_FUTURE)),
            id="start-9999-past-the-clinics-calendar",
        ),
        pytest.param(
            "CreateSlot",
            lambda s: slot_request(
                s, start_time=stamp(FAR_FUTURE + timedelta(hours=3, minutes=50))
            ),
            id="start-9999-no-room-for-the-duration",
        ),
        pytest.param(
            "GenerateSlots",
            lambda s: generate_request(
                s,
                first_date=date_pb2.Date(year=9999, month=12, day=30),
                last_date=date_pb2.Date(year=9999, month=12, day=31),
            ),
            id="generate-through-9999-12-31",
        ),
    ],
)
async def test_the_end_of_the_calendar_is_a_clear_refusal(
    stack: Stack, scene: Scene, method: str, build
) -> None:
    """Times a datetime can hold but the clinic's wall clock or the slot's end cannot: a
    clear refusal (INVALID_ARGUMENT), never INTERNAL."""
    before = await row_counts(stack.database_url())
    error = await refusal(call(stack, method, build(scene)))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, f"{error.code()}: {error.details()}"
    assert await row_counts(stack.database_url()) == before


# --- unknown ids ---------------------------------------------------------------------------


def not_found_calls(s: Scene) -> list[tuple[str, object]]:
    return [
        ("GetClinic", pb.GetClinicRequest(clinic_id=MISSING)),
        ("ListClinicServices", pb.ListClinicServicesRequest(clinic_id=MISSING)),
        ("ListStaff", pb.ListStaffRequest(clinic_id=MISSING)),
        ("CreateClinicService", service_request(s, clinic_id=MISSING)),
        ("CreateStaff", pb.CreateStaffRequest(clinic_id=MISSING, full_name="drh. Budi")),
        ("CreateSlot", slot_request(s, clinic_id=MISSING)),
        ("CreateSlot", slot_request(s, service_id=MISSING)),
        ("CreateSlot", slot_request(s, service_id=s.b.service.service_id)),  # another clinic's
        ("CreateSlot", slot_request(s, staff_id=MISSING)),
        ("CreateSlot", slot_request(s, staff_id=s.b.staff.staff_id)),
        ("GenerateSlots", generate_request(s, clinic_id=MISSING)),
        ("GenerateSlots", generate_request(s, service_id=MISSING)),
        ("GetSlot", pb.GetSlotRequest(slot_id=MISSING)),
        ("SearchAvailableSlots", search_request(s, service_id=MISSING)),
        ("SearchAvailableSlots", search_request(s, clinic_id=s.b.id)),
        ("ReserveSlot", reserve_request(s, slot_id=MISSING)),
        ("GetReservation", pb.GetReservationRequest(reservation_id=MISSING)),
        ("ReleaseReservation", release_request(s, reservation_id=MISSING)),
        ("ConfirmReservation", confirm_request(s, reservation_id=MISSING)),
        ("GetBooking", pb.GetBookingRequest(booking_id=MISSING)),
    ]


async def test_unknown_ids_are_not_found_and_write_nothing(stack: Stack, scene: Scene) -> None:
    before = await row_counts(stack.database_url())
    wrong = []
    for method, request in not_found_calls(scene):
        error = await refusal(call(stack, method, request))
        if error.code() is not grpc.StatusCode.NOT_FOUND:
            wrong.append(f"{method}: {error.code().name} {error.details()}")
    assert wrong == []
    assert await row_counts(stack.database_url()) == before


# --- business refusals ----------------------------------------------------------------------


async def refused_for(stack: Stack, reason: str, request: Awaitable[object]) -> aio.AioRpcError:
    """The refusal of `request`, FAILED_PRECONDITION `reason`, having written nothing."""
    before = await row_counts(stack.database_url())
    error = await refusal(request)
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION, (error.code(), error.details())
    assert error_reason(error) == reason, error.details()
    assert await row_counts(stack.database_url()) == before
    return error


async def test_overlapping_slots_of_one_staff_member_are_slot_overlap(
    stack: Stack, scene: Scene
) -> None:
    start = future_hour(5)
    first = await stack.booking.CreateSlot(
        slot_request(scene, staff_id=scene.a.staff.staff_id, start_time=stamp(start)),
        metadata=stack.metadata(),
    )
    for shift in (timedelta(0), timedelta(minutes=15), timedelta(minutes=-29)):
        again = slot_request(
            scene, staff_id=scene.a.staff.staff_id, start_time=stamp(start + shift)
        )
        error = await refused_for(
            stack, "SLOT_OVERLAP", stack.booking.CreateSlot(again, metadata=stack.metadata())
        )
        assert first.slot_id in error.details()
    # Back to back is no overlap; another staff member (or none) may have the same time.
    await stack.booking.CreateSlot(
        slot_request(
            scene, staff_id=scene.a.staff.staff_id, start_time=stamp(start + timedelta(minutes=30))
        ),
        metadata=stack.metadata(),
    )
    await stack.booking.CreateSlot(
        slot_request(scene, start_time=stamp(start)), metadata=stack.metadata()
    )


async def test_a_schedule_meeting_one_slot_creates_none(stack: Stack, scene: Scene) -> None:
    day = local_day(40)
    taken = datetime.combine(day, time(10, 0), JAKARTA)
    await stack.booking.CreateSlot(
        slot_request(scene, staff_id=scene.a.staff.staff_id, start_time=stamp(taken)),
        metadata=stack.metadata(),
    )
    schedule = generate_request(
        scene,
        staff_id=scene.a.staff.staff_id,
        first_date=calendar(day),
        last_date=calendar(day),
        windows=[window(day, at(8), at(12))],
    )
    await refused_for(
        stack, "SLOT_OVERLAP", stack.booking.GenerateSlots(schedule, metadata=stack.metadata())
    )


async def test_a_wrong_lock_token_is_refused(stack: Stack, scene: Scene) -> None:
    user, _ = scene.rider_a
    for method in ("ReleaseReservation", "ConfirmReservation"):
        build = release_request if method == "ReleaseReservation" else confirm_request
        request = build(scene, user_id=user, lock_token="not-the-token")
        await refused_for(
            stack, "INVALID_LOCK_TOKEN", call(stack, method, request, stack.as_rider(user))
        )


async def test_a_pet_of_another_rider_is_pet_not_owned(stack: Stack, scene: Scene) -> None:
    user, _ = scene.rider_a
    _, others_pet = scene.rider_b
    slot = await new_slot(stack, scene.a)
    held = await reserve(stack, slot.slot_id, user, others_pet)  # the pet is checked at confirm
    await refused_for(stack, "PET_NOT_OWNED", confirm(stack, held))
    seen = await stack.booking.GetReservation(
        pb.GetReservationRequest(reservation_id=held.reservation_id, user_id=user),
        metadata=stack.as_rider(user),
    )
    assert seen.status == pb.RESERVATION_STATUS_PENDING


async def test_a_discount_above_the_price_is_refused_and_staff_alone_grant_one(
    stack: Stack, scene: Scene
) -> None:
    slot = await new_slot(stack, scene.a)
    held = await reserve(stack, slot.slot_id, *scene.rider_a)
    too_much = pb.ConfirmReservationRequest(
        reservation_id=held.reservation_id, lock_token=held.lock_token, discount=idr(PRICE + 1)
    )
    await refused_for(
        stack,
        "DISCOUNT_EXCEEDS_PRICE",
        stack.booking.ConfirmReservation(too_much, metadata=stack.metadata()),
    )
    before = await row_counts(stack.database_url())
    error = await refusal(confirm(stack, held, discount=idr(1)))  # the rider's own discount
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED, error.details()
    assert await row_counts(stack.database_url()) == before
    operator = stack.as_operator(scene.a.id)
    fair = pb.ConfirmReservationRequest(
        reservation_id=held.reservation_id, lock_token=held.lock_token, discount=idr(50_000)
    )
    booking = await stack.booking.ConfirmReservation(fair, metadata=operator)
    assert (booking.total_amount.units, booking.discount_amount.units) == (PRICE, 50_000)
    assert booking.final_amount.units == PRICE - 50_000


async def test_one_rider_cannot_hold_a_slot_twice(stack: Stack, scene: Scene) -> None:
    slot = await new_slot(stack, scene.a, capacity=3)
    await reserve(stack, slot.slot_id, *scene.rider_a)
    await refused_for(stack, "ALREADY_RESERVED", reserve(stack, slot.slot_id, *scene.rider_a))
    await refused_for(
        stack, "ALREADY_RESERVED", reserve(stack, slot.slot_id, *scene.rider_a, request_id="other")
    )
    after = await stack.booking.GetSlot(
        pb.GetSlotRequest(slot_id=slot.slot_id), metadata=stack.metadata()
    )
    assert after.remaining == 2


async def test_a_released_reservation_cannot_be_confirmed(stack: Stack, scene: Scene) -> None:
    slot = await new_slot(stack, scene.a)
    held = await reserve(stack, slot.slot_id, *scene.rider_a)
    rider = stack.as_rider(held.user_id)
    release = pb.ReleaseReservationRequest(
        reservation_id=held.reservation_id, user_id=held.user_id, lock_token=held.lock_token
    )
    released = await stack.booking.ReleaseReservation(release, metadata=rider)
    assert released.status == pb.RESERVATION_STATUS_CANCELLED
    before = await row_counts(stack.database_url())
    again = await stack.booking.ReleaseReservation(release, metadata=rider)  # changes nothing
    assert again.status == pb.RESERVATION_STATUS_CANCELLED
    assert await row_counts(stack.database_url()) == before
    await refused_for(stack, "RESERVATION_RELEASED", confirm(stack, held))


async def test_a_confirmed_reservation_cannot_be_released(stack: Stack, scene: Scene) -> None:
    slot = await new_slot(stack, scene.a)
    held = await reserve(stack, slot.slot_id, *scene.rider_a)
    booking = await confirm(stack, held)
    release = pb.ReleaseReservationRequest(
        reservation_id=held.reservation_id, user_id=held.user_id, lock_token=held.lock_token
    )
    error = await refused_for(
        stack,
        "RESERVATION_CONFIRMED",
        stack.booking.ReleaseReservation(release, metadata=stack.as_rider(held.user_id)),
    )
    assert booking.booking_id in error.details()


# --- access -------------------------------------------------------------------------------------


async def test_a_rider_cannot_reach_another_riders_reservation_or_booking(
    stack: Stack, scene: Scene
) -> None:
    """With their own user_id: NOT_FOUND (nothing hints the record exists), even with the
    right lock token; naming the other rider, or no one: PERMISSION_DENIED."""
    slot, other = await new_slot(stack, scene.a), await new_slot(stack, scene.a)
    held = await reserve(stack, slot.slot_id, *scene.rider_a)
    booked = await confirm(stack, await reserve(stack, other.slot_id, *scene.rider_a))
    owner, _ = scene.rider_a
    intruder, _ = scene.rider_b

    def requests(user_id: str) -> list[tuple[str, object]]:
        token = {"lock_token": held.lock_token}
        return [
            (
                "GetReservation",
                pb.GetReservationRequest(reservation_id=held.reservation_id, user_id=user_id),
            ),
            (
                "ReleaseReservation",
                pb.ReleaseReservationRequest(
                    reservation_id=held.reservation_id, user_id=user_id, **token
                ),
            ),
            (
                "ConfirmReservation",
                pb.ConfirmReservationRequest(
                    reservation_id=held.reservation_id, user_id=user_id, **token
                ),
            ),
            ("GetBooking", pb.GetBookingRequest(booking_id=booked.booking_id, user_id=user_id)),
        ]

    before = await row_counts(stack.database_url())
    expected = {intruder: grpc.StatusCode.NOT_FOUND, owner: grpc.StatusCode.PERMISSION_DENIED}
    expected[""] = grpc.StatusCode.PERMISSION_DENIED
    wrong = []
    for user_id, code in expected.items():
        for method, request in requests(user_id):
            error = await refusal(call(stack, method, request, stack.as_rider(intruder)))
            if error.code() is not code:
                wrong.append(f"{method} naming {user_id!r}: {error.code().name}, not {code.name}")
    assert wrong == []
    assert await row_counts(stack.database_url()) == before
    # The refusal is a missing record's, word for word and detail for detail.
    hidden = await refusal(call(stack, *requests(intruder)[0], stack.as_rider(intruder)))
    missing_id = str(uuid.uuid4())
    lookup = pb.GetReservationRequest(reservation_id=missing_id, user_id=intruder)
    missing = await refusal(call(stack, "GetReservation", lookup, stack.as_rider(intruder)))
    assert hidden.details().replace(held.reservation_id, missing_id) == missing.details()
    assert status_bytes(hidden).replace(
        held.reservation_id.encode(), missing_id.encode()
    ) == status_bytes(missing)
    seen = await stack.booking.GetReservation(
        pb.GetReservationRequest(reservation_id=held.reservation_id, user_id=owner),
        metadata=stack.as_rider(owner),
    )
    assert seen.status == pb.RESERVATION_STATUS_PENDING
    # Another clinic's operator is no party to it either (to read, release or confirm).
    for method, request in requests(""):
        error = await refusal(call(stack, method, request, stack.as_operator(scene.b.id)))
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED, (method, error.details())


async def test_a_rider_cannot_reserve_for_someone_else(stack: Stack, scene: Scene) -> None:
    owner, pet = scene.rider_a
    intruder, _ = scene.rider_b
    before = await row_counts(stack.database_url())
    request = pb.ReserveSlotRequest(slot_id=scene.slot.slot_id, user_id=owner, pet_id=pet)
    error = await refusal(stack.booking.ReserveSlot(request, metadata=stack.as_rider(intruder)))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert await row_counts(stack.database_url()) == before


async def test_an_operator_manages_only_their_own_clinic(stack: Stack, scene: Scene) -> None:
    of_a = stack.as_operator(scene.a.id)
    into_b = [
        (
            "CreateSlot",
            slot_request(scene, clinic_id=scene.b.id, service_id=scene.b.service.service_id),
        ),
        (
            "GenerateSlots",
            generate_request(scene, clinic_id=scene.b.id, service_id=scene.b.service.service_id),
        ),
        ("CreateClinicService", service_request(scene, clinic_id=scene.b.id)),
        ("CreateStaff", pb.CreateStaffRequest(clinic_id=scene.b.id, full_name="drh. Budi")),
    ]
    before = await row_counts(stack.database_url())
    for method, request in into_b:
        for metadata in (
            of_a,
            stack.metadata(Role.OPERATOR, "drh.sari"),  # names no clinic
            stack.metadata(Role.OPERATOR, f"clinic:{scene.b.id.upper()}:drh.sari"),  # not canonical
        ):
            error = await refusal(call(stack, method, request, metadata))
            assert error.code() is grpc.StatusCode.PERMISSION_DENIED, (method, error.details())
    assert await row_counts(stack.database_url()) == before
    mine = slot_request(scene, start_time=stamp(future_hour(6)))
    made = await stack.booking.CreateSlot(mine, metadata=of_a)
    assert made.clinic_id == scene.a.id


async def test_only_an_admin_creates_a_clinic(stack: Stack, scene: Scene) -> None:
    user, _ = scene.rider_a
    before = await row_counts(stack.database_url())
    request = pb.CreateClinicRequest(name="Klinik Liar")
    for metadata in (
        stack.as_rider(user),
        stack.as_operator(scene.a.id),
        stack.metadata(Role.SERVICE, "tests"),
        stack.metadata(Role.GATE, "A/A-ENTRY-01"),
    ):
        error = await refusal(stack.booking.CreateClinic(request, metadata=metadata))
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED, error.details()
    error = await refusal(stack.booking.CreateClinic(request))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert await row_counts(stack.database_url()) == before


# --- retries ------------------------------------------------------------------------------------


async def test_a_retried_create_clinic_returns_the_first(stack: Stack) -> None:
    key = f"clinic-{uuid.uuid4()}"
    request = pb.CreateClinicRequest(name="Klinik Ulang", address="Jl. Thamrin 2", request_id=key)
    first = await stack.booking.CreateClinic(request, metadata=stack.metadata())
    counts = await row_counts(stack.database_url())
    again = await stack.booking.CreateClinic(request, metadata=stack.metadata())
    assert again == first
    other = pb.CreateClinicRequest(name="Klinik Lain", request_id=key)
    error = await refusal(stack.booking.CreateClinic(other, metadata=stack.metadata()))
    assert error.code() is grpc.StatusCode.ALREADY_EXISTS, error.details()
    assert await row_counts(stack.database_url()) == counts


async def test_retried_catalogue_writes_return_the_first(stack: Stack, scene: Scene) -> None:
    """CreateClinicService, CreateStaff and GenerateSlots: the same request again is the
    first answer; the same request_id with other fields is ALREADY_EXISTS."""
    key = f"k-{uuid.uuid4()}"
    day = local_day(50)
    pairs = [
        (
            "CreateClinicService",
            service_request(scene, name=f"Svc {key}", request_id=key),
            service_request(scene, name=f"Svc {key}", request_id=key, duration_minutes=45),
        ),
        (
            "CreateStaff",
            pb.CreateStaffRequest(clinic_id=scene.a.id, full_name="drh. Rina", request_id=key),
            pb.CreateStaffRequest(clinic_id=scene.a.id, full_name="drh. Rini", request_id=key),
        ),
        (
            "GenerateSlots",
            generate_request(
                scene,
                first_date=calendar(day),
                last_date=calendar(day),
                request_id=key,
                windows=[window(day, at(13), at(15))],
            ),
            generate_request(
                scene,
                first_date=calendar(day),
                last_date=calendar(day),
                request_id=key,
                windows=[window(day, at(13), at(16))],
            ),
        ),
    ]
    for method, request, changed in pairs:
        first = await call(stack, method, request)
        counts = await row_counts(stack.database_url())
        assert await call(stack, method, request) == first, method
        error = await refusal(call(stack, method, changed))
        assert error.code() is grpc.StatusCode.ALREADY_EXISTS, (method, error.details())
        assert await row_counts(stack.database_url()) == counts


async def test_a_retried_create_slot_returns_the_first(stack: Stack, scene: Scene) -> None:
    key = f"slot-{uuid.uuid4()}"
    request = slot_request(scene, start_time=stamp(future_hour(7)), capacity=4, request_id=key)
    first = await stack.booking.CreateSlot(request, metadata=stack.metadata())
    counts = await row_counts(stack.database_url())
    again = await stack.booking.CreateSlot(request, metadata=stack.metadata())
    assert again == first
    other = pb.CreateSlotRequest()
    other.CopyFrom(request)
    other.capacity = 5
    error = await refusal(stack.booking.CreateSlot(other, metadata=stack.metadata()))
    assert error.code() is grpc.StatusCode.ALREADY_EXISTS, error.details()
    assert await row_counts(stack.database_url()) == counts


async def test_a_retried_reservation_returns_the_first_and_another_slot_is_already_exists(
    stack: Stack, scene: Scene
) -> None:
    slot, elsewhere = await new_slot(stack, scene.a, capacity=2), await new_slot(stack, scene.a)
    user, pet = scene.rider_b
    first = await reserve(stack, slot.slot_id, user, pet, request_id="same-key")
    counts = await row_counts(stack.database_url())
    again = await reserve(stack, slot.slot_id, user, pet, request_id="same-key")
    assert (again.reservation_id, again.lock_token) == (first.reservation_id, first.lock_token)
    error = await refusal(reserve(stack, elsewhere.slot_id, user, pet, request_id="same-key"))
    assert error.code() is grpc.StatusCode.ALREADY_EXISTS, error.details()
    assert await row_counts(stack.database_url()) == counts
    remaining = [
        (
            await stack.booking.GetSlot(
                pb.GetSlotRequest(slot_id=s.slot_id), metadata=stack.metadata()
            )
        ).remaining
        for s in (slot, elsewhere)
    ]
    assert remaining == [1, 1]
