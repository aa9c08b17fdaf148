"""Adjustments (revision.py): the re-pricing of a journey already paid, moved on the wallet
after the transaction that wrote it — refunded or charged under the journey's reference,
idempotent by the adjustment's id, so a retry after a crash (the sweeper's, or the next
sync of the card) moves it once. A charge is taken into debt when the balance is short
(wallet.py): a re-pricing is never left unpaid."""

from __future__ import annotations

import uuid
from datetime import timedelta

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from libs.db.transaction import in_statement, read
from services.journey import reconcile_store
from services.journey.reconcile_store import Adjustment
from services.journey.wallet import WalletClient


def key(adjustment: Adjustment) -> str:
    """The wallet's idempotency key of the move."""
    return f"journey-adjust-{adjustment.id}"


class Adjustments:
    def __init__(self, pool: AsyncConnectionPool, wallet: WalletClient) -> None:
        self.pool = pool
        self.wallet = wallet

    async def move(self, adjustment: Adjustment) -> None:
        """Refund or charge it, then note it done. Refunds before charges is the caller's
        order: a refund repays what it can before a charge could make a debt."""
        await self.wallet.adjust(
            adjustment.user_id,
            adjustment.journey_id,
            adjustment.amount,
            key(adjustment),
            adjustment.reason,
        )

        async def work(conn: AsyncConnection) -> None:
            await reconcile_store.adjustment_moved(conn, adjustment.id)

        await in_statement(self.pool, work)

    async def pending(
        self, user_id: uuid.UUID | None, older_than: timedelta, limit: int
    ) -> list[Adjustment]:
        """Adjustments still to move (of one card, or all), refunds first."""
        found = await read(
            self.pool, reconcile_store.pending_adjustments, user_id, older_than, limit
        )
        return sorted(found, key=lambda a: a.amount > 0)
