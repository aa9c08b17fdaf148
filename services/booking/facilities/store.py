"""SQL of facilities, their hours, bookings and audit log (psycopg 3, parameters only). Every
function runs on the caller's connection and inside the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from psycopg import AsyncConnection
from psycopg.rows import RowFactory, class_row
from psycopg.types.json import Jsonb

from libs.events.outbox import EVENT_VALUES, OUTBOX_COLUMNS
from services.booking.events import STORE_COLUMNS, STORE_VALUES
from services.booking.facilities.domain import (
    AuditAction,
    Facility,
    FacilityBooking,
    FacilityBookingStatus,
    OpeningWindow,
    RequestContext,
)
from services.booking.store import records

FACILITY_COLUMNS = (
    "facility_id AS id, name, location, capacity, time_zone, requires_approval, is_active, "
    "created_at, updated_at"
)
BOOKING_COLUMNS = (
    "booking_id AS id, facility_id, user_id, start_time, end_time, title, description, "
    "attendee_count, external_meeting_url, status, created_by, created_at, updated_at, "
    "request_id, cancelled_at, cancelled_by, cancellation_reason, decided_at, decided_by, "
    "decision_reason, series_id"
)
BOOKING = records(FacilityBooking, status=FacilityBookingStatus)
BY_REQUEST = "user_id = %s AND request_id = %s"
AUDIT_COLUMNS = (
    "booking_id, action, old_values, new_values, changed_by, user_agent, ip_address, request_id"
)
AUDIT_VALUES = (
    "%(audit_booking_id)s, %(audit_action)s, %(audit_old)s, %(audit_new)s, "
    "%(audit_changed_by)s, %(audit_user_agent)s, %(audit_ip_address)s, %(audit_request_id)s"
)
HOLDING = "status IN ('confirmed', 'pending')"
After = tuple[datetime, uuid.UUID] | None
T = TypeVar("T")


# --- facilities -------------------------------------------------------------------------


async def insert_facility(
    conn: AsyncConnection, fields: dict[str, object], request_id: str | None, created_by: str
) -> Facility | None:
    """The new facility; None when `request_id` made one already."""
    cur = conn.cursor(row_factory=class_row(Facility))
    await cur.execute(
        f"""INSERT INTO facilities (name, location, capacity, time_zone, requires_approval,
                                    is_active, request_id, created_by)
            VALUES (%(name)s, %(location)s, %(capacity)s, %(time_zone)s,
                    %(requires_approval)s, %(is_active)s, %(request_id)s, %(created_by)s)
            ON CONFLICT (request_id) DO NOTHING RETURNING {FACILITY_COLUMNS}""",
        {**fields, "request_id": request_id, "created_by": created_by},
    )
    return await cur.fetchone()


async def facility(
    conn: AsyncConnection, column: str, value: object, *, lock: bool = False
) -> Facility | None:
    """The facility with its hours."""
    assert column in {"facility_id", "request_id"}
    cur = conn.cursor(row_factory=class_row(Facility))
    suffix = " FOR SHARE" if lock else ""
    await cur.execute(
        f"SELECT {FACILITY_COLUMNS} FROM facilities WHERE {column} = %s{suffix}", (value,)
    )
    found = await cur.fetchone()
    if found is None:
        return None
    return replace(found, hours=tuple(await hours(conn, found.id)))


async def hours(conn: AsyncConnection, facility_id: uuid.UUID) -> list[OpeningWindow]:
    return (await hours_of(conn, [facility_id])).get(facility_id, [])


async def hours_of(
    conn: AsyncConnection, facility_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[OpeningWindow]]:
    """The opening hours of each of `facility_ids` (a closed one has none), in one query."""
    cur = await conn.execute(
        """SELECT facility_id, weekday, open_minute, close_minute FROM facility_hours
            WHERE facility_id = ANY(%s) ORDER BY facility_id, weekday, open_minute""",
        (list(facility_ids),),
    )
    found: dict[uuid.UUID, list[OpeningWindow]] = {}
    for facility_id, *window in await cur.fetchall():
        found.setdefault(facility_id, []).append(OpeningWindow(*window))
    return found


async def replace_hours(
    conn: AsyncConnection, facility_id: uuid.UUID, windows: Sequence[OpeningWindow]
) -> bool:
    """Set the facility's hours to `windows`; False when the facility is unknown."""
    cur = await conn.execute(
        "UPDATE facilities SET updated_at = NOW() WHERE facility_id = %s", (facility_id,)
    )
    if cur.rowcount == 0:
        return False
    await conn.execute("DELETE FROM facility_hours WHERE facility_id = %s", (facility_id,))
    if windows:
        async with conn.cursor() as insert:
            await insert.executemany(
                """INSERT INTO facility_hours (facility_id, weekday, open_minute, close_minute)
                   VALUES (%s, %s, %s, %s)""",
                [(facility_id, w.weekday, w.open_minute, w.close_minute) for w in windows],
            )
    return True


