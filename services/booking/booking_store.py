"""SQL of bookings, their payments and refunds, their history and their events (psycopg 3,
parameters only). Every function runs on the caller's connection and transaction; a booking
is changed only under its row lock (locked()), so its status, payment status and money
records move together."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from services.booking.domain import (
    Booking,
    BookingStatus,
    Payment,
    PaymentMethod,
    PaymentRecordStatus,
    PaymentStatus,
    Provider,
    Reservation,
    Slot,
)
from services.booking.store import records

BOOKING_COLUMNS = (
    "b.booking_id AS id, b.reservation_id, b.user_id, b.pet_id, b.clinic_id, b.service_id, "
    "b.slot_id, b.staff_id, b.status, b.payment_status, b.total_amount, b.discount_amount, "
    "b.final_amount, b.notes, s.start_time AS slot_start, s.end_time AS slot_end, "
    "b.created_at, b.updated_at, b.version, b.cancelled_at, b.completed_at, "
    "b.cancellation_reason, b.cancellation_notes, b.payment_id, b.qr_code_url AS qr_payload"
)
BOOKING_SELECT = f"SELECT {BOOKING_COLUMNS} FROM bookings b JOIN slots s ON s.slot_id = b.slot_id"
PAYMENT_COLUMNS = (
    "payment_id AS id, booking_id, user_id, amount, payment_method AS method, "
    "payment_provider AS provider, status, idempotency_key, created_at, updated_at, "
    "provider_payment_id, payment_url, expiry_time, paid_at, refunded_at, refund_amount, "
    "transaction_fee AS fee, refund_of"
)
BOOKING = records(Booking, status=BookingStatus, payment_status=PaymentStatus)
PAYMENT = records(Payment, method=PaymentMethod, provider=Provider, status=PaymentRecordStatus)
# What update_booking may set.
BOOKING_FIELDS = frozenset(
    {
        "status",
        "payment_status",
        "payment_id",
        "qr_code_url",
        "cancelled_at",
        "completed_at",
        "cancellation_reason",
        "cancellation_notes",
        "slot_id",
        "staff_id",
        "total_amount",
        "discount_amount",
        "final_amount",
        "notes",
        "reminded_at",
    }
)
PAYMENT_FIELDS = frozenset(
    {
        "status",
        "paid_at",
        "refunded_at",
        "refund_amount",
        "metadata",
        "payment_url",
        "expiry_time",
        "provider_payment_id",
    }
)


async def set_actor(conn: AsyncConnection, who: str, reason: str | None = None) -> None:
    """Who makes this transaction's changes, and why: the booking history trigger reads
    them (app.user_id, app.change_reason; local to the transaction)."""
    await conn.execute(
        "SELECT set_config('app.user_id', %s, true), set_config('app.change_reason', %s, true)",
        (who, reason or ""),
    )


async def insert_booking(
    conn: AsyncConnection,
    reservation: Reservation,
    slot: Slot,
    amounts: tuple[Decimal, Decimal, Decimal],
    notes: str | None,
) -> Booking:
    total, discount, final = amounts
    cur = await conn.execute(
        """INSERT INTO bookings (reservation_id, user_id, pet_id, clinic_id, service_id, slot_id,
                                 staff_id, total_amount, discount_amount, final_amount, notes)
           VALUES (%(reservation)s, %(user)s, %(pet)s, %(clinic)s, %(service)s, %(slot)s,
                   %(staff)s, %(total)s, %(discount)s, %(final)s, %(notes)s)
           RETURNING booking_id""",
        {
            "reservation": reservation.id,
            "user": reservation.user_id,
            "pet": reservation.pet_id,
            "clinic": slot.clinic_id,
            "service": slot.service_id,
            "slot": slot.id,
            "staff": slot.staff_id,
            "total": total,
            "discount": discount,
            "final": final,
            "notes": notes,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    made = await booking(conn, "booking_id", row[0])
    assert made is not None
    return made


async def booking(conn: AsyncConnection, column: str, value: object) -> Booking | None:
    assert column in {"booking_id", "reservation_id"}
    cur = conn.cursor(row_factory=BOOKING)
    await cur.execute(f"{BOOKING_SELECT} WHERE b.{column} = %s", (value,))
    return await cur.fetchone()


async def locked(conn: AsyncConnection, booking_id: uuid.UUID) -> Booking | None:
    """The booking, its row locked until the transaction ends."""
    cur = conn.cursor(row_factory=BOOKING)
    await cur.execute(f"{BOOKING_SELECT} WHERE b.booking_id = %s FOR UPDATE OF b", (booking_id,))
    return await cur.fetchone()


async def update_booking(conn: AsyncConnection, booking_id: uuid.UUID, **fields: Any) -> Booking:
    """Set `fields` (BOOKING_FIELDS) of a booking the transaction has locked; its version is
    bumped."""
    assert fields and set(fields) <= BOOKING_FIELDS, fields
    assignments = ", ".join(f"{name} = %({name})s" for name in fields)
    await conn.execute(
        f"UPDATE bookings SET {assignments}, version = version + 1 WHERE booking_id = %(id)s",
        {**fields, "id": booking_id},
    )
    changed = await booking(conn, "booking_id", booking_id)
    assert changed is not None
    return changed


async def insert_history(
    conn: AsyncConnection,
    booking: Booking,
    who: str,
    reason: str,
    metadata: dict[str, Any],
) -> None:
    """A history row for a change that keeps the status (a reschedule): the trigger writes
    one only when the status changes."""
    await conn.execute(
        """INSERT INTO booking_history (booking_id, previous_status, new_status, changed_by,
                                        change_reason, metadata)
           VALUES (%s, %s, %s, %s, %s, %s)""",
        (booking.id, booking.status, booking.status, who, reason, Jsonb(metadata)),
    )


# --- payments and refunds -----------------------------------------------------------------


async def insert_payment(
    conn: AsyncConnection,
    booking: Booking,
    amount: Decimal,
    method: PaymentMethod,
    provider: Provider,
    key: str,
    refund_of: uuid.UUID | None = None,
) -> Payment | None:
    """A pending payment (or refund) of `booking`; None when `key` was used already. The
    one-live-payment index raises UniqueViolation when the booking has one."""
    cur = conn.cursor(row_factory=PAYMENT)
    await cur.execute(
        f"""INSERT INTO payment_records (booking_id, user_id, amount, payment_method,
                                         payment_provider, idempotency_key, refund_of)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (idempotency_key) DO NOTHING
            RETURNING {PAYMENT_COLUMNS}""",
        (booking.id, booking.user_id, amount, method, provider, key, refund_of),
    )
    return await cur.fetchone()


async def payment(conn: AsyncConnection, column: str, value: object) -> Payment | None:
    assert column in {"payment_id", "idempotency_key"}
    cur = conn.cursor(row_factory=PAYMENT)
    await cur.execute(
        f"SELECT {PAYMENT_COLUMNS} FROM payment_records WHERE {column} = %s", (value,)
    )
    return await cur.fetchone()


async def set_payment(conn: AsyncConnection, payment_id: uuid.UUID, **fields: Any) -> Payment:
    """Set `fields` (PAYMENT_FIELDS) of a payment record; one more attempt counted."""
    assert fields and set(fields) <= PAYMENT_FIELDS, fields
    if "metadata" in fields:
        fields["metadata"] = Jsonb(fields["metadata"])
    assignments = ", ".join(f"{name} = %({name})s" for name in fields)
    cur = conn.cursor(row_factory=PAYMENT)
    await cur.execute(
        f"""UPDATE payment_records SET {assignments}, attempts = attempts + 1
             WHERE payment_id = %(id)s RETURNING {PAYMENT_COLUMNS}""",
        {**fields, "id": payment_id},
    )
    changed = await cur.fetchone()
    assert changed is not None
    return changed


async def touch_payment(conn: AsyncConnection, payment_id: uuid.UUID) -> None:
    """Mark a pending move as looked at now (the sweeper asks again after settle_after)."""
    await conn.execute(
        "UPDATE payment_records SET attempts = attempts + 1 WHERE payment_id = %s", (payment_id,)
    )


async def live_payment(conn: AsyncConnection, booking_id: uuid.UUID) -> Payment | None:
    """The booking's payment that is pending or went through (refunded or not)."""
    cur = conn.cursor(row_factory=PAYMENT)
    await cur.execute(
        f"""SELECT {PAYMENT_COLUMNS} FROM payment_records
             WHERE booking_id = %s AND payment_method <> 'refund'
               AND status NOT IN ('failed', 'expired')""",
        (booking_id,),
    )
    return await cur.fetchone()


