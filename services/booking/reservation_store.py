"""SQL of reservations and bookings (psycopg 3, parameters only): the place of a slot is
taken and given back only here, always by a conditional UPDATE of the slot's `remaining`
in the same transaction as the reservation or booking that holds it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from libs.errors import FailedPrecondition, found
from services.booking import store
from services.booking.domain import Reservation, ReservationStatus, Slot, reservation_refusal
from services.booking.events import STORE_COLUMNS
from services.booking.store import SLOT, SLOT_COLUMNS, records

RESERVATION_COLUMNS = (
    "reservation_id AS id, user_id, pet_id, slot_id, clinic_id, service_id, status, request_id, "
    "lock_token, expires_at, created_at, updated_at"
)
RESERVATION_SELECT = """
    SELECT r.reservation_id AS id, r.user_id, r.pet_id, r.slot_id, r.clinic_id, r.service_id,
           r.status, r.request_id, r.lock_token, r.expires_at, r.created_at, r.updated_at,
           b.booking_id
      FROM reservations r LEFT JOIN bookings b ON b.reservation_id = r.reservation_id"""
RESERVATION = records(Reservation, status=ReservationStatus)
# Where a place is taken: an open slot that has not started, of a clinic that is active
# (seed 3.3.2, without the seed's `version = 1`: the conditional `remaining > 0` already
# makes concurrent takes safe).
TAKE_PLACE = """
    UPDATE slots
       SET remaining = remaining - 1,
           status = CASE WHEN remaining = 1 THEN 'booked' ELSE status END,
           version = version + 1
     WHERE slot_id = %(slot_id)s AND status = 'available' AND remaining > 0
       AND start_time > now()
       AND EXISTS (SELECT FROM clinics c WHERE c.clinic_id = slots.clinic_id AND c.is_active)"""
# One statement: the place, the reservation holding it and its event in the event store
# (ReservationCreated stays in the store: no other service acts on it), or nothing at all.
RESERVE = f"""
WITH taken AS (
    {TAKE_PLACE}
    RETURNING slot_id, clinic_id, service_id, remaining
), reserved AS (
    INSERT INTO reservations (reservation_id, user_id, pet_id, slot_id, service_id, clinic_id,
                              request_id, expires_at, lock_token)
    SELECT %(id)s, %(user_id)s, %(pet_id)s, slot_id, service_id, clinic_id, %(request_id)s,
           %(expires_at)s, %(lock_token)s
      FROM taken
    RETURNING {RESERVATION_COLUMNS}
), stored AS (
    INSERT INTO event_store ({STORE_COLUMNS})
    SELECT %(es_event_id)s, %(es_aggregate_id)s, %(es_aggregate_type)s, %(es_event_type)s,
           jsonb_set(%(es_payload)s, '{{slotRemaining}}', to_jsonb(t.remaining)),
           %(es_metadata)s
      FROM taken t, reserved
)
SELECT r.*, NULL::uuid AS booking_id FROM reserved r"""
# Constraints whose violation by RESERVE means "a reservation is there already".
SAME_REQUEST = "unique_reservation_request"
SAME_SLOT = "reservations_one_pending_per_user_slot"


async def reserve(conn: AsyncConnection, reservation: Reservation, event: dict[str, Any]):
    """RESERVE: the new reservation, or None when no place was taken (full, closed,
    started, clinic inactive, unknown). UniqueViolation naming SAME_REQUEST or SAME_SLOT
    when the rider already has a reservation of this request or a pending one on this
    slot."""
    cur = conn.cursor(row_factory=RESERVATION)
    await cur.execute(
        RESERVE,
        {
            "id": reservation.id,
            "user_id": reservation.user_id,
            "pet_id": reservation.pet_id,
            "slot_id": reservation.slot_id,
            "request_id": reservation.request_id,
            "expires_at": reservation.expires_at,
            "lock_token": reservation.lock_token,
            **event,
        },
    )
    return await cur.fetchone()


async def reservation(
    conn: AsyncConnection, reservation_id: uuid.UUID, *, lock: bool = False
) -> Reservation | None:
    cur = conn.cursor(row_factory=RESERVATION)
    suffix = " FOR UPDATE OF r" if lock else ""
    await cur.execute(
        f"{RESERVATION_SELECT} WHERE r.reservation_id = %s{suffix}", (reservation_id,)
    )
    return await cur.fetchone()


async def reservation_of_request(
    conn: AsyncConnection, user_id: uuid.UUID, request_id: str
) -> Reservation | None:
    cur = conn.cursor(row_factory=RESERVATION)
    await cur.execute(
        f"{RESERVATION_SELECT} WHERE r.user_id = %s AND r.request_id = %s", (user_id, request_id)
    )
    return await cur.fetchone()


async def set_reservation_status(
    conn: AsyncConnection, reservation_id: uuid.UUID, status: ReservationStatus
) -> Reservation:
    cur = conn.cursor(row_factory=RESERVATION)
    await cur.execute(
        f"""UPDATE reservations SET status = %s WHERE reservation_id = %s
            RETURNING {RESERVATION_COLUMNS}, NULL::uuid AS booking_id""",
        (status, reservation_id),
    )
    found = await cur.fetchone()
    assert found is not None
    return found


async def take_place(conn: AsyncConnection, slot_id: uuid.UUID) -> Slot | None:
    """The slot after one of its places was taken; None when none could be."""
    cur = conn.cursor(row_factory=SLOT)
    await cur.execute(f"{TAKE_PLACE} RETURNING {SLOT_COLUMNS}", {"slot_id": slot_id})
    return await cur.fetchone()


async def take_refusal(
    conn: AsyncConnection, slot_id: uuid.UUID, now: datetime
) -> FailedPrecondition | None:
    """Why TAKE_PLACE took no place of `slot_id` (its slot and clinic read again); None when
    one is free now (the take lost a race with a release)."""
    slot = found(await store.slot(conn, "slot_id", slot_id), "slot", slot_id)
    clinic = await store.clinic(conn, "clinic_id", slot.clinic_id)
    return reservation_refusal(slot, found(clinic, "clinic", slot.clinic_id), now)


async def give_back(conn: AsyncConnection, slot_ids: Sequence[uuid.UUID]) -> list[Slot]:
    """One place back to the slot for each time it appears in `slot_ids`; the slots after.
    The slots are locked in id order first, so concurrent give-backs cannot deadlock."""
    await conn.execute(
        "SELECT FROM slots WHERE slot_id = ANY(%s) ORDER BY slot_id FOR UPDATE", (list(slot_ids),)
    )
    cur = conn.cursor(row_factory=SLOT)
    await cur.execute(
        f"""UPDATE slots s
               SET remaining = s.remaining + n.freed,
                   status = CASE WHEN s.status = 'booked' THEN 'available' ELSE s.status END,
                   version = s.version + 1
              FROM (SELECT slot_id, count(*)::int AS freed FROM unnest(%s::uuid[]) AS slot_id
                     GROUP BY slot_id) n
             WHERE s.slot_id = n.slot_id
         RETURNING {", ".join("s." + c for c in SLOT_COLUMNS.split(", "))}""",
        (list(slot_ids),),
    )
    return await cur.fetchall()


async def expire_due(conn: AsyncConnection, limit: int) -> list[Reservation]:
    """Up to `limit` pending reservations past their expiry, marked expired; reservations
    another transaction holds are left for the next batch (SKIP LOCKED)."""
    cur = conn.cursor(row_factory=RESERVATION)
    await cur.execute(
        f"""WITH due AS (
                SELECT reservation_id FROM reservations
                 WHERE status = 'pending' AND expires_at <= now()
                 ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED)
            UPDATE reservations r SET status = 'expired' FROM due
             WHERE r.reservation_id = due.reservation_id
         RETURNING {", ".join("r." + c for c in RESERVATION_COLUMNS.split(", "))},
                   NULL::uuid AS booking_id""",
        (limit,),
    )
    return await cur.fetchall()