async def list_facilities(
    conn: AsyncConnection, active_only: bool, after: After, limit: int
) -> list[Facility]:
    cur = conn.cursor(row_factory=class_row(Facility))
    await cur.execute(
        f"""SELECT {FACILITY_COLUMNS} FROM facilities
             WHERE (NOT %(active_only)s OR is_active)
               AND (%(at)s::timestamptz IS NULL OR (created_at, facility_id) > (%(at)s, %(id)s))
             ORDER BY created_at, facility_id LIMIT %(limit)s""",
        {
            "active_only": active_only,
            "at": after[0] if after else None,
            "id": after[1] if after else None,
            "limit": limit,
        },
    )
    found = await cur.fetchall()
    windows = await hours_of(conn, [f.id for f in found])
    return [replace(f, hours=tuple(windows.get(f.id, ()))) for f in found]


# --- bookings ---------------------------------------------------------------------------


# BookFacility's one statement, and each occurrence's of BookFacilitySeries: the booking under
# its (user_id, request_id) if it exists; else, while the facility is still the version the
# caller checked the booking against (updated_at, read FOR SHARE so that no change of its hours
# commits meanwhile), the new booking, its audit row `created`, its event store and outbox rows.
# `ON CONFLICT DO NOTHING` (any arbiter): an overlap that booking_no_overlap refuses, or a
# concurrent request under the same request_id, writes nothing and raises no error to roll
# back; the statement then answers the first booking that holds the range, where its snapshot
# sees one (not one committed while the INSERT waited for it: the caller reads again).
BOOK = f"""
WITH prior AS (
    SELECT {BOOKING_COLUMNS} FROM facility_bookings
     WHERE user_id = %(user_id)s AND request_id = %(request_id)s
), facility AS (
    SELECT facility_id FROM facilities
     WHERE facility_id = %(facility_id)s AND updated_at = %(version)s
       AND NOT EXISTS (SELECT FROM prior)
       FOR SHARE
), made AS (
    INSERT INTO facility_bookings (booking_id, facility_id, user_id, start_time, end_time,
           title, description, attendee_count, external_meeting_url, status, request_id,
           created_by, series_id)
    SELECT %(booking_id)s, facility_id, %(user_id)s, %(start_time)s, %(end_time)s, %(title)s,
           %(description)s, %(attendee_count)s, %(external_meeting_url)s, %(status)s,
           %(request_id)s, %(created_by)s, %(series_id)s
      FROM facility
    ON CONFLICT DO NOTHING
    RETURNING {BOOKING_COLUMNS}
), audited AS (
    INSERT INTO facility_booking_audit_log ({AUDIT_COLUMNS}) SELECT {AUDIT_VALUES} FROM made
), stored AS (
    INSERT INTO event_store ({STORE_COLUMNS}) SELECT {STORE_VALUES} FROM made
), sent AS (
    INSERT INTO outbox ({OUTBOX_COLUMNS}) SELECT {EVENT_VALUES} FROM made
)
SELECT * FROM made
UNION ALL SELECT * FROM prior
UNION ALL (
    SELECT {BOOKING_COLUMNS} FROM facility_bookings
     WHERE EXISTS (SELECT FROM facility) AND NOT EXISTS (SELECT FROM made)
       AND facility_id = %(facility_id)s AND {HOLDING}
       AND tstzrange(start_time, end_time) && tstzrange(%(start_time)s, %(end_time)s)
     ORDER BY start_time LIMIT 1
)"""