async def unsettled(conn: AsyncConnection, older_than: timedelta, limit: int) -> list[Payment]:
    """Money moves begun (or last looked at) more than `older_than` ago and not ended: a
    crash or an outage came between the record and the wallet's or gateway's answer, or
    the rider has not paid at the gateway yet."""
    cur = conn.cursor(row_factory=PAYMENT)
    await cur.execute(
        f"""SELECT {PAYMENT_COLUMNS} FROM payment_records
             WHERE status = 'pending' AND updated_at < now() - %s
             ORDER BY updated_at LIMIT %s""",
        (older_than, limit),
    )
    return await cur.fetchall()


async def unpaid_overdue(conn: AsyncConnection, window: timedelta, limit: int) -> list[uuid.UUID]:
    """Bookings still unpaid `window` after they were made, with no payment under way."""
    cur = await conn.execute(
        """SELECT b.booking_id FROM bookings b
            WHERE b.status = 'pending_payment' AND b.created_at < now() - %s
              AND NOT EXISTS (SELECT FROM payment_records p WHERE p.booking_id = b.booking_id
                                 AND p.status = 'pending')
            ORDER BY b.created_at LIMIT %s""",
        (window, limit),
    )
    return [row[0] for row in await cur.fetchall()]


async def claim_reminders(conn: AsyncConnection, ahead: timedelta, limit: int) -> list[uuid.UUID]:
    """Confirmed bookings whose visit starts within `ahead` and that were not reminded yet,
    marked reminded; those another transaction holds are left for the next round."""
    cur = await conn.execute(
        """WITH due AS (
               SELECT b.booking_id FROM bookings b JOIN slots s ON s.slot_id = b.slot_id
                WHERE b.status = 'confirmed' AND b.reminded_at IS NULL
                  AND s.start_time > now() AND s.start_time <= now() + %s
                ORDER BY s.start_time LIMIT %s
                  FOR UPDATE OF b SKIP LOCKED)
           UPDATE bookings b SET reminded_at = now() FROM due
            WHERE b.booking_id = due.booking_id RETURNING b.booking_id""",
        (ahead, limit),
    )
    return [row[0] for row in await cur.fetchall()]


