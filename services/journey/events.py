"""The events of the journey service, written to the outbox in the transaction of the state
change they announce."""

from __future__ import annotations

from decimal import Decimal

from psycopg import AsyncConnection

from libs.events.outbox import emit
from services.journey import messages
from services.journey.domain import Journey, JourneyStatus

SOURCE = "/tiket/journey"
CLOSED_TYPES = {
    JourneyStatus.COMPLETED: "journey.checked_out",
    JourneyStatus.ABANDONED: "journey.abandoned",
    JourneyStatus.INCOMPLETE: "journey.incomplete",
}


async def checked_in(conn: AsyncConnection, journey: Journey, available: Decimal) -> None:
    data = messages.checked_in(journey, available)
    await emit(conn, SOURCE, "journey.checked_in", str(journey.user_id), data)


async def closed(conn: AsyncConnection, journey: Journey) -> None:
    """journey.checked_out, journey.abandoned or journey.incomplete, once settled."""
    data = messages.closed(journey)
    await emit(conn, SOURCE, CLOSED_TYPES[journey.status], str(journey.user_id), data)
