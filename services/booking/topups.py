"""Wallet top-ups paid through the gateway (issue 12 moved rider top-ups here: a rider never
credits their own wallet). The rider asks for an intent and pays on the gateway's page; the
gateway's verified and confirmed settlement credits the wallet through the user service
(TopUp, as the booking service, idempotent by the intent), once. Money the wallet cannot
take (its cap) goes back through the gateway."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from libs.db.transaction import in_transaction, read
from libs.errors import AlreadyExists, FailedPrecondition, Unavailable
from services.booking import gateway
from services.booking import topup_store as store
from services.booking.config import BookingConfig
from services.booking.domain import Actor
from services.booking.gateway import Midtrans, Outcome, Status
from services.booking.topup_store import TopUp
from services.booking.users import Users

log = logging.getLogger(__name__)
TOP_UP_ORDER = "topup-"
SETTLE_BATCH = 100


def order_id(top_up: TopUp) -> str:
    return f"{TOP_UP_ORDER}{top_up.id}"


class TopUps:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        users: Users,
        gateway: Midtrans | None,
        config: BookingConfig,
    ) -> None:
        self.pool = pool
        self.users = users
        self.gateway = gateway
        self.config = config

    async def create(self, actor: Actor, user_id: uuid.UUID, amount: Decimal, key: str) -> TopUp:
        """An intent to top up `amount`, with the gateway's payment URL. A retry with the
        same key answers it (with other amount: ALREADY_EXISTS)."""
        gateway = self._gateway()
        now = datetime.now(UTC)

        async def begin(conn: AsyncConnection) -> TopUp:
            made = await store.insert(conn, user_id, amount, key, now + self.config.payment_window)
            first = made or await store.find(conn, "request", user_id, key)
            assert first is not None
            if first.amount != amount:
                raise AlreadyExists(
                    f"idempotency_key {key!r} already asked for a top-up of {first.amount}; "
                    "use a new key for a new top-up"
                )
            return first

        top_up = await in_transaction(self.pool, begin, pipeline=False)
        if top_up.payment_url or top_up.status != "pending":
            return top_up
        snap = await gateway.create(order_id(top_up), amount, self.config.payment_window, now)

        async def keep(conn: AsyncConnection) -> TopUp | None:
            return await store.update(conn, top_up.id, payment_url=snap.redirect_url)

        return await in_transaction(self.pool, keep, pipeline=False) or top_up

    async def gateway_says(self, status: Status) -> bool:
        """Apply what the gateway confirmed of a top-up; False when the order is not one."""
        if not status.order_id.startswith(TOP_UP_ORDER):
            return False
        try:
            intent_id = uuid.UUID(status.order_id.removeprefix(TOP_UP_ORDER))
        except ValueError:
            return False
        top_up = await read(self.pool, store.find, "intent_id", intent_id)
        if top_up is None:
            return False
        if status.outcome is Outcome.PAID and status.amount == top_up.amount:
            await self._credit(top_up, status.transaction_id)
        elif status.outcome in (Outcome.FAILED, Outcome.EXPIRED):
            await self._end(top_up, status=status.outcome.value)
        return True

    async def settle(self) -> int:
        """Ask the gateway about top-ups we heard nothing of; expire those past their time."""
        done = 0
        for top_up in await read(
            self.pool, store.unsettled, self.config.settle_after, SETTLE_BATCH
        ):
            try:
                if top_up.payment_url:
                    await self.gateway_says(await self._gateway().status(order_id(top_up)))
                current = await read(self.pool, store.find, "intent_id", top_up.id)
                if (
                    current
                    and current.status == "pending"
                    and datetime.now(UTC) > (top_up.expires_at + self.config.settle_after)
                ):
                    current = await self._end(top_up, status="expired")
            except (FailedPrecondition, Unavailable) as exc:
                log.warning("top-up %s: %s", top_up.id, exc.message)
                continue
            done += current is not None and current.status != "pending"
        return done

    async def _credit(self, top_up: TopUp, transaction_id: str) -> None:
        try:
            await self.users.top_up(
                top_up.user_id, top_up.amount, key=f"topup-{top_up.id}",
                description=f"Top-up {transaction_id or top_up.id} through Midtrans",
            )  # fmt: skip
        except FailedPrecondition as refused:  # the wallet's cap: the money goes back
            log.warning("top-up %s cannot be credited: %s", top_up.id, refused.message)
            await self._gateway().refund(
                order_id(top_up), str(top_up.id), top_up.amount, refused.message[:200]
            )
            await self._end(top_up, status="refunded", provider_payment_id=transaction_id)
            return
        await self._end(
            top_up, status="paid", provider_payment_id=transaction_id,
            credited_at=datetime.now(UTC),
        )  # fmt: skip

    async def _end(self, top_up: TopUp, **fields: object) -> TopUp | None:
        async def work(conn: AsyncConnection) -> TopUp | None:
            return await store.update(conn, top_up.id, **fields)

        return await in_transaction(self.pool, work, pipeline=False)

    def _gateway(self) -> Midtrans:
        return gateway.required(self.gateway, "top-ups")
