"""Wiring of the notification service: what `tiket serve notification` runs."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from grpc import aio
from tiket.notification.v1 import notification_pb2, notification_pb2_grpc

from libs.clients import service_channel
from libs.db.migrations import Track
from libs.events.consumer import StartsWhenReachable
from libs.server.runtime import Resources, ServiceDefinition, Wiring
from services.notification import config, consumers, jobs, store
from services.notification.api import NotificationApi
from services.notification.app import NotificationApp
from services.notification.config import NotificationConfig
from services.notification.contacts import Contacts
from services.notification.delivery import DeliveryWorker
from services.notification.domain import Channel
from services.notification.senders import EmailSender, Sender, WebhookSender

TRACK = Track("notification", Path(__file__).parent / "migrations")
USER_SERVICE = "tiket.user.v1.UserService"


async def build(
    resources: Resources, notification_config: NotificationConfig | None = None
) -> Wiring:
    """`notification_config` defaults to TIKET_NOTIFICATION_* (tests pass their own)."""
    settings = resources.settings
    notification_config = notification_config or config.load()
    user_channel = service_channel(
        settings.addresses["user"],
        USER_SERVICE,
        callee="user",
        identity=resources.identity,
        timeout_seconds=notification_config.dependency_timeout,
    )
    senders: dict[Channel, Sender] = {}
    if notification_config.smtp_host:
        senders[Channel.EMAIL] = EmailSender(notification_config)
    session = aiohttp.ClientSession() if notification_config.webhook_url else None
    if session is not None:
        senders[Channel.PUSH] = senders[Channel.SMS] = WebhookSender(notification_config, session)
    contacts = Contacts(user_channel, resources.cache, notification_config.contact_ttl)
    worker = jobs.delivery_worker(
        DeliveryWorker(resources.pool, notification_config, contacts, senders),
        notification_config.poll_interval,
    )
    app = NotificationApp(resources.pool, notification_config, worker.wake)
    consumer = consumers.events_consumer(
        resources.pool,
        settings.amqp_url,
        settings.events_exchange,
        app,
        notification_config.event_max_attempts,
    )

    def register(server: aio.Server) -> None:
        notification_pb2_grpc.add_NotificationServiceServicer_to_server(
            NotificationApi(app), server
        )

    async def close() -> None:
        await user_channel.close()
        if session is not None:
            await session.close()

    forgetter = jobs.trip_forgetter(app, settings.sweep_interval_seconds)
    return Wiring(
        register=register,
        background=[StartsWhenReachable(consumer), worker, forgetter],
        close=close,
    )


DEFINITION = ServiceDefinition(
    name="notification",
    services=[notification_pb2.DESCRIPTOR.services_by_name["NotificationService"]],
    tracks=[TRACK],
    build=build,
    configure_connection=store.register_types,
)
