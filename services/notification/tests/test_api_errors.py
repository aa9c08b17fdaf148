"""The API's answers: bad input is INVALID_ARGUMENT naming the field and writes nothing;
unknown ids are NOT_FOUND; a rider sees and changes only their own; paging and preferences
round-trip."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import grpc
import pytest
from tiket.events.v1 import journey_pb2
from tiket.notification.v1 import notification_pb2 as pb

from libs import paging
from libs.auth import Role
from libs.money import to_money
from services.fare.tests.helpers import error_reason
from services.notification.tests.stack import Stack, event
from tests.support.grpc_errors import bad_request_fields
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]
USER = str(uuid.uuid4())

BAD_INPUT = [
    ("ListNotifications", pb.ListNotificationsRequest(user_id="x"), "user_id"),
    ("ListNotifications", pb.ListNotificationsRequest(status=42), "status"),
    ("ListNotifications", pb.ListNotificationsRequest(type=99), "type"),
    ("ListNotifications", pb.ListNotificationsRequest(page_size=501), "page_size"),
    ("ListNotifications", pb.ListNotificationsRequest(page_size=-1), "page_size"),
    ("ListNotifications", pb.ListNotificationsRequest(page_token="garbage"), "page_token"),
    (
        "ListNotifications",
        pb.ListNotificationsRequest(page_token=paging.encode("x")),
        "page_token",
    ),
    ("ListNotifications", pb.ListNotificationsRequest(page_token=paging.encode(0)), "page_token"),
    ("GetNotification", pb.GetNotificationRequest(), "notification_id"),
    ("GetNotification", pb.GetNotificationRequest(notification_id=-5), "notification_id"),
    ("RetryNotification", pb.RetryNotificationRequest(), "notification_id"),
    ("GetPreferences", pb.GetPreferencesRequest(), "user_id"),
    ("GetPreferences", pb.GetPreferencesRequest(user_id="nope"), "user_id"),
    ("SetPreferences", pb.SetPreferencesRequest(user_id=USER, language="fr"), "language"),
    (
        "SetPreferences",
        pb.SetPreferencesRequest(user_id=USER, time_zone="Mars/Olympus"),
        "time_zone",
    ),
    (
        "SetPreferences",
        pb.SetPreferencesRequest(user_id=USER, time_zone="../../etc/passwd"),
        "time_zone",
    ),
    ("SetPreferences", pb.SetPreferencesRequest(user_id=USER, time_zone="\x00"), "time_zone"),
    (
        "SetPreferences",
        pb.SetPreferencesRequest(user_id=USER, muted_channels=[pb.CHANNEL_UNSPECIFIED]),
        "muted_channels",
    ),
    (
        "SetPreferences",
        pb.SetPreferencesRequest(user_id=USER, muted_channels=[17]),
        "muted_channels",
    ),
]


async def preference_rows(stack: Stack) -> list[tuple]:
    return await stack.rows("SELECT user_id, updated_at FROM preferences ORDER BY user_id")


@pytest.mark.parametrize(("method", "request_", "field"), BAD_INPUT)
async def test_bad_input_names_the_field_and_writes_nothing(stack, method, request_, field):
    before = await preference_rows(stack)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stack.call(method, request_)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    assert bad_request_fields(error.value) == [field]
    assert await preference_rows(stack) == before


async def notified(stack: Stack, rider: str, count: int) -> list[pb.Notification]:
    """Publish `count` check-ins of `rider` and wait until all are delivered."""
    for _ in range(count):
        data = journey_pb2.JourneyCheckedIn(
            user_id=rider, terminal_name="Terminal Timur", held_amount=to_money(Decimal(7000))
        )
        data.checkin_time.FromDatetime(datetime.now(UTC))
        await stack.publish(event("journey.checked_in", rider, data))
    found: list[pb.Notification] = []

    async def delivered() -> bool:
        listed = await stack.call("ListNotifications", pb.ListNotificationsRequest(user_id=rider))
        found[:] = listed.notifications
        return len(found) == count and all(n.status == pb.NOTIFICATION_STATUS_SENT for n in found)

    await wait_until(delivered, f"{count} notifications of {rider}")
    return found


async def test_a_rider_sees_only_their_own(stack):
    rider, other = await stack.new_rider(), await stack.new_rider()
    [mine] = await notified(stack, rider, 1)
    [theirs] = await notified(stack, other, 1)
    own = await stack.call(
        "GetNotification", pb.GetNotificationRequest(notification_id=mine.id), Role.USER, rider
    )
    assert own.message.startswith("Anda check-in di Terminal Timur")
    denied = [
        ("GetNotification", pb.GetNotificationRequest(notification_id=theirs.id)),
        ("GetNotification", pb.GetNotificationRequest(notification_id=2**62)),
        ("ListNotifications", pb.ListNotificationsRequest(user_id=other)),
        ("ListNotifications", pb.ListNotificationsRequest()),
        ("GetPreferences", pb.GetPreferencesRequest(user_id=other)),
        ("SetPreferences", pb.SetPreferencesRequest(user_id=other, language="en")),
        ("RetryNotification", pb.RetryNotificationRequest(notification_id=mine.id)),
    ]
    for method, request in denied:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stack.call(method, request, Role.USER, rider)
        assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED, method
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stack.notifications.ListNotifications(pb.ListNotificationsRequest(user_id=rider))
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stack.call(
            "GetPreferences", pb.GetPreferencesRequest(user_id=rider), Role.GATE, "A/A-ENTRY-01"
        )
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_unknown_ids_and_retrying_what_did_not_fail(stack):
    rider = await stack.new_rider()
    [sent] = await notified(stack, rider, 1)
    for method in ("GetNotification", "RetryNotification"):
        request = getattr(pb, f"{method}Request")(notification_id=2**62)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stack.call(method, request)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stack.call("RetryNotification", pb.RetryNotificationRequest(notification_id=sent.id))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error.value) == "NOT_FAILED"


async def test_paging_and_filters(stack):
    rider = await stack.new_rider()
    made = await notified(stack, rider, 3)
    seen: list[int] = []
    token = ""
    while True:
        request = pb.ListNotificationsRequest(user_id=rider, page_size=2, page_token=token)
        page = await stack.call("ListNotifications", request, Role.USER, rider)
        seen += [n.id for n in page.notifications]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted((n.id for n in made), reverse=True)
    for status, count in ((pb.NOTIFICATION_STATUS_SENT, 3), (pb.NOTIFICATION_STATUS_FAILED, 0)):
        request = pb.ListNotificationsRequest(user_id=rider, status=status)
        assert len((await stack.call("ListNotifications", request)).notifications) == count
    request = pb.ListNotificationsRequest(user_id=rider, type=pb.NOTIFICATION_TYPE_WALLET)
    assert list((await stack.call("ListNotifications", request)).notifications) == []


async def test_preferences_default_then_set_and_replaced(stack):
    rider = str(uuid.uuid4())
    default = await stack.call("GetPreferences", pb.GetPreferencesRequest(user_id=rider))
    assert (
        default.language,
        default.time_zone,
        default.fare_updates,
        default.travelled_fare_updates,
    ) == ("id", "Asia/Jakarta", False, True)
    assert not default.HasField("updated_at") and list(default.muted_channels) == []
    wanted = pb.SetPreferencesRequest(
        user_id=rider,
        muted_channels=[pb.CHANNEL_SMS, pb.CHANNEL_EMAIL, pb.CHANNEL_SMS],
        language=" EN ",
        time_zone="Asia/Makassar",
        fare_updates=True,
    )
    saved = await stack.call("SetPreferences", wanted, Role.USER, rider)
    assert list(saved.muted_channels) == [pb.CHANNEL_EMAIL, pb.CHANNEL_SMS]
    assert (saved.language, saved.time_zone, saved.fare_updates) == ("en", "Asia/Makassar", True)
    assert saved.travelled_fare_updates  # not sent: the default, on
    read = await stack.call("GetPreferences", pb.GetPreferencesRequest(user_id=rider))
    assert read == saved
    reset = await stack.call("SetPreferences", pb.SetPreferencesRequest(user_id=rider))
    assert (reset.language, reset.time_zone, list(reset.muted_channels)) == (
        "id",
        "Asia/Jakarta",
        [],
    )