async def book(
    conn: AsyncConnection,
    draft: FacilityBooking,
    version: datetime,
    audit: dict[str, object],
    event: dict[str, Any],
) -> FacilityBooking | None:
    """BOOK: `draft` as written (its id), the booking its request_id made before, or the
    first booking that holds the range (an overlap); None when it wrote nothing and found
    none of them: the facility changed since `version`, or a concurrent request won."""
    cur = conn.cursor(row_factory=BOOKING)
    await cur.execute(BOOK, {**book_params(draft, version), **audit, **event})
    return await cur.fetchone()


def book_params(draft: FacilityBooking, version: datetime) -> dict[str, object]:
    """BOOK's parameters of the booking itself."""
    return {
        "booking_id": draft.id,
        "facility_id": draft.facility_id,
        "user_id": draft.user_id,
        "start_time": draft.start_time,
        "end_time": draft.end_time,
        "title": draft.title,
        "description": draft.description,
        "attendee_count": draft.attendee_count,
        "external_meeting_url": draft.external_meeting_url,
        "status": draft.status,
        "request_id": draft.request_id,
        "created_by": draft.created_by,
        "series_id": draft.series_id,
        "version": version,
    }


async def booking(
    conn: AsyncConnection, booking_id: uuid.UUID, *, lock: bool = False
) -> FacilityBooking | None:
    query = f"SELECT {BOOKING_COLUMNS} FROM facility_bookings WHERE booking_id = %s"
    return await fetch_one(conn, BOOKING, query, (booking_id,), lock=lock)


async def booking_by_request(
    conn: AsyncConnection, user_id: uuid.UUID, request_id: str
) -> FacilityBooking | None:
    query = f"SELECT {BOOKING_COLUMNS} FROM facility_bookings WHERE {BY_REQUEST}"
    return await fetch_one(conn, BOOKING, query, (user_id, request_id))


async def fetch_one(
    conn: AsyncConnection,
    factory: RowFactory[T],
    query: str,
    params: Sequence[object],
    *,
    lock: bool = False,
) -> T | None:
    """The row `query` finds (locked FOR UPDATE with `lock`), or None."""
    cur = conn.cursor(row_factory=factory)
    await cur.execute(query + (" FOR UPDATE" if lock else ""), params)
    return await cur.fetchone()


async def holding(
    conn: AsyncConnection,
    facility_id: uuid.UUID,
    start: datetime,
    end: datetime,
    *,
    besides: uuid.UUID | None = None,
) -> list[tuple[datetime, datetime]]:
    """(start, end) of the bookings holding time of the facility that overlap [start, end),
    other than `besides`: one scan of booking_no_overlap's GiST index."""
    cur = await conn.execute(
        f"""SELECT start_time, end_time FROM facility_bookings
             WHERE facility_id = %s AND {HOLDING}
               AND tstzrange(start_time, end_time) && tstzrange(%s, %s)
               AND (%s::uuid IS NULL OR booking_id <> %s)
             ORDER BY start_time""",
        (facility_id, start, end, besides, besides),
    )
    return [(row[0], row[1]) for row in await cur.fetchall()]


