"""tiket.notification.v1.NotificationService: proto <-> domain, input validation. Errors
raised here or below are turned into status codes by the shared interceptor."""

from __future__ import annotations

from grpc import aio
from tiket.notification.v1 import notification_pb2 as pb
from tiket.notification.v1 import notification_pb2_grpc

from libs import paging
from libs.auth import current_principal
from libs.errors import InvalidArgument
from libs.validation import page_size_field, uuid_field
from services.notification import messages
from services.notification.app import NotificationApp
from services.notification.domain import (
    Channel,
    NotificationStatus,
    NotificationType,
    Preferences,
    check_language,
    check_time_zone,
)
from services.notification.store import NotificationFilter

MAX_ID = 2**63 - 1


class NotificationApi(notification_pb2_grpc.NotificationServiceServicer):
    def __init__(self, app: NotificationApp) -> None:
        self.app = app

    async def ListNotifications(
        self, request: pb.ListNotificationsRequest, context: aio.ServicerContext
    ) -> pb.ListNotificationsResponse:
        limit = page_size_field(request.page_size)
        where = NotificationFilter(
            user_id=uuid_field(request.user_id, "user_id") if request.user_id else None,
            status=_status(request.status),
            type=_type(request.type),
        )
        found = await self.app.notifications(where, _after(request.page_token), limit + 1)
        token = paging.encode(found[limit - 1].id) if len(found) > limit else ""
        return pb.ListNotificationsResponse(
            notifications=[messages.notification(n) for n in found[:limit]],
            next_page_token=token,
        )

    async def GetNotification(
        self, request: pb.GetNotificationRequest, context: aio.ServicerContext
    ) -> pb.Notification:
        notification_id = _id(request.notification_id)
        found = await self.app.notification(notification_id, current_principal())
        return messages.notification(found)

    async def RetryNotification(
        self, request: pb.RetryNotificationRequest, context: aio.ServicerContext
    ) -> pb.Notification:
        retried = await self.app.retry(_id(request.notification_id))
        return messages.notification(retried)

    async def GetPreferences(
        self, request: pb.GetPreferencesRequest, context: aio.ServicerContext
    ) -> pb.Preferences:
        found = await self.app.preferences(uuid_field(request.user_id, "user_id"))
        return messages.preferences(found)

    async def SetPreferences(
        self, request: pb.SetPreferencesRequest, context: aio.ServicerContext
    ) -> pb.Preferences:
        wanted = Preferences(
            user_id=uuid_field(request.user_id, "user_id"),
            muted_channels=frozenset(_channel(c) for c in request.muted_channels),
            language=check_language(request.language),
            time_zone=check_time_zone(request.time_zone),
            fare_updates=request.fare_updates,
            travelled_fare_updates=(
                request.travelled_fare_updates
                if request.HasField("travelled_fare_updates")
                else Preferences.travelled_fare_updates
            ),
        )
        return messages.preferences(await self.app.set_preferences(wanted))


def _id(value: int) -> int:
    if value <= 0:
        raise InvalidArgument.field("notification_id", "is required: a notification id (> 0)")
    return value


def _status(value: int) -> NotificationStatus | None:
    if value == pb.NOTIFICATION_STATUS_UNSPECIFIED:
        return None
    if value not in messages.STATUS_FROM_PROTO:
        raise InvalidArgument.field("status", "is not a NotificationStatus")
    return messages.STATUS_FROM_PROTO[value]


def _type(value: int) -> NotificationType | None:
    if value == pb.NOTIFICATION_TYPE_UNSPECIFIED:
        return None
    if value not in messages.TYPE_FROM_PROTO:
        raise InvalidArgument.field("type", "is not a NotificationType")
    return messages.TYPE_FROM_PROTO[value]


def _channel(value: int) -> Channel:
    if value not in messages.CHANNEL_FROM_PROTO:
        raise InvalidArgument.field("muted_channels", "must be EMAIL, PUSH or SMS")
    return messages.CHANNEL_FROM_PROTO[value]


def _after(token: str) -> int | None:
    key = paging.decode(token, 1)
    if key is None:
        return None
    after = key[0]
    if not isinstance(after, int) or isinstance(after, bool) or not 0 < after <= MAX_ID:
        raise InvalidArgument.field("page_token", "is not a token from a previous response")
    return after
