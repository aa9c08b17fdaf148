"""Use cases of the notification service: turning an event into stored notifications (in the
consumer's inbox transaction, or in chunks before it for a fare change's audience), and what
the API reads and changes."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import Counter
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from libs.auth import Principal, Role
from libs.db.transaction import after_commit, in_statement, in_transaction, read
from libs.errors import PermissionDenied, not_found
from libs.events.envelope import CloudEvent
from services.notification import audience, intake, render, store
from services.notification.config import NotificationConfig
from services.notification.domain import TRAVELLED_WITHIN, Draft, Notification, Preferences
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
        transaction (the inbox's). An audience's were stored before, by fan_out."""
        plan = intake.plan(event)
        if plan is None:
            EVENTS.labels("ignored").inc()
            log.debug("event %s (%s) is not for riders; ignored", event.id, event.type)
            return
        if plan.travelled is not None:
            await audience.remember_trip(conn, plan.travelled)
        if plan.user_id is not None:
            rider = await store.preferences(conn, plan.user_id)
            await self._store(conn, self._drafts(event, plan, [rider], datetime.now(UTC)))
        EVENTS.labels("stored").inc()

    async def fan_out(self, event: CloudEvent) -> None:
        """Before the inbox transaction (the consumer's `prepare`): tell a fare change's
        audience, a chunk of riders per transaction, in user id order. A redelivery resumes
        after the last rider told (the notifications' unique (event, rider) key makes a chunk
        redone after a failure harmless), so a failure costs one chunk, not the audience."""
        if not intake.fans_out(event.type):
            return
        plan = intake.plan(event)
        assert plan is not None and plan.pair is not None  # what fans_out promises
        pair, now, chunk = plan.pair, datetime.now(UTC), self.config.fan_out_chunk
        after = await read(self.pool, audience.last_notified, uuid.UUID(event.id))
        while True:

            async def tell(
                conn: AsyncConnection, after: uuid.UUID | None = after
            ) -> list[Preferences]:
                riders = await audience.fare_audience(
                    conn, pair, now - TRAVELLED_WITHIN, after, chunk
                )
                await self._store(conn, self._drafts(event, plan, riders, now))
                return riders

            riders = await in_transaction(self.pool, tell, pipeline=False)
            if len(riders) < chunk:
                return
            after = riders[-1].user_id

    async def _store(self, conn: AsyncConnection, drafts: list[Draft]) -> None:
        if not drafts:
            return
        await store.insert_notifications(conn, drafts)
        if any(d.channels for d in drafts):
            after_commit(self.wake)

    async def forget_old_trips(self) -> int:
        """Forget the pairs nobody travelled within TRAVELLED_WITHIN (a periodic job)."""

        async def forget(conn: AsyncConnection) -> int:
            return await audience.forget_trips(conn, datetime.now(UTC) - TRAVELLED_WITHIN, 5_000)

        return await in_statement(self.pool, forget)

    def _drafts(
        self, event: CloudEvent, plan: Plan, riders: list[Preferences], now: datetime
    ) -> list[Draft]:
        """One draft per rider. What does not depend on the rider (metadata, configured
        channels) is made once, and each text once per language and zone: a fare update
        fans out to a whole audience, most of whom share both."""
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
            raise not_found("notification", notification_id)
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
