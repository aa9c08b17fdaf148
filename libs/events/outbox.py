"""Writing events: inside the caller's transaction, into the outbox table.

The relays of this process are woken right after the transaction commits (in_transaction's
after-commit callbacks). Not a NOTIFY trigger: PostgreSQL serialises the commits of every
notifying transaction on a cluster-wide lock held through the WAL flush, which measured
40 % fewer wallet transactions per second. Rows written by other processes are found by the
relays' periodic poll."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from libs.db.transaction import after_commit, in_unit_of_work
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


# The outbox row of a staged event, for `INSERT INTO outbox (OUTBOX_COLUMNS) SELECT
# EVENT_VALUES FROM …` inside a statement that writes the state change too.
OUTBOX_COLUMNS = "event_id, event_type, body, traceparent"
EVENT_VALUES = "%(event_id)s, %(event_type)s, %(event_body)s, %(event_traceparent)s"


async def emit(
    conn: AsyncConnection, source: str, event_type: str, subject: str, data: Message
) -> CloudEvent:
    """Record an event in the outbox. Call it inside the transaction of the state change it
    announces: both commit or neither does. Inside in_transaction() the relays are woken
    after the commit; elsewhere (another writer, a script) their periodic poll finds it."""
    after_commit(_wake_relays)
    row = _event_row(source, event_type, subject, data)
    await conn.execute(f"INSERT INTO outbox ({OUTBOX_COLUMNS}) VALUES ({EVENT_VALUES})", row)
    return row["event"]


def staged_event(source: str, event_type: str, subject: str, data: Message) -> dict[str, Any]:
    """An event as the named parameters of EVENT_VALUES (plus `event`, the CloudEvent), for
    one statement that writes a state change and the event announcing it — typically a CTE
    whose last part is `INSERT INTO outbox (…) SELECT {EVENT_VALUES} FROM changed`, so the
    event is written exactly when the change is. Stage it inside the statement's unit of work
    (in_statement, in_transaction): that is what wakes the relays after the commit; staged
    anywhere else the event would wait for their periodic poll, so that raises."""
    if not in_unit_of_work():
        raise RuntimeError(
            f"{event_type} staged outside in_statement()/in_transaction(): "
            "its relay would not be woken after the commit"
        )
    after_commit(_wake_relays)
    return _event_row(source, event_type, subject, data)


def _event_row(source: str, event_type: str, subject: str, data: Message) -> dict[str, Any]:
    event = new_event(source, event_type, subject, data)
    return {
        "event": event,
        "event_id": event.id,
        "event_type": event.type,
        "event_body": Jsonb(event.to_dict()),
        "event_traceparent": current_traceparent(),
    }
