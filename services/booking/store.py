"""SQL of the clinic catalogue and the slots (psycopg 3, parameters only). Every function
runs on the caller's connection and inside the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, TypeVar

from psycopg import AsyncConnection
from psycopg.rows import RowFactory, class_row, dict_row

from services.booking.domain import Clinic, ClinicService, Slot, SlotStatus, Staff
from services.booking.schedule import PlannedSlot

T = TypeVar("T")
CLINIC_COLUMNS = "clinic_id AS id, name, address, time_zone, is_active, created_at, updated_at"
SERVICE_COLUMNS = (
    "service_id AS id, clinic_id, name, duration_minutes, price, default_capacity, is_active, "
    "created_at"
)
STAFF_COLUMNS = "staff_id AS id, clinic_id, full_name, title, is_active, created_at"
SLOT_COLUMNS = (
    "slot_id AS id, clinic_id, service_id, staff_id, date AS day, start_time, end_time, status, "
    "capacity, remaining, price, version, created_at, updated_at"
)
# Keyset paging of catalogue lists: (created_at, id) of the last row served.
After = tuple[datetime, uuid.UUID] | None


def records(cls: Callable[..., T], **enums: type[Enum]) -> RowFactory[T]:
    """A row factory building `cls` from the row's columns, with the columns named in
    `enums` (VARCHAR in the database) turned into those enums."""

    def factory(cursor):
        as_dict = dict_row(cursor)

        def make(values: Sequence[Any]) -> T:
            row = as_dict(values)
            for name, enum in enums.items():
                row[name] = enum(row[name])
            return cls(**row)

        return make

    return factory


SLOT = records(Slot, status=SlotStatus)


# --- clinics ----------------------------------------------------------------------------


async def insert_clinic(
    conn: AsyncConnection,
    name: str,
    address: str | None,
    time_zone: str,
    active: bool,
    request_id: str | None,
    created_by: str,
) -> Clinic | None:
    """The new clinic; None when `request_id` made one already."""
    cur = conn.cursor(row_factory=class_row(Clinic))
    await cur.execute(
        f"""INSERT INTO clinics (name, address, time_zone, is_active, request_id, created_by)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (request_id) DO NOTHING RETURNING {CLINIC_COLUMNS}""",
        (name, address, time_zone, active, request_id, created_by),
    )
    return await cur.fetchone()


async def update_clinic(
    conn: AsyncConnection, clinic_id: uuid.UUID, fields: dict[str, object]
) -> Clinic | None:
    """Set `fields` (name, address, time_zone, is_active) of a clinic; None when unknown."""
    assert fields and set(fields) <= {"name", "address", "time_zone", "is_active"}, fields
    assignments = ", ".join(f"{name} = %({name})s" for name in fields)
    cur = conn.cursor(row_factory=class_row(Clinic))
    await cur.execute(
        f"UPDATE clinics SET {assignments} WHERE clinic_id = %(id)s RETURNING {CLINIC_COLUMNS}",
        {**fields, "id": clinic_id},
    )
    return await cur.fetchone()


async def has_slots(conn: AsyncConnection, clinic_id: uuid.UUID) -> bool:
    cur = await conn.execute("SELECT EXISTS (SELECT FROM slots WHERE clinic_id = %s)", (clinic_id,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def set_slot_status(
    conn: AsyncConnection, slot_id: uuid.UUID, status: SlotStatus, expected_version: int
) -> Slot | None:
    """Take a slot out of service or back: AVAILABLE comes back as BOOKED when no place is
    free. None when the slot is not at `expected_version` (or unknown)."""
    cur = conn.cursor(row_factory=SLOT)
    await cur.execute(
        f"""UPDATE slots
               SET status = CASE WHEN %(status)s = 'available' AND remaining = 0 THEN 'booked'
                                 ELSE %(status)s END,
                   version = version + 1
             WHERE slot_id = %(id)s AND version = %(version)s
         RETURNING {SLOT_COLUMNS}""",
        {"status": status, "id": slot_id, "version": expected_version},
    )
    return await cur.fetchone()


async def clinic(conn: AsyncConnection, column: str, value: object) -> Clinic | None:
    assert column in {"clinic_id", "request_id"}
    cur = conn.cursor(row_factory=class_row(Clinic))
    await cur.execute(f"SELECT {CLINIC_COLUMNS} FROM clinics WHERE {column} = %s", (value,))
    return await cur.fetchone()


async def list_clinics(
    conn: AsyncConnection, active_only: bool, after: After, limit: int
) -> list[Clinic]:
    cur = conn.cursor(row_factory=class_row(Clinic))
    await cur.execute(
        f"""SELECT {CLINIC_COLUMNS} FROM clinics
            WHERE (NOT %(active)s OR is_active) AND {_after_clause("clinic_id")}
            ORDER BY created_at, clinic_id LIMIT %(limit)s""",
        {"active": active_only, **_after_params(after), "limit": limit},
    )
    return await cur.fetchall()


# --- services and staff -------------------------------------------------------------------


async def insert_service(
    conn: AsyncConnection,
    clinic_id: uuid.UUID,
    name: str,
    duration_minutes: int,
    price: Decimal,
    default_capacity: int,
    request_id: str | None,
) -> ClinicService | None:
    """The new service; None when `request_id` made one already. UniqueViolation
    (unique_service_name_per_clinic) when the clinic has a service of that name."""
    cur = conn.cursor(row_factory=class_row(ClinicService))
    await cur.execute(
        f"""INSERT INTO clinic_services
                (clinic_id, name, duration_minutes, price, default_capacity, request_id)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (request_id) DO NOTHING RETURNING {SERVICE_COLUMNS}""",
        (clinic_id, name, duration_minutes, price, default_capacity, request_id),
    )
    return await cur.fetchone()


async def service(conn: AsyncConnection, column: str, value: object) -> ClinicService | None:
    assert column in {"service_id", "request_id"}
    cur = conn.cursor(row_factory=class_row(ClinicService))
    await cur.execute(
        f"SELECT {SERVICE_COLUMNS} FROM clinic_services WHERE {column} = %s", (value,)
    )
    return await cur.fetchone()


async def list_services(
    conn: AsyncConnection, clinic_id: uuid.UUID, active_only: bool, after: After, limit: int
) -> list[ClinicService]:
    query = (ClinicService, SERVICE_COLUMNS, "clinic_services", "service_id")
    return await _of_clinic(conn, query, clinic_id, active_only, after, limit)


async def insert_staff(
    conn: AsyncConnection,
    clinic_id: uuid.UUID,
    full_name: str,
    title: str | None,
    request_id: str | None,
) -> Staff | None:
    """The new staff member; None when `request_id` made one already."""
    cur = conn.cursor(row_factory=class_row(Staff))
    await cur.execute(
        f"""INSERT INTO staff (clinic_id, full_name, title, request_id) VALUES (%s, %s, %s, %s)
            ON CONFLICT (request_id) DO NOTHING RETURNING {STAFF_COLUMNS}""",
        (clinic_id, full_name, title, request_id),
    )
    return await cur.fetchone()


async def staff(conn: AsyncConnection, column: str, value: object) -> Staff | None:
    assert column in {"staff_id", "request_id"}
    cur = conn.cursor(row_factory=class_row(Staff))
    await cur.execute(f"SELECT {STAFF_COLUMNS} FROM staff WHERE {column} = %s", (value,))
    return await cur.fetchone()


async def list_staff(
    conn: AsyncConnection, clinic_id: uuid.UUID, active_only: bool, after: After, limit: int
) -> list[Staff]:
    return await _of_clinic(
        conn, (Staff, STAFF_COLUMNS, "staff", "staff_id"), clinic_id, active_only, after, limit
    )


async def _of_clinic(
    conn: AsyncConnection,
    query: tuple[Callable[..., T], str, str, str],
    clinic_id: uuid.UUID,
    active_only: bool,
    after: After,
    limit: int,
) -> list[T]:
    """A page of a clinic's services or staff (`query`: record, columns, table, id column),
    in creation order."""
    record, columns, table, id_column = query
    cur = conn.cursor(row_factory=class_row(record))
    await cur.execute(
        f"""SELECT {columns} FROM {table}
            WHERE clinic_id = %(clinic)s AND (NOT %(active)s OR is_active)
              AND {_after_clause(id_column)}
            ORDER BY created_at, {id_column} LIMIT %(limit)s""",
        {"clinic": clinic_id, "active": active_only, **_after_params(after), "limit": limit},
    )
    return await cur.fetchall()


# --- slots ------------------------------------------------------------------------------


async def insert_slots(
    conn: AsyncConnection,
    service: ClinicService,
    staff_id: uuid.UUID | None,
    planned: Sequence[PlannedSlot],
    capacity: int,
    price: Decimal,
    *,
    request_id: str | None,
    batch_id: uuid.UUID | None,
    created_by: str,
) -> list[Slot]:
    """The new slots, in start order; [] when `request_id` made its slot already.
    ExclusionViolation (no_staff_overlap) when one overlaps a slot of the staff member."""
    cur = conn.cursor(row_factory=SLOT)
    await cur.execute(
        f"""INSERT INTO slots (clinic_id, service_id, staff_id, date, start_time, end_time,
                               capacity, remaining, price, request_id, batch_id, created_by)
            SELECT %(clinic)s, %(service)s, %(staff)s, p.day, p.start_time, p.end_time,
                   %(capacity)s, %(capacity)s, %(price)s, %(request)s, %(batch)s, %(by)s
              FROM unnest(%(days)s::date[], %(starts)s::timestamptz[], %(ends)s::timestamptz[])
                   AS p (day, start_time, end_time)
            ON CONFLICT (request_id) DO NOTHING
            RETURNING {SLOT_COLUMNS}""",
        {
            "clinic": service.clinic_id,
            "service": service.id,
            "staff": staff_id,
            "capacity": capacity,
            "price": price,
            "request": request_id,
            "batch": batch_id,
            "by": created_by,
            "days": [p.day for p in planned],
            "starts": [p.start for p in planned],
            "ends": [p.end for p in planned],
        },
    )
    return sorted(await cur.fetchall(), key=lambda s: s.start_time)


async def overlapping_slot(
    conn: AsyncConnection, staff_id: uuid.UUID, planned: Sequence[PlannedSlot]
) -> Slot | None:
    """The earliest slot of the staff member overlapping any of `planned`."""
    cur = conn.cursor(row_factory=SLOT)
    await cur.execute(
        f"""SELECT {SLOT_COLUMNS} FROM slots s
            WHERE s.staff_id = %(staff)s AND EXISTS (
                SELECT FROM unnest(%(starts)s::timestamptz[], %(ends)s::timestamptz[]) AS p (a, b)
                 WHERE tstzrange(s.start_time, s.end_time) && tstzrange(p.a, p.b))
            ORDER BY s.start_time LIMIT 1""",
        {
            "staff": staff_id,
            "starts": [p.start for p in planned],
            "ends": [p.end for p in planned],
        },
    )
    return await cur.fetchone()


async def slot(conn: AsyncConnection, column: str, value: object) -> Slot | None:
    assert column in {"slot_id", "request_id"}
    cur = conn.cursor(row_factory=SLOT)
    await cur.execute(f"SELECT {SLOT_COLUMNS} FROM slots WHERE {column} = %s", (value,))
    return await cur.fetchone()


async def insert_batch(
    conn: AsyncConnection,
    clinic_id: uuid.UUID,
    request_id: str,
    fingerprint: str,
    skipped: int,
    created_by: str,
) -> uuid.UUID | None:
    """The new batch's id; None when `request_id` has one (made by a concurrent first
    attempt that committed meanwhile)."""
    cur = await conn.execute(
        """INSERT INTO slot_batches (clinic_id, request_id, fingerprint, skipped, created_by)
           VALUES (%s, %s, %s, %s, %s) ON CONFLICT (request_id) DO NOTHING RETURNING batch_id""",
        (clinic_id, request_id, fingerprint, skipped, created_by),
    )
    row = await cur.fetchone()
    return None if row is None else row[0]


async def batch(conn: AsyncConnection, request_id: str) -> tuple[str, int, list[Slot]] | None:
    """(fingerprint, skipped, slots in start order) of the batch made under `request_id`."""
    cur = await conn.execute(
        "SELECT batch_id, fingerprint, skipped FROM slot_batches WHERE request_id = %s",
        (request_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    batch_id, fingerprint, skipped = row
    slots = conn.cursor(row_factory=SLOT)
    await slots.execute(
        f"SELECT {SLOT_COLUMNS} FROM slots WHERE batch_id = %s ORDER BY start_time", (batch_id,)
    )
    return fingerprint, skipped, await slots.fetchall()


async def available_slots(conn: AsyncConnection, clinic_id: uuid.UUID, day: date) -> list[Slot]:
    """The clinic's slots of a local day with a place free (seed 3.3.1), in start order;
    none while the clinic is inactive."""
    cur = conn.cursor(row_factory=SLOT)
    await cur.execute(
        f"""SELECT {SLOT_COLUMNS} FROM slots
            WHERE clinic_id = %(clinic)s AND date = %(day)s AND status = 'available'
              AND remaining > 0
              AND EXISTS (SELECT FROM clinics WHERE clinic_id = %(clinic)s AND is_active)
            ORDER BY start_time, slot_id""",
        {"clinic": clinic_id, "day": day},
    )
    return await cur.fetchall()


async def coming_slot_days(conn: AsyncConnection, clinic_id: uuid.UUID) -> list[date]:
    """The local days on which the clinic has slots that have not ended."""
    cur = await conn.execute(
        "SELECT DISTINCT date FROM slots WHERE clinic_id = %s AND end_time > now()", (clinic_id,)
    )
    return [row[0] for row in await cur.fetchall()]


def _after_clause(id_column: str) -> str:
    return (
        f"(%(after_at)s::timestamptz IS NULL OR (created_at, {id_column}) > "
        "(%(after_at)s, %(after_id)s::uuid))"
    )


def _after_params(after: After) -> dict[str, object]:
    return {"after_at": after[0] if after else None, "after_id": after[1] if after else None}
