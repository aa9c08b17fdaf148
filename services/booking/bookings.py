"""Use cases of a booking after it is made: pay, cancel with refund, reschedule, the visit,
and what it was. Every change is one transaction under the booking's row lock, with its
history (trigger), events and money records; money moves of the wallet happen between
transactions, each recorded as pending first and idempotent by key, so a crash or an outage
at any point leaves a record the sweeper drives to its end (settle()). Places of slots are
given back and taken in the same transaction as the booking change."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from libs.auth.service_identity import ServiceIdentity
from libs.db.transaction import in_transaction, read
from libs.errors import FailedPrecondition, found
from services.booking import booking_store as bs
from services.booking import events, lifecycle, qr, store
from services.booking import reservation_store as rs
from services.booking.availability import Availability
from services.booking.config import BookingConfig
from services.booking.domain import (
    Actor,
    Booking,
    BookingStatus,
    Payment,
    PaymentRecordStatus,
)
from services.booking.payments import Payments
from services.booking.refunds import FULL, refund_amount

log = logging.getLogger(__name__)
BATCH = 100
# Payments whose money was taken (and not all of it given back yet).
TAKEN = frozenset({PaymentRecordStatus.COMPLETED, PaymentRecordStatus.PARTIALLY_REFUNDED})
PAYMENT_TIMEOUT = "payment_timeout"


class BookingApp:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        availability: Availability,
        payments: Payments,
        config: BookingConfig,
        identity: ServiceIdentity,
    ) -> None:
        self.pool = pool
        self.availability = availability
        self.payments = payments
        self.config = config
        self.identity = identity

    # --- cancel -------------------------------------------------------------------------

    async def cancel(
        self,
        actor: Actor,
        booking_id: uuid.UUID,
        user_id: uuid.UUID | None,
        reason: str,
        notes: str | None,
    ) -> tuple[Booking, Payment | None, int]:
        """Cancel by the rider (the refund policy applies) or the clinic (100 % back); the
        place is given back. A retry of a cancellation answers it again."""
        now = datetime.now(UTC)

        async def work(conn: AsyncConnection):
            await bs.set_actor(conn, actor.label, reason)
            booking = self._party(actor, await bs.locked(conn, booking_id), booking_id, user_id)
            if booking.status is BookingStatus.CANCELLED:
                return (booking, *await _refund_of(conn, booking)), None
            lifecycle.require_cancellable(booking)
            percent = self.config.refund_policy.percent(booking.slot_start, now, actor.is_staff)
            return await self._cancel(conn, booking, reason, notes, percent, actor, now)

        (booking, refund, percent), slot = await in_transaction(self.pool, work, pipeline=False)
        if slot is not None:
            await self.availability.changed([slot])
        if refund is not None and refund.status is PaymentRecordStatus.PENDING:
            refund = await self.payments.drive_refund(refund)
        return booking, refund, percent

    async def _cancel(
        self,
        conn: AsyncConnection,
        booking: Booking,
        reason: str,
        notes: str | None,
        percent: int,
        actor: Actor,
        now: datetime,
    ):
        live = await bs.live_payment(conn, booking.id)
        paid = live if live and live.status in TAKEN else None
        # What is still paid: a cheaper reschedule may have given part of it back.
        net = paid.amount - (paid.refund_amount or 0) if paid else None
        back = refund_amount(net, percent) if net else Decimal("0.00")
        cancelled = await bs.update_booking(
            conn,
            booking.id,
            status=BookingStatus.CANCELLED,
            payment_status=lifecycle.cancelled_payment_status(net, back),
            cancelled_at=now,
            cancellation_reason=reason,
            cancellation_notes=notes,
        )
        [slot] = await rs.give_back(conn, [booking.slot_id])
        refund = None
        if paid is not None and back > 0:
            total_back = (paid.refund_amount or 0) + back
            status = "refunded" if total_back == paid.amount else "partially_refunded"
            await bs.set_payment(
                conn, paid.id, status=status, refund_amount=total_back, refunded_at=now
            )
            refund = await self.payments.begin_refund(conn, cancelled, paid, back, "cancel")
        await events.announce(
            conn, cancelled, [events.BOOKING_CANCELLED], actor,
            refund_amount=back, refund_percent=percent if paid else 0, reason=reason,
        )  # fmt: skip
        return (cancelled, refund, percent if paid else 0), slot

    # --- reschedule ---------------------------------------------------------------------

    async def reschedule(
        self,
        actor: Actor,
        booking_id: uuid.UUID,
        user_id: uuid.UUID | None,
        new_slot_id: uuid.UUID,
    ) -> Booking:
        """Move the booking to another slot of its clinic and service in one transaction:
        the new place taken (or nothing happens), the old one given back (lifecycle.
        moved_amounts states the price rule). A retry finds it moved and answers it."""
        now = datetime.now(UTC)

        async def work(conn: AsyncConnection):
            await bs.set_actor(conn, actor.label, "rescheduled")
            booking = self._party(actor, await bs.locked(conn, booking_id), booking_id, user_id)
            if booking.slot_id == new_slot_id:
                return booking, None, []
            lifecycle.require_movable(booking, now)
            live = await bs.live_payment(conn, booking.id)
            if live is not None and live.status is PaymentRecordStatus.PENDING:
                # Its amount is the booking's price now: a move would change what it owes.
                raise FailedPrecondition(
                    "PAYMENT_IN_PROGRESS",
                    f"booking {booking_id} has a payment of {live.amount} under way: it can "
                    "move once that payment is made (or has failed or expired)",
                )
            target = found(await store.slot(conn, "slot_id", new_slot_id), "slot", new_slot_id)
            if (target.clinic_id, target.service_id) != (booking.clinic_id, booking.service_id):
                raise FailedPrecondition(
                    "OTHER_SERVICE",
                    f"slot {new_slot_id} is not a slot of this booking's clinic and service",
                )
            amounts, back = lifecycle.moved_amounts(booking, target.price)
            taken = await rs.take_place(conn, new_slot_id)
            if taken is None:
                refusal = await rs.take_refusal(conn, new_slot_id, now)
                raise refusal or FailedPrecondition(
                    "SLOT_FULL", f"slot {new_slot_id} is full: no place is left"
                )
            [freed] = await rs.give_back(conn, [booking.slot_id])
            total, discount, final = amounts
            moved = await bs.update_booking(
                conn, booking.id, slot_id=taken.id, staff_id=taken.staff_id,
                total_amount=total, discount_amount=discount, final_amount=final,
                reminded_at=None,  # the reminder is of the visit's new time
            )  # fmt: skip
            if moved.payment_id is not None:  # the QR names the slot
                signed = qr.payload(moved, self.identity.signer())
                moved = await bs.update_booking(conn, booking.id, qr_code_url=signed)
            refund = None
            if back > 0:
                paid = found(live, "payment")
                already = paid.refund_amount or Decimal("0.00")
                await bs.set_payment(
                    conn, paid.id, status="partially_refunded",
                    refund_amount=already + back, refunded_at=now,
                )  # fmt: skip
                refund = await self.payments.begin_refund(
                    conn, moved, paid, back, f"move-{moved.version}"
                )
            await bs.insert_history(
                conn, moved, actor.label, "rescheduled",
                {"fromSlot": str(booking.slot_id), "toSlot": str(taken.id), "refund": str(back)},
            )  # fmt: skip
            await events.announce(
                conn, moved, [events.BOOKING_RESCHEDULED], actor,
                previous_slot_id=str(booking.slot_id), previous_slot_start=booking.slot_start,
                refund_amount=back,
            )  # fmt: skip
            return moved, refund, [taken, freed]

        moved, refund, slots = await in_transaction(self.pool, work, pipeline=False)
        if slots:
            await self.availability.changed(slots)
        if refund is not None:
            await self.payments.drive_refund(refund)
        return moved

    # --- the visit ----------------------------------------------------------------------

    async def visit(
        self, actor: Actor, booking_id: uuid.UUID, to: BookingStatus, notes: str | None
    ) -> Booking:
        """Staff of the booking's clinic: start, complete, or mark a no-show."""
        now = datetime.now(UTC)
        kind = {
            BookingStatus.IN_PROGRESS: events.BOOKING_STARTED,
            BookingStatus.COMPLETED: events.BOOKING_COMPLETED,
            BookingStatus.NO_SHOW: events.BOOKING_NO_SHOW,
        }[to]

        async def work(conn: AsyncConnection) -> Booking:
            await bs.set_actor(conn, actor.label, kind.name)
            booking = found(await bs.locked(conn, booking_id), "booking", booking_id)
            actor.require_clinic(booking.clinic_id)
            if booking.status is to:
                return booking  # a retry
            lifecycle.visit_step(booking, to, now)
            fields: dict[str, Any] = {"status": to}
            if to is BookingStatus.COMPLETED:
                fields["completed_at"] = now
            if notes:
                fields["notes"] = f"{booking.notes}\n{notes}" if booking.notes else notes
            changed = await bs.update_booking(conn, booking.id, **fields)
            await events.announce(conn, changed, [kind], actor)
            return changed

        return await in_transaction(self.pool, work, pipeline=False)

    # --- what it was ----------------------------------------------------------------------

    async def history(
        self, actor: Actor, booking_id: uuid.UUID, user_id: uuid.UUID | None
    ) -> list[dict[str, Any]]:
        async def query(conn: AsyncConnection) -> list[dict[str, Any]]:
            self._party(actor, await bs.booking(conn, "booking_id", booking_id), booking_id,
                        user_id)  # fmt: skip
            return await bs.history(conn, booking_id)

        return await read(self.pool, query)

    async def events(
        self, actor: Actor, booking_id: uuid.UUID, user_id: uuid.UUID | None
    ) -> list[dict[str, Any]]:
        """The events of the booking and of the reservation it came from, oldest first."""

        async def query(conn: AsyncConnection) -> list[dict[str, Any]]:
            booking = self._party(
                actor, await bs.booking(conn, "booking_id", booking_id), booking_id, user_id
            )
            ids = [booking.id] + ([booking.reservation_id] if booking.reservation_id else [])
            return await bs.events_of(conn, ids)

        return await read(self.pool, query)

    async def list_bookings(
        self, actor: Actor, where: bs.BookingFilter, limit: int
    ) -> list[Booking]:
        if where.clinic_id is not None:
            actor.require_clinic(where.clinic_id)
        return await read(self.pool, bs.list_bookings, where, limit)

    # --- the sweeper's part ---------------------------------------------------------------

    async def expire_unpaid(self) -> int:
        """Cancel bookings left unpaid past the payment window (no payment under way):
        their places go back. How many."""
        overdue = await read(self.pool, bs.unpaid_overdue, self.config.payment_window, BATCH)
        done = 0
        for booking_id in overdue:
            done += await self._expire_unpaid(booking_id)
        return done

    async def remind_due(self) -> int:
        """Tell riders of confirmed visits starting within the reminder window (seed 001:
        24 h), each once: the booking is marked and its booking.reminder event written in
        one transaction. How many."""

        async def work(conn: AsyncConnection) -> int:
            due = await bs.claim_reminders(conn, self.config.reminder_before, BATCH)
            for booking_id in due:
                booking = found(await bs.booking(conn, "booking_id", booking_id), "booking")
                await events.announce(conn, booking, [events.BOOKING_REMINDER])
            return len(due)

        return await in_transaction(self.pool, work, pipeline=False)

    async def _expire_unpaid(self, booking_id: uuid.UUID) -> int:
        sweeper = Actor.of(None)

        async def work(conn: AsyncConnection):
            await bs.set_actor(conn, sweeper.label, PAYMENT_TIMEOUT)
            booking = found(await bs.locked(conn, booking_id), "booking")
            if booking.status is not BookingStatus.PENDING_PAYMENT:
                return None  # paid or cancelled meanwhile
            if await bs.live_payment(conn, booking_id) is not None:
                return None  # a payment began meanwhile
            note = f"not paid within {self.config.payment_window}"
            _, slot = await self._cancel(
                conn, booking, PAYMENT_TIMEOUT, note, FULL, sweeper, datetime.now(UTC)
            )
            return slot

        slot = await in_transaction(self.pool, work, pipeline=False)
        if slot is None:
            return 0
        await self.availability.changed([slot])
        return 1

    # --- parts ----------------------------------------------------------------------------

    @staticmethod
    def _party(
        actor: Actor, seen: Booking | None, booking_id: uuid.UUID, user_id: uuid.UUID | None
    ) -> Booking:
        record = ("booking", booking_id)
        booking = found(seen, *record)
        actor.require_party(record, booking.user_id, booking.clinic_id, user_id)
        return booking


async def _refund_of(conn: AsyncConnection, booking: Booking) -> tuple[Payment | None, int]:
    """The refund of a cancelled booking and its share of what was paid (a retried cancel)."""
    paid = await bs.live_payment(conn, booking.id)
    refund = paid and await bs.payment(conn, "idempotency_key", f"refund-{paid.id}-cancel")
    if paid is None:
        return None, 0
    event = await bs.last_event(conn, booking.id, events.BOOKING_CANCELLED.name)
    return refund, int(event["refundPercent"]) if event and "refundPercent" in event else 0
