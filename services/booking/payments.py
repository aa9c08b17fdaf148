"""The money of bookings: payments from the wallet or through the gateway (Midtrans), and
refunds back through the channel that paid.

Every move is recorded pending in payment_records first (its own transaction), then made
at the wallet or the gateway with a key derived from the record (so a repeat never moves
money twice), then recorded as ended. A crash or an outage between the steps leaves a
pending record that settle() — the sweeper — drives to its end: a wallet move is repeated
(idempotent by key), a gateway payment is asked about through the status API. A payment
that arrives for a booking cancelled meanwhile is refunded in full, never lost."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool

from libs.auth.service_identity import ServiceIdentity
from libs.db.transaction import in_transaction, read
from libs.errors import AlreadyExists, FailedPrecondition, Unavailable, found
from services.booking import booking_store as bs
from services.booking import events, gateway, lifecycle, qr
from services.booking.config import BookingConfig
from services.booking.domain import (
    Actor,
    Booking,
    BookingStatus,
    Payment,
    PaymentMethod,
    PaymentRecordStatus,
    Provider,
)
from services.booking.events import Kind
from services.booking.gateway import Midtrans, Outcome, Status
from services.booking.users import Users

log = logging.getLogger(__name__)
SETTLE_BATCH = 100
PAYMENT_ORDER = "pay-"
# The wallet's refusal of a credit past its cap (Rp 20.000.000): such a refund fits once the
# rider has spent enough, so it waits pending instead of failing.
WALLET_FULL = "BALANCE_LIMIT"
ENDED_BY = {
    Outcome.FAILED: PaymentRecordStatus.FAILED,
    Outcome.EXPIRED: PaymentRecordStatus.EXPIRED,
}


def order_id(payment: Payment) -> str:
    """The gateway's order id of a booking's payment."""
    return f"{PAYMENT_ORDER}{payment.id}"


class Payments:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        users: Users,
        gateway: Midtrans | None,
        config: BookingConfig,
        identity: ServiceIdentity,
    ) -> None:
        self.pool = pool
        self.users = users
        self.gateway = gateway
        self.config = config
        self.identity = identity

    # --- paying ---------------------------------------------------------------------------

    async def pay(
        self,
        actor: Actor,
        booking_id: uuid.UUID,
        user_id: uuid.UUID | None,
        method: PaymentMethod,
        key: str | None,
    ) -> tuple[Booking, Payment]:
        """Pay the booking's final amount from the wallet (paid -> CONFIRMED at once) or
        through the gateway (the answer carries its payment URL; its notification settles
        it). A retry with the same key answers the first payment, driving it on when it was
        left pending (by another method: ALREADY_EXISTS); another key while a payment is
        live is PAYMENT_IN_PROGRESS."""
        provider = Provider.WALLET if method is PaymentMethod.WALLET else Provider.MIDTRANS
        midtrans = self._gateway() if provider is Provider.MIDTRANS else None
        # Keys are unique across bookings: the client's key is scoped to its booking.
        scoped = f"{booking_id}:{key or method}"

        async def begin(conn: AsyncConnection) -> Payment:
            booking = found(await bs.locked(conn, booking_id), "booking", booking_id)
            actor.require_party(("booking", booking_id), booking.user_id, booking.clinic_id,
                                user_id)  # fmt: skip
            if first := await bs.payment(conn, "idempotency_key", scoped):
                if first.method is not method:  # never charge the wallet for a Snap page
                    raise AlreadyExists(
                        f"idempotency_key {key!r} already began a {first.method} payment of "
                        f"booking {booking_id}; use a new key to pay by {method}"
                    )
                return first
            lifecycle.require_payable(booking)
            try:
                async with conn.transaction():
                    made = await bs.insert_payment(
                        conn, booking, booking.final_amount, method, provider, scoped
                    )
            except errors.UniqueViolation:
                raise FailedPrecondition(
                    "PAYMENT_IN_PROGRESS",
                    f"booking {booking_id} has a payment under way already; wait for it, "
                    "or retry with its idempotency_key",
                ) from None
            assert made is not None
            return made

        payment = await in_transaction(self.pool, begin, pipeline=False)
        if payment.status in (PaymentRecordStatus.FAILED, PaymentRecordStatus.EXPIRED):
            raise FailedPrecondition(
                "PAYMENT_FAILED",
                f"payment {payment.id} of booking {booking_id} is {payment.status}; "
                "pay again with a new idempotency_key",
            )
        if payment.status is PaymentRecordStatus.PENDING:
            if midtrans is None:
                payment = await self.charge(payment)
            elif payment.payment_url is None:
                payment = await self._open_at_gateway(midtrans, payment)
        booking = found(await read(self.pool, bs.booking, "booking_id", booking_id), "booking")
        return booking, payment

    async def charge(self, payment: Payment) -> Payment:
        """Take a pending wallet payment from the wallet, then record it paid."""
        try:
            if payment.amount > 0:
                await self.users.charge(
                    payment.user_id,
                    payment.amount,
                    key=f"payment-{payment.id}",
                    reference=f"booking-{payment.booking_id}",
                    description=f"Booking {payment.booking_id}",
                )
        except FailedPrecondition as refused:
            await self.end(payment, PaymentRecordStatus.FAILED, refused)
            raise
        return await self.paid(payment)

    async def _open_at_gateway(self, gateway: Midtrans, payment: Payment) -> Payment:
        """Create the Snap transaction and keep its payment URL and expiry."""
        now = datetime.now(UTC)
        try:
            snap = await gateway.create(
                order_id(payment), payment.amount, self.config.payment_window, now
            )
        except FailedPrecondition as refused:
            await self.end(payment, PaymentRecordStatus.FAILED, refused)
            raise

        async def keep(conn: AsyncConnection) -> Payment:
            return await bs.set_payment(
                conn, payment.id, payment_url=snap.redirect_url,
                expiry_time=now + self.config.payment_window, metadata={"snapToken": snap.token},
            )  # fmt: skip

        return await in_transaction(self.pool, keep, pipeline=False)

    async def paid(self, payment: Payment, transaction_id: str | None = None) -> Payment:
        """Record a payment that went through: the booking CONFIRMED with its QR payload,
        or — cancelled meanwhile — the payment refunded in full (no booking nobody holds).
        Once: a payment recorded already is answered as it is."""
        now = datetime.now(UTC)
        extra = {"provider_payment_id": transaction_id} if transaction_id else {}

        async def work(conn: AsyncConnection) -> tuple[Payment, Payment | None]:
            await bs.set_actor(conn, Actor.of(None).label, "payment_received")
            booking = found(await bs.locked(conn, payment.booking_id), "booking")
            current = found(await bs.payment(conn, "payment_id", payment.id), "payment")
            if current.status is not PaymentRecordStatus.PENDING:
                return current, None
            if booking.status is BookingStatus.PENDING_PAYMENT:
                done = await bs.set_payment(
                    conn, payment.id, status="completed", paid_at=now, **extra
                )
                confirmed = await bs.update_booking(
                    conn, booking.id, status=BookingStatus.CONFIRMED, payment_status="paid",
                    payment_id=payment.id,
                )  # fmt: skip
                signed = qr.payload(confirmed, self.identity.signer())
                confirmed = await bs.update_booking(conn, booking.id, qr_code_url=signed)
                await events.announce(
                    conn, confirmed, [events.BOOKING_PAID, events.BOOKING_CONFIRMED]
                )
                return done, None
            # Cancelled while the money was on its way: all of it goes back.
            done = await bs.set_payment(
                conn, payment.id, status="refunded", paid_at=now, refunded_at=now,
                refund_amount=payment.amount, **extra,
            )  # fmt: skip
            refund = await self.begin_refund(conn, booking, done, payment.amount, "late")
            await bs.update_booking(conn, booking.id, payment_status="refunded")
            return done, refund

        done, refund = await in_transaction(self.pool, work, pipeline=False)
        if refund is not None:
            await self.drive_refund(refund)
        return done

    # --- refunds --------------------------------------------------------------------------

    async def begin_refund(
        self, conn: AsyncConnection, booking: Booking, paid: Payment, amount: Decimal,
        why: str,
    ) -> Payment:  # fmt: skip
        """A pending refund of `amount` of `paid` (on the caller's transaction), through the
        channel that paid; `why` makes its key (one refund per cancellation, per move)."""
        key = f"refund-{paid.id}-{why}"
        refund = await bs.insert_payment(
            conn, booking, amount, PaymentMethod.REFUND, paid.provider, key, refund_of=paid.id
        )
        return found(refund or await bs.payment(conn, "idempotency_key", key), "refund")

    async def drive_refund(self, refund: Payment) -> Payment:
        """Send a pending refund back; left pending when the channel cannot answer or the
        wallet has no room for it yet (the sweeper drives it again), failed when it refuses
        for good (logged for operators)."""
        try:
            if refund.provider is Provider.WALLET:
                await self.users.refund(
                    refund.user_id, refund.amount, key=f"payment-{refund.id}",
                    reference=f"booking-{refund.booking_id}",
                    description=f"Refund of booking {refund.booking_id}",
                )  # fmt: skip
            else:
                paid = found(
                    await read(self.pool, bs.payment, "payment_id", refund.refund_of), "payment"
                )
                await self._gateway().refund(
                    order_id(paid), str(refund.id), refund.amount, "booking cancelled or moved"
                )
        except Unavailable as exc:
            log.warning("refund %s waits: %s", refund.id, exc.message)
            return refund
        except FailedPrecondition as refused:
            if refused.reason == WALLET_FULL:
                log.warning("refund %s waits for room on the wallet: %s", refund.id,
                            refused.message)  # fmt: skip
                await in_transaction(self.pool, lambda c: bs.touch_payment(c, refund.id))
                return refund
            log.error("refund %s refused: %s", refund.id, refused.message)
            return await self.end(refund, PaymentRecordStatus.FAILED, refused)
        return await self.end(
            refund, PaymentRecordStatus.COMPLETED, announce=events.BOOKING_REFUNDED
        )

    async def end(
        self,
        payment: Payment,
        status: PaymentRecordStatus,
        refused: FailedPrecondition | None = None,
        *,
        announce: Kind | None = None,
    ) -> Payment:
        """Record the end of a pending money move (once: a move ended already is kept)."""
        fields: dict[str, Any] = {"status": status}
        if refused is not None:
            fields["metadata"] = {"reason": refused.reason, "message": refused.message}
        if status is PaymentRecordStatus.COMPLETED and payment.is_refund:
            fields["refunded_at"] = datetime.now(UTC)

        async def work(conn: AsyncConnection) -> Payment:
            current = found(await bs.payment(conn, "payment_id", payment.id), "payment")
            if current.status is not PaymentRecordStatus.PENDING:
                return current
            done = await bs.set_payment(conn, payment.id, **fields)
            if announce is not None:
                booking = found(await bs.booking(conn, "booking_id", payment.booking_id), "booking")
                await events.announce(conn, booking, [announce], refund_amount=payment.amount)
            return done

        return await in_transaction(self.pool, work, pipeline=False)

    # --- the gateway's word ---------------------------------------------------------------

    async def gateway_says(self, status: Status) -> bool:
        """Apply what the gateway confirmed of one of our payments; False when the order
        is not a booking payment we know."""
        if not status.order_id.startswith(PAYMENT_ORDER):
            return False
        try:
            payment_id = uuid.UUID(status.order_id.removeprefix(PAYMENT_ORDER))
        except ValueError:
            return False
        payment = await read(self.pool, bs.payment, "payment_id", payment_id)
        if payment is None or payment.provider is not Provider.MIDTRANS or payment.is_refund:
            return False
        outcome = status.outcome
        if outcome is Outcome.PAID:
            if status.amount != payment.amount:
                log.error("payment %s: gateway paid %s, not %s", payment.id, status.amount,
                          payment.amount)  # fmt: skip
                return True  # never confirm a booking for another amount; operators see it
            await self.paid(payment, status.transaction_id)
        elif outcome in ENDED_BY:
            await self.end(payment, ENDED_BY[outcome])
        return True

    # --- the sweeper's part ---------------------------------------------------------------

    async def settle(self) -> int:
        """Drive money moves left pending to their end; how many ended."""
        pending = await read(self.pool, bs.unsettled, self.config.settle_after, SETTLE_BATCH)
        done = 0
        for payment in pending:
            try:
                if payment.is_refund:
                    payment = await self.drive_refund(payment)
                elif payment.provider is Provider.WALLET:
                    payment = await self.charge(payment)
                else:
                    payment = await self._ask_gateway(payment)
            except (FailedPrecondition, Unavailable) as exc:
                log.warning("payment %s: %s", payment.id, exc.message)
                continue
            done += payment.status is not PaymentRecordStatus.PENDING
        return done

    async def _ask_gateway(self, payment: Payment) -> Payment:
        """What became of a gateway payment we heard nothing of (a notification lost, or
        the status API down when it came): asked through the status API. One the gateway
        still calls pending, or never saw, past its expiry is ended EXPIRED."""
        status = await self._gateway().status(order_id(payment)) if payment.payment_url else None
        if status is not None:
            await self.gateway_says(status)
        current = found(await read(self.pool, bs.payment, "payment_id", payment.id), "payment")
        expiry = payment.expiry_time or payment.created_at + self.config.payment_window
        if current.status is PaymentRecordStatus.PENDING:
            if datetime.now(UTC) > expiry + self.config.settle_after:
                return await self.end(current, PaymentRecordStatus.EXPIRED)
            await in_transaction(self.pool, lambda c: bs.touch_payment(c, payment.id))
        return current

    def _gateway(self) -> Midtrans:
        return gateway.required(self.gateway, "payments")
