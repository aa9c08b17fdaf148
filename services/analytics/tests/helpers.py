"""Builders and probes shared by the analytics service tests: events as the journey service
emits them, a publisher onto the test's exchange, and waits on what the consumer did."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import aio_pika
import psycopg
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio
from tiket.analytics.v1 import analytics_pb2_grpc
from tiket.events.v1 import journey_pb2

from libs.auth import Role
from libs.config import Settings
from libs.events import bus
from libs.events.consumer import Consumer, dead_letter_queue
from libs.events.envelope import CloudEvent, new_event
from libs.money import to_money
from libs.server.runtime import ServiceRuntime
from services.analytics.config import AnalyticsConfig
from services.analytics.consumers import queue_name
from services.analytics.messages import proto_date
from tests.support import keys
from tests.support.waiting import wait_until

# Short retries, so a poison event reaches the dead letters in well under a second.
TEST_CONFIG = AnalyticsConfig(retry_backoff_seconds=0.02)


class Caller:
    """An AnalyticsService stub plus tokens: `await analytics.call("GetRouteMatrix", …)`."""

    def __init__(self, channel: aio.Channel, settings: Settings) -> None:
        self.channel = channel
        self.stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
        self.settings = settings

    def metadata(self, role: Role | str, sub: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {keys.token(self.settings, role, sub)}")]

    async def call(self, method: str, request, role: Role | str = Role.OPERATOR, sub: str = "ops"):
        return await getattr(self.stub, method)(request, metadata=self.metadata(role, sub))


def caller_for(runtime: ServiceRuntime) -> Caller:
    return Caller(aio.insecure_channel(f"127.0.0.1:{runtime.port}"), runtime.settings)


pdate = proto_date


def stamp(value: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(value)
    return result


def wib(day: date, hour: int, minute: int = 0) -> datetime:
    """The instant of a Jakarta wall-clock time (UTC+7, the default business time zone)."""
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC) - timedelta(hours=7)


def at_time(event: CloudEvent, when: datetime) -> CloudEvent:
    return replace(event, time=when.isoformat())


# --- events, as services/journey/messages.py builds them ------------------------------------


def checked_in(terminal: str, user: uuid.UUID | None, when: datetime) -> CloudEvent:
    data = journey_pb2.JourneyCheckedIn(
        journey_id=str(uuid.uuid4()),
        user_id=str(user) if user else "",
        card_id="CARD0001",
        terminal_code=terminal,
        terminal_name=f"Terminal {terminal}",
        held_amount=to_money(Decimal(12000)),
        checkin_time=stamp(when),
    )
    return at_time(new_event("/tiket/journey", "journey.checked_in", str(user), data), when)


def closed(
    event_type: str,
    user: uuid.UUID | None,
    *,
    origin: str = "",
    destination: str = "",
    checkin: datetime | None = None,
    checkout: datetime | None = None,
    fare: int | None = None,
    minutes: int | None = None,
) -> CloudEvent:
    """journey.checked_out, journey.abandoned or journey.incomplete."""
    data = journey_pb2.JourneyClosed(
        journey_id=str(uuid.uuid4()),
        user_id=str(user) if user else "",
        card_id="CARD0001",
        status=event_type.removeprefix("journey.").replace("checked_out", "completed"),
        origin_code=origin,
        destination_code=destination,
    )
    if checkin is not None:
        data.checkin_time.CopyFrom(stamp(checkin))
    if checkout is not None:
        data.checkout_time.CopyFrom(stamp(checkout))
    if fare is not None:
        data.fare.CopyFrom(to_money(Decimal(fare)))
    if minutes is not None:
        data.duration_minutes = minutes
    closed_at = checkout or checkin
    assert closed_at is not None
    data.closed_at.CopyFrom(stamp(closed_at))
    return at_time(new_event("/tiket/journey", event_type, str(user), data), closed_at)


def revised(previous: CloudEvent, current: CloudEvent | None, when: datetime) -> CloudEvent:
    """journey.revised of the journey `previous` announced, now as `current` announces it
    (cancelled, fare 0, when None), as services/journey/reconcile.py emits it."""
    before = json_format.ParseDict(previous.data, journey_pb2.JourneyClosed())
    if current is None:
        after = journey_pb2.JourneyClosed()
        after.CopyFrom(before)
        after.status = "cancelled"
        after.fare.CopyFrom(to_money(Decimal(0)))
    else:
        after = json_format.ParseDict(current.data, journey_pb2.JourneyClosed())
        after.journey_id = before.journey_id
    data = journey_pb2.JourneyRevised(previous=before, current=after)
    return at_time(new_event("/tiket/journey", "journey.revised", before.user_id, data), when)


def raw_event(event_type: str, when: datetime, data: dict[str, Any]) -> CloudEvent:
    return CloudEvent(
        id=str(uuid.uuid4()),
        source="/tiket/tests",
        type=event_type,
        time=when.isoformat(),
        subject="tests",
        data=data,
    )


# --- the bus ---------------------------------------------------------------------------------


class Publisher:
    """Publishes onto the test's events exchange with publisher confirms."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None

    async def open(self) -> None:
        self._connection = await bus.connect(self.settings.amqp_url, robust=False)
        channel = await bus.open_channel(self._connection)
        self._exchange = await bus.declare_events_exchange(channel, self.settings.events_exchange)

    async def close(self) -> None:
        await bus.close_quietly(self._connection)

    async def events(self, *events: CloudEvent) -> None:
        for event in events:
            await self.body(event.to_json(), event.type, event.id)

    async def body(self, body: bytes, routing_key: str, message_id: str | None = None) -> None:
        assert self._exchange is not None
        message = bus.event_message(
            body, event_id=message_id or str(uuid.uuid4()), event_type=routing_key
        )
        await self._exchange.publish(message, routing_key, mandatory=True)


async def scalar(db: psycopg.AsyncConnection, query: str, *params: object) -> Any:
    cur = await db.execute(query, params)
    row = await cur.fetchone()
    return row[0] if row else None


async def settled(consumer: Consumer, handled: int, duplicates: int = 0, dead: int = 0) -> None:
    """Wait until the consumer has settled this many deliveries of each kind since start."""

    async def done() -> bool:
        return (
            consumer.handled >= handled
            and consumer.duplicates >= duplicates
            and consumer.dead_lettered >= dead
        )

    await wait_until(done, f"{handled} handled, {duplicates} duplicates, {dead} dead letters")


async def queue_depth(settings: Settings, name: str) -> int | None:
    """Messages waiting in queue `name`; None when it does not exist."""
    connection = await bus.connect(settings.amqp_url, robust=False)
    try:
        channel = await connection.channel()
        with contextlib.suppress(aio_pika.exceptions.ChannelNotFoundEntity):
            queue = await channel.declare_queue(name, passive=True)
            return queue.declaration_result.message_count or 0
        return None
    finally:
        await bus.close_quietly(connection)


async def consumer_listening(settings: Settings) -> None:
    """Wait until the service consumes its queue: before that, events would be unroutable."""

    async def listening() -> bool:
        connection = await bus.connect(settings.amqp_url, robust=False)
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(queue_name(settings.events_exchange), passive=True)
            return bool(queue.declaration_result.consumer_count)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return False
        finally:
            await bus.close_quietly(connection)

    await wait_until(listening, "the analytics consumer to listen")


async def dead_letters(settings: Settings) -> int | None:
    return await queue_depth(settings, dead_letter_queue(queue_name(settings.events_exchange)))
