"""Property tests of every FacilityService RPC against the real booking service: requests are
filled field by field from their descriptors, with ids of facilities and bookings that exist,
quarter-hour times near now, and junk. Every answer is OK or a clear refusal, never INTERNAL,
UNKNOWN or UNIMPLEMENTED; a refusal writes nothing; the seed's conflict query stays 0."""

from __future__ import annotations

import time
import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor as pbd
from google.protobuf import message_factory, timestamp_pb2
from google.type import timeofday_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from tiket.booking.v1 import facility_pb2 as pb

from libs.auth import Role
from services.booking.tests.facility_support import (
    book_request,
    conflicts,
    facilities,
    facility_counts,
    new_facility,
    quarter,
)
from services.booking.tests.stack import Stack
from tests.support.fuzz import SERVICE_FUZZ

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(180)]
SERVICE = pb.DESCRIPTOR.services_by_name["FacilityService"]
REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
}
NOW = int(time.time())
QUARTER = 900
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
FUZZ = settings(SERVICE_FUZZ, max_examples=25)

junk = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        ["", " ", "\x00", "x" * 300, "Mars/Base", "00000000-0000-0000-0000-000000000000"]
    ),
)
timestamps = st.builds(
    timestamp_pb2.Timestamp,
    seconds=st.one_of(
        st.integers(4, 24 * 4 * 30).map(lambda q: (NOW // QUARTER + q) * QUARTER),
        st.integers(*INT64),
        st.sampled_from([0, NOW - 3600, 253_402_300_799, -62_135_596_801]),
    ),
    nanos=st.one_of(st.just(0), st.integers(*INT32)),
)
times_of_day = st.builds(
    timeofday_pb2.TimeOfDay,
    hours=st.integers(-1, 25),
    minutes=st.one_of(st.sampled_from([0, 15, 30, 45]), st.integers(*INT32)),
    seconds=st.one_of(st.just(0), st.integers(-1, 61)),
    nanos=st.one_of(st.just(0), st.integers(*INT32)),
)


def text_for(name: str, world: dict[str, list[str]]) -> st.SearchStrategy[str]:
    known = world.get(name, [])
    if name.endswith("_id") and known:
        return st.one_of(st.sampled_from(known), st.uuids().map(str), junk)
    if name == "time_zone":
        return st.one_of(st.sampled_from(["Europe/Berlin", "Asia/Jakarta", ""]), junk)
    return st.one_of(st.text(min_size=1, max_size=30), junk)


def filled(descriptor: pbd.Descriptor, world: dict[str, list[str]], depth: int = 0):
    """A request of `descriptor`'s type, each field drawn or left unset."""
    cls = message_factory.GetMessageClass(descriptor)

    @st.composite
    def build(draw: Any) -> Any:
        message = cls()
        for field in descriptor.fields:
            if not draw(st.booleans()):
                continue
            value = draw(value_of(field, world, depth))
            if field.is_repeated:
                getattr(message, field.name).extend(value)
            elif field.type == pbd.FieldDescriptor.TYPE_MESSAGE:
                getattr(message, field.name).CopyFrom(value)
            else:
                setattr(message, field.name, value)
        return message

    return build()


def value_of(field: pbd.FieldDescriptor, world: dict[str, list[str]], depth: int):
    one = scalar(field, world, depth)
    if field.is_repeated:
        return st.lists(one, max_size=4)
    return one


def scalar(field: pbd.FieldDescriptor, world: dict[str, list[str]], depth: int):
    kind = field.type
    if kind == pbd.FieldDescriptor.TYPE_MESSAGE:
        name = field.message_type.full_name
        if name == "google.protobuf.Timestamp":
            return timestamps
        if name == "google.type.TimeOfDay":
            return times_of_day
        return (
            filled(field.message_type, world, depth + 1)
            if depth < 2
            else st.just(message_factory.GetMessageClass(field.message_type)())
        )
    if kind == pbd.FieldDescriptor.TYPE_STRING:
        return text_for(field.name, world)
    if kind == pbd.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == pbd.FieldDescriptor.TYPE_ENUM:
        return st.integers(-1, 9)
    if kind in (pbd.FieldDescriptor.TYPE_INT64, pbd.FieldDescriptor.TYPE_UINT64):
        return st.integers(0, 2**63 - 1)
    if kind == pbd.FieldDescriptor.TYPE_DOUBLE:
        return st.floats(allow_nan=True)
    return st.one_of(st.integers(0, 60), st.integers(*INT32))


async def world_of(stack: Stack) -> dict[str, list[str]]:
    if (world := getattr(stack, "facility_world", None)) is not None:
        return world
    room = await new_facility(stack)
    user = str(uuid.uuid4())
    booked = await facilities(stack).BookFacility(
        book_request(room, quarter(2, 40), quarter(2, 44), user), metadata=stack.metadata()
    )
    first = book_request(room, quarter(5, 40), quarter(5, 44), user, request_id="seed")
    series = await facilities(stack).BookFacilitySeries(
        pb.BookFacilitySeriesRequest(first=first, rrule="FREQ=DAILY;COUNT=2", user_id=user),
        metadata=stack.metadata(),
    )
    world = {
        "facility_id": [room.facility_id],
        "user_id": [user],
        "booking_id": [booked.booking_id],
        "series_id": [series.series_id],
        "request_id": ["seed"],
    }
    stack.facility_world = world  # type: ignore[attr-defined]
    return world


def callers(world: dict[str, list[str]]):
    return st.sampled_from(
        [(Role.ADMIN, "tests"), (Role.OPERATOR, "frontdesk"), (Role.USER, world["user_id"][0])]
    )


async def check(stack: Stack, data: Any, method: str) -> None:
    world = await world_of(stack)
    descriptor = SERVICE.methods_by_name[method]
    request = data.draw(filled(descriptor.input_type, world), label="request")
    role, subject = data.draw(callers(world), label="caller")
    if role is Role.USER and data.draw(st.booleans()) and hasattr(request, "user_id"):
        request.user_id = subject  # get past the owner check now and then
    url = stack.database_url()
    before = await facility_counts(url)
    allowed = REFUSALS | {grpc.StatusCode.OK}
    try:
        response = await getattr(facilities(stack), method)(
            request, metadata=stack.metadata(role, subject), timeout=30
        )
    except grpc.aio.AioRpcError as error:
        assert error.code() in allowed, f"{method} answered {error.code().name}: {error.details()}"
        assert await facility_counts(url) == before, f"{method} refused but wrote"
    else:
        for name in ("facility_id", "booking_id", "series_id"):
            made = getattr(response, name, "")
            if made and made not in world[name]:
                world[name].append(made)
    assert await conflicts(url) == 0


RPCS = sorted(SERVICE.methods_by_name)


async def test_every_rpc_is_fuzzed() -> None:
    assert len(RPCS) == 17


@pytest.mark.parametrize("method", RPCS)
@FUZZ
@given(data=st.data())
async def test_fuzz_facility_rpc(stack: Stack, method: str, data: Any) -> None:
    await check(stack, data, method)
