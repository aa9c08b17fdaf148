"""SQL of recurring series (facility_booking_series and the occurrences naming them), on the
caller's connection and inside the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from services.booking.facilities import store
from services.booking.facilities.domain import FacilityBooking, FacilitySeries

SERIES_COLUMNS = (
    "series_id AS id, facility_id, user_id, rrule, start_time, end_time, title, attendee_count, "
    "skip_conflicts, skipped, request_id, created_by, created_at"
)
SERIES = class_row(FacilitySeries)


async def insert_series(
    conn: AsyncConnection, series_id: uuid.UUID, fields: dict[str, object]
) -> bool:
    """Whether the series is new; False when (user_id, request_id) made one already (a
    concurrent one is waited for: the unique index serialises retries)."""
    cur = await conn.execute(
        """INSERT INTO facility_booking_series (series_id, facility_id, user_id, rrule,
                  start_time, end_time, title, attendee_count, skip_conflicts, request_id,
                  created_by)
           VALUES (%(series_id)s, %(facility_id)s, %(user_id)s, %(rrule)s, %(start_time)s,
                   %(end_time)s, %(title)s, %(attendee_count)s, %(skip_conflicts)s,
                   %(request_id)s, %(created_by)s)
           ON CONFLICT (user_id, request_id) DO NOTHING""",
        {**fields, "series_id": series_id},
    )
    return cur.rowcount == 1


async def series(
    conn: AsyncConnection, series_id: uuid.UUID, *, lock: bool = False
) -> FacilitySeries | None:
    query = f"SELECT {SERIES_COLUMNS} FROM facility_booking_series WHERE series_id = %s"
    return await store.fetch_one(conn, SERIES, query, (series_id,), lock=lock)


async def series_by_request(
    conn: AsyncConnection, user_id: uuid.UUID, request_id: str
) -> FacilitySeries | None:
    query = f"SELECT {SERIES_COLUMNS} FROM facility_booking_series WHERE {store.BY_REQUEST}"
    return await store.fetch_one(conn, SERIES, query, (user_id, request_id))


async def set_skipped(
    conn: AsyncConnection, series_id: uuid.UUID, skipped: Sequence[dict[str, str]]
) -> None:
    await conn.execute(
        "UPDATE facility_booking_series SET skipped = %s WHERE series_id = %s",
        (Jsonb(list(skipped)), series_id),
    )


async def series_bookings(
    conn: AsyncConnection, series_id: uuid.UUID, since: datetime, *, lock: bool = False
) -> list[FacilityBooking]:
    """The series' occurrences that start at or after `since`, by start time."""
    cur = conn.cursor(row_factory=store.BOOKING)
    suffix = " FOR UPDATE" if lock else ""
    await cur.execute(
        f"""SELECT {store.BOOKING_COLUMNS} FROM facility_bookings
             WHERE series_id = %s AND start_time >= %s ORDER BY start_time{suffix}""",
        (series_id, since),
    )
    return await cur.fetchall()
