"""Property test: random sequences of valid and malformed requests to every NotificationService
RPC, by every role, against the real service holding sent and failed notifications. Every
answer is a success or a clear refusal, never INTERNAL, UNKNOWN or UNAVAILABLE; a refusal
writes nothing."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import grpc
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tiket.events.v1 import journey_pb2
from tiket.notification.v1 import notification_pb2 as pb

from libs.auth import Role
from libs.money import to_money
from services.notification.tests.stack import Stack, event
from tests.support.fuzz import SERVICE_FUZZ, well_formed
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]
ANSWERS = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
}
METHODS = [m.name for m in pb.DESCRIPTOR.services_by_name["NotificationService"].methods]
INT32, INT64 = (-(2**31), 2**31 - 1), (-(2**63), 2**63 - 1)


@dataclass
class World:
    riders: list[str]
    notification_ids: list[int]


_worlds: dict[int, World] = {}


async def world_of(stack: Stack) -> World:
    """Three riders; one notification of the first delivered, two of the others failed."""
    if id(stack) in _worlds:
        return _worlds[id(stack)]
    riders = [await stack.new_rider() for _ in range(3)]
    await checked_in(stack, riders[0])
    await settled(stack, riders[:1])
    stack.smtp_proxy.cut()
    try:
        for rider in riders[1:]:
            await checked_in(stack, rider)
        await settled(stack, riders[1:])
    finally:
        stack.smtp_proxy.restore()
    rows = await stack.rows("SELECT id FROM notifications ORDER BY id")
    world = _worlds[id(stack)] = World(riders, [row[0] for row in rows])
    return world


async def checked_in(stack: Stack, rider: str) -> None:
    data = journey_pb2.JourneyCheckedIn(
        user_id=rider, terminal_name="Terminal Selatan", held_amount=to_money(Decimal(8000))
    )
    data.checkin_time.FromDatetime(datetime.now(UTC))
    await stack.publish(event("journey.checked_in", rider, data))


async def settled(stack: Stack, riders: list[str]) -> None:
    async def done() -> bool:
        rows = await stack.rows(
            "SELECT count(*) FILTER (WHERE status <> 'pending') FROM notifications"
            " WHERE user_id = ANY(%s::uuid[])",
            riders,
        )
        return rows[0][0] == len(riders)

    await wait_until(done, "the notifications to settle")


junk = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=30),
    st.sampled_from(["", " ", "\x00", "'; DROP TABLE notifications; --", "é" * 300, "../x"]),
)


def mostly(valid, malformed):
    return st.one_of(valid, valid, valid, malformed)


enums = mostly(st.integers(0, 7), st.integers(*INT32))
page_sizes = mostly(st.integers(0, 500), st.integers(*INT32))
tokens = st.one_of(
    st.just(""),
    junk,
    st.lists(st.one_of(st.none(), st.integers(*INT64), st.text(max_size=5)), max_size=3).map(
        lambda key: base64.urlsafe_b64encode(orjson.dumps(key)).decode()
    ),
)
languages = mostly(st.sampled_from(["", "id", "en", " EN "]), junk)
zones = mostly(
    st.sampled_from(["", "Asia/Jakarta", "Asia/Jayapura", "UTC", "America/Argentina/Salta"]),
    st.one_of(junk, st.sampled_from(["Mars/Olympus", "/etc/passwd", "a" * 100, "Asia/"])),
)


def message(cls, **fields):
    return cls(**{k: v for k, v in fields.items() if v is not None})


def build(cls, **fields):
    return st.builds(message, st.just(cls), **fields)


def requests(world: World) -> dict[str, st.SearchStrategy]:
    users = mostly(st.sampled_from([*world.riders, str(uuid.uuid4())]), junk)
    ids = mostly(st.sampled_from(world.notification_ids), st.integers(*INT64))
    return {
        "ListNotifications": build(
            pb.ListNotificationsRequest,
            user_id=st.one_of(st.just(""), users),
            status=enums,
            type=enums,
            page_size=page_sizes,
            page_token=tokens,
        ),
        "GetNotification": build(pb.GetNotificationRequest, notification_id=ids),
        "RetryNotification": build(pb.RetryNotificationRequest, notification_id=ids),
        "GetPreferences": build(pb.GetPreferencesRequest, user_id=users),
        "SetPreferences": build(
            pb.SetPreferencesRequest,
            user_id=users,
            muted_channels=st.lists(mostly(st.integers(1, 3), st.integers(*INT32)), max_size=4),
            language=languages,
            time_zone=zones,
            fare_updates=st.booleans(),
        ),
    }


def callers(world: World, request) -> st.SearchStrategy:
    """Staff and services; a rider acting on the request's user (when it is a user id a token
    can name) or on another rider's; a gate, which may call nothing here."""
    own = getattr(request, "user_id", "")
    if not well_formed(Role.USER, own):
        own = world.riders[0]
    return st.one_of(
        st.sampled_from([(Role.ADMIN, "a"), (Role.OPERATOR, "o"), (Role.SERVICE, "tests")]),
        st.tuples(st.just(Role.USER), st.sampled_from([own, *world.riders])),
        st.just((Role.GATE, "A/A-ENTRY-01")),
    )


async def written(stack: Stack) -> list[tuple]:
    """What a refused request must leave as it was: the preferences, and failed notifications
    failed (only a retry changes those; the delivery worker changes the others)."""
    return await stack.rows(
        "SELECT user_id::text, updated_at::text FROM preferences"
        " UNION ALL SELECT id::text, 'failed' FROM notifications WHERE status = 'failed'"
        " ORDER BY 1, 2"
    )


async def test_every_rpc_has_a_strategy() -> None:
    assert sorted(requests(World([str(uuid.uuid4())], [1]))) == sorted(METHODS)


@settings(SERVICE_FUZZ, max_examples=40)
@given(data=st.data())
async def test_fuzz_mixed_sequences(stack, data) -> None:
    world = await world_of(stack)
    strategies = requests(world)
    for method in data.draw(st.lists(st.sampled_from(METHODS), min_size=1, max_size=5)):
        request = data.draw(strategies[method], label=method)
        role, sub = data.draw(callers(world, request), label="caller")
        before = await written(stack)
        try:
            await stack.call(method, request, role, sub)
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            code = error.code()
            assert code in ANSWERS, f"{method} answered {code.name}: {error.details()!r}"
        if code is not grpc.StatusCode.OK:
            assert await written(stack) == before, f"{method} refused with {code.name} but wrote"