async def move(
    conn: AsyncConnection,
    booking_id: uuid.UUID,
    start: datetime,
    end: datetime,
    attendee_count: int,
    status: FacilityBookingStatus,
) -> FacilityBooking:
    """Set the range, attendee count and status of a booking the caller has locked; a change
    of status clears the decision (decided_*). ExclusionViolation (booking_no_overlap) when
    the new range overlaps another booking that holds its time."""
    cur = conn.cursor(row_factory=BOOKING)
    await cur.execute(
        f"""UPDATE facility_bookings
               SET start_time = %(start)s, end_time = %(end)s, attendee_count = %(count)s,
                   status = %(status)s::varchar,
                   decided_at = CASE WHEN status = %(status)s::varchar THEN decided_at END,
                   decided_by = CASE WHEN status = %(status)s::varchar THEN decided_by END,
                   decision_reason = CASE WHEN status = %(status)s::varchar
                                          THEN decision_reason END
             WHERE booking_id = %(id)s RETURNING {BOOKING_COLUMNS}""",
        {"start": start, "end": end, "count": attendee_count, "status": status, "id": booking_id},
    )
    changed = await cur.fetchone()
    assert changed is not None  # locked by the caller
    return changed


async def calendar(
    conn: AsyncConnection, facility_id: uuid.UUID, start: datetime, end: datetime
) -> list[FacilityBooking]:
    """The bookings of the facility holding time that overlap [start, end), by start time."""
    cur = conn.cursor(row_factory=BOOKING)
    await cur.execute(
        f"""SELECT {BOOKING_COLUMNS} FROM facility_bookings
             WHERE facility_id = %s AND {HOLDING}
               AND tstzrange(start_time, end_time) && tstzrange(%s, %s)
             ORDER BY start_time, booking_id""",
        (facility_id, start, end),
    )
    return await cur.fetchall()


async def confirmed_ranges(
    conn: AsyncConnection, facility_ids: Sequence[uuid.UUID], start: datetime, end: datetime
) -> list[tuple[uuid.UUID, datetime, datetime]]:
    """(facility, start, end) of the confirmed bookings of the facilities that overlap
    [start, end), in one query on facility_bookings_facility_time_idx (a booking lasts at
    most 24 hours, so it starts less than a day before the range)."""
    cur = await conn.execute(
        """SELECT facility_id, start_time, end_time FROM facility_bookings
            WHERE facility_id = ANY(%(ids)s) AND status = 'confirmed'
              AND start_time >= %(start)s - INTERVAL '24 hours' AND start_time < %(end)s
              AND end_time > %(start)s
            ORDER BY facility_id, start_time""",
        {"ids": list(facility_ids), "start": start, "end": end},
    )
    return [(row[0], row[1], row[2]) for row in await cur.fetchall()]


async def facilities_with_hours(
    conn: AsyncConnection, facility_id: uuid.UUID | None
) -> list[Facility]:
    """One facility, or every active one (facility_id None), each with its hours."""
    cur = conn.cursor(row_factory=class_row(Facility))
    await cur.execute(
        f"""SELECT {FACILITY_COLUMNS} FROM facilities
             WHERE facility_id = %(id)s OR (%(id)s::uuid IS NULL AND is_active)
             ORDER BY name, facility_id""",
        {"id": facility_id},
    )
    found = await cur.fetchall()
    windows = await hours_of(conn, [f.id for f in found])
    return [replace(f, hours=tuple(windows.get(f.id, ()))) for f in found]


# --- health -----------------------------------------------------------------------------


