"""The real user and notification services in this process (port 0, one isolated run:
databases, exchange, Redis prefix), a real SMTP server (aiosmtpd) reached through a
fault-injection proxy, and a local HTTP server standing in for the push/SMS provider."""

from __future__ import annotations

import asyncio
import contextlib
import email
import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from email import policy
from email.message import EmailMessage
from typing import Any

import aio_pika
import psycopg
from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session
from google.protobuf.message import Message as ProtoMessage
from grpc import aio
from tiket.notification.v1 import notification_pb2_grpc
from tiket.user.v1 import user_pb2, user_pb2_grpc

from libs.auth import Role
from libs.config import Settings, load
from libs.events import bus
from libs.events.consumer import Consumer, StartsWhenReachable
from libs.events.envelope import CloudEvent, new_event
from libs.server.runtime import Resources, ServiceRuntime, Wiring
from services.notification import consumers, service, store
from services.notification.config import NotificationConfig
from services.user.service import DEFINITION as USER
from tests.support import keys
from tests.support.cleanup import remove_run
from tests.support.settings import isolated_env
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

SERVICES = ("user", "notification")
_cards = itertools.count(1)


class SmtpInbox:
    """An aiosmtpd handler keeping every message it accepts; `refuse` maps a recipient to
    the reply its RCPT gets instead of 250 (e.g. "450 4.2.0 greylisted")."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.refuse: dict[str, str] = {}

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))  # type: ignore[arg-type]
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]


@dataclass
class WebhookInbox:
    """The push/SMS provider: records each POST (JSON body and Idempotency-Key) and answers
    `status`."""

    calls: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    status: int = 200

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((await request.json(), request.headers.get("Idempotency-Key", "")))
        return web.json_response({"accepted": self.status < 300}, status=self.status)

    def to(self, recipient: str) -> list[dict[str, Any]]:
        return [body for body, _ in self.calls if body["to"] == recipient]


@dataclass
class Stack:
    settings: Settings
    runtimes: dict[str, ServiceRuntime]
    channels: dict[str, aio.Channel]
    exchange: aio_pika.abc.AbstractExchange
    smtp: SmtpInbox
    smtp_proxy: TcpProxy
    webhook: WebhookInbox
    config: NotificationConfig
    consumer: Consumer  # the first notification service's: what it handled, what it dropped

    @asynccontextmanager
    async def replica(self) -> AsyncIterator[ServiceRuntime]:
        """A second notification service on the same database and queue."""
        runtime = ServiceRuntime(self.runtimes["notification"].definition, self.settings)
        await runtime.start()
        try:
            yield runtime
        finally:
            await runtime.stop()

    @property
    def notifications(self) -> notification_pb2_grpc.NotificationServiceStub:
        return notification_pb2_grpc.NotificationServiceStub(self.channels["notification"])

    @property
    def users(self) -> user_pb2_grpc.UserServiceStub:
        return user_pb2_grpc.UserServiceStub(self.channels["user"])

    def metadata(self, role: Role | str = Role.ADMIN, sub: str = "tests") -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {keys.token(self.settings, role, sub)}")]

    async def call(self, method: str, request, role: Role | str = Role.ADMIN, sub: str = "tests"):
        stub = self.notifications
        return await getattr(stub, method)(request, metadata=self.metadata(role, sub), timeout=10)

    def database_url(self, name: str = "notification") -> str:
        return self.settings.database_url(name)

    async def new_rider(self, *, email_address: bool = True, phone: bool = True) -> str:
        """A new rider in the user service; their id."""
        number = next(_cards)
        tag = uuid.uuid4().hex[:8]
        request = user_pb2.CreateUserRequest(
            card_id=f"NT{tag.upper()}{number:04d}",
            full_name=f"Rider {number}",
            email=f"rider{number}.{tag}@example.com" if email_address else "",
            phone=f"+62812{number:07d}" if phone else "",
        )
        user = await self.users.CreateUser(request, metadata=self.metadata())
        return user.id

    async def contact(self, user_id: str) -> user_pb2.User:
        request = user_pb2.GetUserRequest(user_id=user_id)
        return await self.users.GetUser(request, metadata=self.metadata())

    async def publish(self, event: CloudEvent) -> None:
        """Publish as the outbox relay does; fails when no queue is bound to its type."""
        message = bus.event_message(event.to_json(), event_id=event.id, event_type=event.type)
        await self.exchange.publish(message, event.type, mandatory=True)

    async def publish_raw(self, body: bytes, routing_key: str) -> None:
        message = bus.event_message(body, event_id=str(uuid.uuid4()), event_type=routing_key)
        await self.exchange.publish(message, routing_key, mandatory=True)

    @asynccontextmanager
    async def database(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A connection to the notification database that speaks its enum types (for tests
        that drive the store as a worker would)."""
        async with await psycopg.AsyncConnection.connect(self.database_url()) as conn:
            await store.register_types(conn)
            yield conn

    async def rows(self, query: str, *params: object) -> list[tuple]:
        async with await psycopg.AsyncConnection.connect(self.database_url()) as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall()


