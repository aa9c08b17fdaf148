"""Use cases of the notification service: turning an event into stored notifications (in the
consumer's inbox transaction), and what the API reads and changes."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import Counter
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from libs.auth import Principal, Role
from libs.db.transaction import after_commit, in_transaction, read
from libs.errors import NotFound, PermissionDenied
from libs.events.envelope import CloudEvent
from services.notification import intake, render, store
from services.notification.config import NotificationConfig
from services.notification.domain import Draft, Notification, Preferences
from services.notification.intake import Plan
from services.notification.store import NotificationFilter

log = logging.getLogger(__name__)
EVENTS = Counter(
    "tiket_notification_events_total",
    "Events consumed: made notifications (stored) or not meant for riders (ignored).",
    ("outcome",),
)


class NotificationApp:
    def __init__(
        self, pool: AsyncConnectionPool, config: NotificationConfig, wake: Callable[[], None]
    ) -> None:
        """`wake`: tells the delivery worker there is something to send."""
        self.pool = pool
        self.config = config
        self.wake = wake

    # --- events ------------------------------------------------------------------------------

    async def record(self, event: CloudEvent, conn: AsyncConnection) -> None:
        """Store the notifications `event` makes, on the consumer's connection and in its
        transaction (the inbox's)."""
        plan = intake.plan(event)
        if plan is None:
            EVENTS.labels("ignored").inc()
            log.debug("event %s (%s) is not for riders; ignored", event.id, event.type)
            return
        if plan.user_id is None:
            riders = await store.fare_subscribers(conn)
        else:
            riders = [await store.preferences(conn, plan.user_id)]
        drafts = self._drafts(event, plan, riders)
        await store.insert_notifications(conn, drafts)
        if any(d.channels for d in drafts):
            after_commit(self.wake)
        EVENTS.labels("stored").inc()

    def _drafts(self, event: CloudEvent, plan: Plan, riders: list[Preferences]) -> list[Draft]:
        """One draft per rider. What does not depend on the rider (metadata, configured
        channels) is made once, and each text once per language and zone: a fare update
        fans out to every subscriber, most of whom share both."""
        now = datetime.now(UTC)
        event_id = uuid.UUID(event.id)
        metadata = render.stored(plan.values)
        configured = self.config.channels
        texts: dict[tuple[str, str], str] = {}
        drafts: list[Draft] = []
        for rider in riders:
            key = (rider.language, rider.time_zone)
            if key not in texts:
                texts[key] = render.render(
                    plan.template, rider.language, plan.values, rider.zone, now
                )
            drafts.append(
                Draft(
                    event_id=event_id,
                    event_type=event.type,
                    type=plan.type,
                    user_id=rider.user_id,
                    message=texts[key],
                    language=rider.language,
                    terminal_code=plan.terminal_code,
                    reference=plan.reference,
                    metadata=metadata,
                    channels=rider.channels(configured),
                )
            )
        return drafts

    # --- API ---------------------------------------------------------------------------------

    async def notification(self, notification_id: int, caller: Principal | None) -> Notification:
        """A rider reads only their own: any other id, existing or not, is PERMISSION_DENIED
        for them (no hint of what exists)."""
        found = await read(self.pool, store.notification, notification_id)
        mine = found is not None and str(found.user_id) == getattr(caller, "subject", None)
        if caller is not None and caller.role is Role.USER and not mine:
            raise PermissionDenied("a user token may only read its own notifications")
        if found is None:
            raise NotFound(f"notification {notification_id} not found")
        return found

    async def notifications(
        self, where: NotificationFilter, after_id: int | None, limit: int
    ) -> list[Notification]:
        return await read(self.pool, store.list_notifications, where, after_id, limit)

    async def retry(self, notification_id: int) -> Notification:
        async def work(conn: AsyncConnection) -> Notification | None:
            await store.retry(conn, notification_id)
            after_commit(self.wake)
            return await store.notification(conn, notification_id)

        retried = await in_transaction(self.pool, work)
        assert retried is not None
        return retried

    async def preferences(self, user_id: uuid.UUID) -> Preferences:
        return await read(self.pool, store.preferences, user_id)

    async def set_preferences(self, wanted: Preferences) -> Preferences:
        async def work(conn: AsyncConnection) -> Preferences:
            return await store.save_preferences(conn, wanted)

        return await in_transaction(self.pool, work)