async def conflict_count(conn: AsyncConnection, within: timedelta | None = None) -> int:
    """The seed's conflict query on facility_bookings: bookings of one facility that hold
    time and overlap another (0 while booking_no_overlap holds); with `within`, only the
    bookings ending in that last stretch of time or later (the seed's monitor: 7 days)."""
    recent = (
        ""
        if within is None
        else "AND tstzrange(b1.start_time, b1.end_time) && tstzrange(now() - %s, NULL)"
    )
    cur = await conn.execute(
        f"""SELECT count(DISTINCT b1.booking_id) FROM facility_bookings b1
              JOIN facility_bookings b2
                ON b1.booking_id <> b2.booking_id AND b1.facility_id = b2.facility_id
             WHERE b1.{HOLDING} AND b2.{HOLDING}
               AND tstzrange(b1.start_time, b1.end_time)
                   && tstzrange(b2.start_time, b2.end_time) {recent}""",
        () if within is None else (within,),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def scan_counts(conn: AsyncConnection) -> tuple[int, int]:
    """(index scans, sequential scans) of facility_bookings since the statistics reset."""
    cur = await conn.execute(
        """SELECT coalesce(idx_scan, 0), coalesce(seq_scan, 0) FROM pg_stat_user_tables
            WHERE relid = 'facility_bookings'::regclass"""
    )
    row = await cur.fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


async def set_status(
    conn: AsyncConnection,
    booking_id: uuid.UUID,
    status: FacilityBookingStatus,
    who: str,
    reason: str | None,
) -> FacilityBooking:
    """Cancel (cancelled_*) or decide (decided_*) a booking the caller has locked."""
    if status is FacilityBookingStatus.CANCELLED:
        assignments = "cancelled_at = NOW(), cancelled_by = %(who)s, cancellation_reason = %(why)s"
    else:
        assignments = "decided_at = NOW(), decided_by = %(who)s, decision_reason = %(why)s"
    cur = conn.cursor(row_factory=BOOKING)
    await cur.execute(
        f"""UPDATE facility_bookings SET status = %(status)s, {assignments}
             WHERE booking_id = %(id)s RETURNING {BOOKING_COLUMNS}""",
        {"status": status, "who": who, "why": reason, "id": booking_id},
    )
    changed = await cur.fetchone()
    assert changed is not None  # locked by the caller
    return changed


async def upcoming(
    conn: AsyncConnection, user_id: uuid.UUID, now: datetime, after: After, limit: int
) -> list[FacilityBooking]:
    """The seed's "upcoming bookings" query, with pending ones and keyset paging."""
    cur = conn.cursor(row_factory=BOOKING)
    await cur.execute(
        f"""SELECT {BOOKING_COLUMNS} FROM facility_bookings
             WHERE user_id = %(user)s AND {HOLDING} AND start_time >= %(now)s
               AND (%(at)s::timestamptz IS NULL OR (start_time, booking_id) > (%(at)s, %(id)s))
             ORDER BY start_time, booking_id LIMIT %(limit)s""",
        {
            "user": user_id,
            "now": now,
            "at": after[0] if after else None,
            "id": after[1] if after else None,
            "limit": limit,
        },
    )
    return await cur.fetchall()


# --- audit ------------------------------------------------------------------------------


async def audit(
    conn: AsyncConnection,
    booking_id: uuid.UUID,
    action: AuditAction,
    old: dict[str, object] | None,
    new: dict[str, object] | None,
    changed_by: str,
    context: RequestContext,
) -> None:
    await conn.execute(
        f"INSERT INTO facility_booking_audit_log ({AUDIT_COLUMNS}) VALUES ({AUDIT_VALUES})",
        audit_params(booking_id, action, old, new, changed_by, context),
    )


def audit_params(
    booking_id: uuid.UUID,
    action: AuditAction,
    old: dict[str, object] | None,
    new: dict[str, object] | None,
    changed_by: str,
    context: RequestContext,
) -> dict[str, object]:
    """AUDIT_VALUES' parameters."""
    return {
        "audit_booking_id": booking_id,
        "audit_action": action,
        "audit_old": None if old is None else Jsonb(old),
        "audit_new": None if new is None else Jsonb(new),
        "audit_changed_by": changed_by,
        "audit_user_agent": context.user_agent,
        "audit_ip_address": context.ip_address,
        "audit_request_id": context.request_id,
    }
