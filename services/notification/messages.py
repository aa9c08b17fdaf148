"""Domain records -> tiket.notification.v1 messages, and the enum mappings both ways."""

from __future__ import annotations

from tiket.notification.v1 import notification_pb2 as pb

from libs.timestamps import to_timestamp
from services.notification.domain import (
    Channel,
    Delivery,
    DeliveryStatus,
    Notification,
    NotificationStatus,
    NotificationType,
    Preferences,
)

TYPE_TO_PROTO = {
    NotificationType.CHECKIN: pb.NOTIFICATION_TYPE_CHECKIN,
    NotificationType.CHECKOUT: pb.NOTIFICATION_TYPE_CHECKOUT,
    NotificationType.ABANDONED: pb.NOTIFICATION_TYPE_ABANDONED,
    NotificationType.INCOMPLETE: pb.NOTIFICATION_TYPE_INCOMPLETE,
    NotificationType.FARE_UPDATE: pb.NOTIFICATION_TYPE_FARE_UPDATE,
    NotificationType.WALLET: pb.NOTIFICATION_TYPE_WALLET,
    NotificationType.BOOKING: pb.NOTIFICATION_TYPE_BOOKING,
}
TYPE_FROM_PROTO = {v: k for k, v in TYPE_TO_PROTO.items()}
STATUS_TO_PROTO = {
    NotificationStatus.PENDING: pb.NOTIFICATION_STATUS_PENDING,
    NotificationStatus.SENT: pb.NOTIFICATION_STATUS_SENT,
    NotificationStatus.FAILED: pb.NOTIFICATION_STATUS_FAILED,
}
STATUS_FROM_PROTO = {v: k for k, v in STATUS_TO_PROTO.items()}
CHANNEL_TO_PROTO = {
    Channel.EMAIL: pb.CHANNEL_EMAIL,
    Channel.PUSH: pb.CHANNEL_PUSH,
    Channel.SMS: pb.CHANNEL_SMS,
}
CHANNEL_FROM_PROTO = {v: k for k, v in CHANNEL_TO_PROTO.items()}
DELIVERY_STATUS_TO_PROTO = {
    DeliveryStatus.PENDING: pb.DELIVERY_STATUS_PENDING,
    DeliveryStatus.SENT: pb.DELIVERY_STATUS_SENT,
    DeliveryStatus.FAILED: pb.DELIVERY_STATUS_FAILED,
    DeliveryStatus.SKIPPED: pb.DELIVERY_STATUS_SKIPPED,
}


def notification(n: Notification) -> pb.Notification:
    message = pb.Notification(
        id=n.id,
        user_id=str(n.user_id),
        type=TYPE_TO_PROTO[n.type],
        status=STATUS_TO_PROTO[n.status],
        message=n.message,
        language=n.language,
        event_id=str(n.event_id),
        event_type=n.event_type,
        terminal_code=n.terminal_code or "",
        transaction_reference=n.transaction_reference or "",
        metadata={key: str(value) for key, value in n.metadata.items()},
        created_at=to_timestamp(n.created_at),
        deliveries=[delivery(d) for d in n.deliveries],
    )
    if n.sent_at is not None:
        message.sent_at.CopyFrom(to_timestamp(n.sent_at))
    return message


def delivery(d: Delivery) -> pb.Delivery:
    message = pb.Delivery(
        channel=CHANNEL_TO_PROTO[d.channel],
        status=DELIVERY_STATUS_TO_PROTO[d.status],
        attempts=d.attempts,
        last_error=d.last_error or "",
    )
    if d.status is DeliveryStatus.PENDING:
        message.next_attempt_at.CopyFrom(to_timestamp(d.next_attempt_at))
    if d.sent_at is not None:
        message.sent_at.CopyFrom(to_timestamp(d.sent_at))
    return message


def preferences(p: Preferences) -> pb.Preferences:
    message = pb.Preferences(
        user_id=str(p.user_id),
        muted_channels=[CHANNEL_TO_PROTO[c] for c in Channel if c in p.muted_channels],
        language=p.language,
        time_zone=p.time_zone,
        fare_updates=p.fare_updates,
        travelled_fare_updates=p.travelled_fare_updates,
    )
    if p.updated_at is not None:
        message.updated_at.CopyFrom(to_timestamp(p.updated_at))
    return message
