"""The events of the journey service, staged for the statement that writes the state change
they announce (store.py inserts them into the outbox with it)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection

from libs.events.outbox import emit, staged_event
from services.journey import messages
from services.journey.domain import Journey, JourneyStatus, Tap

SOURCE = "/tiket/journey"
CLOSED_TYPES = {
    JourneyStatus.COMPLETED: "journey.checked_out",
    JourneyStatus.ABANDONED: "journey.abandoned",
    JourneyStatus.INCOMPLETE: "journey.incomplete",
}


def checked_in(journey: Journey, available: Decimal) -> dict[str, Any]:
    data = messages.checked_in(journey, available)
    return staged_event(SOURCE, "journey.checked_in", str(journey.user_id), data)


async def offline_checked_in(
    conn: AsyncConnection, tap: Tap, journey_id: uuid.UUID, terminal_name: str
) -> None:
    """journey.checked_in of an entry a gate decided offline, in the transaction placing it:
    what analytics counts as that terminal's check-in (riders are not told of it)."""
    data = messages.offline_checked_in(tap, journey_id, terminal_name)
    await emit(conn, SOURCE, "journey.checked_in", str(tap.user_id), data)


def closed(journey: Journey) -> dict[str, Any] | None:
    """journey.checked_out, journey.abandoned or journey.incomplete, once settled. None for a
    journey cancelled while active (its online check-in became a repeat of an earlier entry
    uploaded late): nothing closed, the hold its check-in announced is just released."""
    event_type = CLOSED_TYPES.get(journey.status)
    if event_type is None:
        return None
    data = messages.closed(journey)
    return staged_event(SOURCE, event_type, str(journey.user_id), data)


async def revised(conn: AsyncConnection, before: Journey, after: Journey) -> None:
    """journey.revised of a journey announced closed that reconciliation changed, in the
    transaction writing the change: without it analytics would keep counting the journey
    as first announced (an abandoned journey a late exit completed, an orphan exit a late
    entry merged into another journey)."""
    await emit(conn, SOURCE, "journey.revised", str(after.user_id), messages.revised(before, after))
