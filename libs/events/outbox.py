"""Writing events: inside the caller's transaction, into the outbox table.

The relays of this process are woken right after the transaction commits (in_transaction's
after-commit callbacks). Not a NOTIFY trigger: PostgreSQL serialises the commits of every
notifying transaction on a cluster-wide lock held through the WAL flush, which measured
40 % fewer wallet transactions per second. Rows written by other processes are found by the
relays' periodic poll."""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import Message
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from libs.db.transaction import after_commit
from libs.events.envelope import CloudEvent, new_event
from libs.tracing import current_traceparent

_wakers: dict[Callable[[], None], None] = {}


def add_waker(wake: Callable[[], None]) -> None:
    """`wake` is called after each commit of a transaction that emitted (relays register)."""
    _wakers[wake] = None


def remove_waker(wake: Callable[[], None]) -> None:
    _wakers.pop(wake, None)


def _wake_relays() -> None:
    for wake in list(_wakers):
        wake()


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
    after_commit(_wake_relays)
    return event