# --- reading a booking's past --------------------------------------------------------------


async def history(conn: AsyncConnection, booking_id: uuid.UUID) -> list[dict[str, Any]]:
    cur = await conn.execute(
        """SELECT previous_status, new_status, changed_at, changed_by, change_reason
             FROM booking_history WHERE booking_id = %s ORDER BY changed_at, history_id""",
        (booking_id,),
    )
    names = ("previous_status", "new_status", "changed_at", "changed_by", "change_reason")
    return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]


async def events_of(conn: AsyncConnection, aggregate_ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    cur = await conn.execute(
        """SELECT event_id, aggregate_id, event_type, payload, metadata, created_at
             FROM event_store WHERE aggregate_id = ANY(%s) ORDER BY seq""",
        (aggregate_ids,),
    )
    names = ("event_id", "aggregate_id", "event_type", "payload", "metadata", "created_at")
    return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]


async def last_event(
    conn: AsyncConnection, aggregate_id: uuid.UUID, event_type: str
) -> dict[str, Any] | None:
    """The payload of the aggregate's latest event of `event_type`."""
    cur = await conn.execute(
        """SELECT payload FROM event_store WHERE aggregate_id = %s AND event_type = %s
            ORDER BY seq DESC LIMIT 1""",
        (aggregate_id, event_type),
    )
    row = await cur.fetchone()
    return row[0] if row else None


@dataclass(frozen=True)
class BookingFilter:
    """Which bookings ListBookings asks for: a rider's or a clinic's, by the slots' local
    dates and status, after the page's last (created_at, booking_id)."""

    user_id: uuid.UUID | None = None
    clinic_id: uuid.UUID | None = None
    days: tuple[date, date] | None = None
    status: BookingStatus | None = None
    after: tuple[datetime, uuid.UUID] | None = None


async def list_bookings(conn: AsyncConnection, where: BookingFilter, limit: int) -> list[Booking]:
    """Bookings matching `where`, newest first."""
    cur = conn.cursor(row_factory=BOOKING)
    await cur.execute(
        f"""{BOOKING_SELECT}
             WHERE (%(user)s::uuid IS NULL OR b.user_id = %(user)s)
               AND (%(clinic)s::uuid IS NULL OR b.clinic_id = %(clinic)s)
               AND (%(first)s::date IS NULL OR s.date BETWEEN %(first)s AND %(last)s)
               AND (%(status)s::text IS NULL OR b.status = %(status)s)
               AND (%(at)s::timestamptz IS NULL OR (b.created_at, b.booking_id) < (%(at)s, %(id)s))
             ORDER BY b.created_at DESC, b.booking_id DESC LIMIT %(limit)s""",
        {
            "user": where.user_id,
            "clinic": where.clinic_id,
            "first": where.days[0] if where.days else None,
            "last": where.days[1] if where.days else None,
            "status": where.status,
            "at": where.after[0] if where.after else None,
            "id": where.after[1] if where.after else None,
            "limit": limit,
        },
    )
    return await cur.fetchall()