def event(event_type: str, subject: str, data: ProtoMessage) -> CloudEvent:
    return new_event("/tests", event_type, subject, data)


TEST_CONFIG = NotificationConfig(
    send_timeout=2.0,
    max_attempts=3,
    retry_base=0.05,
    retry_max=0.2,
    poll_interval=0.1,
    event_max_attempts=2,
)


@asynccontextmanager
async def running_stack(config: NotificationConfig = TEST_CONFIG) -> AsyncIterator[Stack]:
    env = isolated_env()
    base = load(env)
    smtp, webhook = SmtpInbox(), WebhookInbox()
    loop = asyncio.get_running_loop()
    smtp_server = await loop.create_server(lambda: SMTP(smtp), "127.0.0.1", 0)
    smtp_proxy = TcpProxy("127.0.0.1", smtp_server.sockets[0].getsockname()[1])
    await smtp_proxy.start()
    app = web.Application()
    app.router.add_post("/hook", webhook.handle)
    web_runner = web.AppRunner(app)
    await web_runner.setup()
    site = web.TCPSite(web_runner, "127.0.0.1", 0)
    await site.start()
    web_port = web_runner.addresses[0][1]
    config = replace(
        config,
        smtp_host="127.0.0.1",
        smtp_port=smtp_proxy.port,
        webhook_url=f"http://127.0.0.1:{web_port}/hook",
    )
    runtimes = {"user": ServiceRuntime(USER, base)}
    channels: dict[str, aio.Channel] = {}
    connection = None
    try:
        await runtimes["user"].start()
        settings = load({**env, "TIKET_USER_ADDR": f"127.0.0.1:{runtimes['user'].port}"})
        wirings: list[Wiring] = []

        async def build(resources: Resources) -> Wiring:
            wirings.append(await service.build(resources, notification_config=config))
            return wirings[-1]

        definition = replace(service.DEFINITION, build=build)
        runtimes["notification"] = ServiceRuntime(definition, settings)
        await runtimes["notification"].start()
        for name, runtime in runtimes.items():
            channels[name] = aio.insecure_channel(f"127.0.0.1:{runtime.port}")
        connection = await bus.connect(settings.amqp_url, robust=False)
        channel = await bus.open_channel(connection)
        exchange = await bus.declare_events_exchange(channel, settings.events_exchange)
        await consumer_ready(settings)
        [consumer] = [
            b.consumer for b in wirings[0].background if isinstance(b, StartsWhenReachable)
        ]
        yield Stack(
            settings, runtimes, channels, exchange, smtp, smtp_proxy, webhook, config, consumer
        )
    finally:
        await bus.close_quietly(connection)
        for grpc_channel in channels.values():
            await grpc_channel.close()
        for runtime in reversed(list(runtimes.values())):
            await runtime.stop()
        await web_runner.cleanup()
        await smtp_proxy.stop()
        smtp_server.close()
        await remove_run(base, SERVICES)


async def consumer_ready(settings: Settings, within: float = 15.0, name: str = "") -> None:
    """Wait until the notification consumer (or the one of queue `name`) listens on its
    queue (it connects in the background): events published before would be routed
    nowhere."""
    name = name or consumers.queue_name(settings.events_exchange)

    async def listening() -> bool:
        connection = await bus.connect(settings.amqp_url, robust=False)
        try:
            channel = await connection.channel()
            with contextlib.suppress(aio_pika.exceptions.ChannelNotFoundEntity):
                queue = await channel.declare_queue(name, passive=True)
                return (queue.declaration_result.consumer_count or 0) > 0
            return False
        finally:
            await bus.close_quietly(connection)

    await wait_until(listening, f"a consumer on {name}", within)
