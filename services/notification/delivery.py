"""The delivery worker: sends pending deliveries outside any transaction the consumer holds.

One round claims a batch of due deliveries (FOR UPDATE SKIP LOCKED, so replicas share the
work without sending one twice), counts their attempt and pushes them out by a lease, commits,
sends them concurrently, then records every outcome in one more transaction. A failed
attempt is due again after a doubling delay; one that spent its attempts is failed (an
operator may RetryNotification). The consumer and RetryNotification wake the worker right
after their commit; a poll finds the rest (retries coming due, other replicas' work, claims
whose worker died: their lease runs out)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import timedelta

from prometheus_client import Counter
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from libs.db.transaction import in_transaction
from libs.errors import Unavailable
from services.notification import store
from services.notification.config import NotificationConfig
from services.notification.contacts import Contacts
from services.notification.domain import (
    Attempt,
    Channel,
    Claimed,
    DeliveryStatus,
    Outcome,
    after_attempt,
    retry_delay,
)
from services.notification.senders import Sender

log = logging.getLogger(__name__)
DELIVERIES = Counter(
    "tiket_notification_delivery_attempts_total",
    "Delivery attempts by channel and outcome.",
    ("channel", "outcome"),
)


class DeliveryWorker:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        config: NotificationConfig,
        contacts: Contacts,
        senders: Mapping[Channel, Sender],
    ) -> None:
        self.pool = pool
        self.config = config
        self.contacts = contacts
        self.senders = senders
        # Longer than a send can take: a claim is never taken again while it is being sent.
        self.lease = timedelta(seconds=2 * (config.send_timeout + config.dependency_timeout) + 30)

    async def deliver_due(self) -> int:
        """One round; the number of deliveries attempted (0 when none was due)."""

        async def claim(conn: AsyncConnection) -> list[Claimed]:
            await store.fail_unfinished(conn, self.config.max_attempts)
            return await store.claim_due(
                conn, self.config.batch_size, self.lease, self.config.max_attempts
            )

        claimed = await in_transaction(self.pool, claim)
        if not claimed:
            return 0
        results = await asyncio.gather(*(self._attempt(item) for item in claimed))

        async def record(conn: AsyncConnection) -> None:
            await store.record_results(conn, list(results))

        await in_transaction(self.pool, record)
        return len(claimed)

    async def _attempt(self, item: Claimed) -> store.Result:
        try:
            attempt = await self._send(item)
        except Exception as exc:  # a bug must cost one attempt, not stall the whole batch
            log.exception("notification %d %s: sending failed", item.notification_id, item.channel)
            attempt = Attempt(Outcome.FAILED, error=f"{type(exc).__name__}: {exc}")
        DELIVERIES.labels(item.channel, attempt.outcome).inc()
        status = after_attempt(attempt, item.attempt, self.config.max_attempts)
        retry_in = None
        if status is DeliveryStatus.PENDING:
            retry_in = retry_delay(item.attempt, self.config.retry_base, self.config.retry_max)
        if attempt.outcome is not Outcome.SENT:
            log.warning(
                "notification %d %s attempt %d %s, now %s: %s",
                *(item.notification_id, item.channel, item.attempt, attempt.outcome, status),
                attempt.error_text,
            )
        return store.Result(item, attempt, status, retry_in)

    async def _send(self, item: Claimed) -> Attempt:
        sender = self.senders.get(item.channel)
        if sender is None:  # the provider was unconfigured after the notification was made
            return Attempt(Outcome.SKIPPED, error=f"no {item.channel} provider is configured")
        if item.channel is Channel.PUSH:  # the push provider knows riders' devices by user id
            return await sender.send(item, str(item.user_id))
        try:
            contact = await self.contacts.of(item.user_id)
        except Unavailable as exc:
            return Attempt(Outcome.FAILED, error=exc.message)
        if contact is None:
            return Attempt(Outcome.SKIPPED, error=f"user {item.user_id} not found")
        to = contact.email if item.channel is Channel.EMAIL else contact.phone
        if not to:
            what = "email address" if item.channel is Channel.EMAIL else "phone number"
            return Attempt(Outcome.SKIPPED, error=f"the rider has no {what}")
        return await sender.send(item, to)
