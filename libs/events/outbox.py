"""Writing events: inside the caller's transaction, into the outbox table."""

from __future__ import annotations

from google.protobuf.message import Message
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from libs.events.envelope import CloudEvent, new_event
from libs.tracing import current_traceparent


async def emit(
    conn: AsyncConnection, source: str, event_type: str, subject: str, data: Message
) -> CloudEvent:
    """Record an event in the outbox. Call it inside the transaction of the state change it
    announces: both commit or neither does."""
    event = new_event(source, event_type, subject, data)
    await conn.execute(
        "INSERT INTO outbox (event_id, event_type, body, traceparent) VALUES (%s, %s, %s, %s)",
        (event.id, event.type, Jsonb(event.to_dict()), current_traceparent()),
    )
    return event
