"""SQL of the notification service (psycopg 3, parameters only). Every function runs on the
caller's connection and inside the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from libs.db.database import enum_types
from libs.errors import FailedPrecondition, not_found
from services.notification.domain import (
    Attempt,
    Channel,
    Claimed,
    Delivery,
    DeliveryStatus,
    Draft,
    Notification,
    NotificationStatus,
    NotificationType,
    Outcome,
    Preferences,
)

register_types = enum_types(
    {
        "notification_type_enum": NotificationType,
        "notification_status_enum": NotificationStatus,
        "notification_channel": Channel,
        "delivery_status": DeliveryStatus,
        "attempt_outcome": Outcome,
    }
)
NOTIFICATION_COLUMNS = ", ".join(f.name for f in fields(Notification) if f.name != "deliveries")
DELIVERY_COLUMNS = ", ".join(f.name for f in fields(Delivery))
PREFERENCE_COLUMNS = ", ".join(f.name for f in fields(Preferences))

# A notification's status from its deliveries: pending while one is pending, failed when one
# failed, else sent (also with no delivery at all). Callers lock the notifications first
# (lock_notifications), so workers finishing two channels of one notification at once
# cannot both miss the other's outcome.
ROLL_UP = """
    UPDATE notifications n
       SET status = r.status,
           sent_at = CASE WHEN r.status = 'sent' THEN now() END
      FROM (SELECT m.id,
                   CASE WHEN bool_or(d.status = 'pending') THEN 'pending'
                        WHEN bool_or(d.status = 'failed') THEN 'failed'
                        ELSE 'sent' END::notification_status_enum AS status
              FROM notifications m
              LEFT JOIN notification_deliveries d ON d.notification_id = m.id
             WHERE m.id = ANY(%s)
             GROUP BY m.id) r
     WHERE n.id = r.id AND n.status <> r.status"""


# --- preferences ---------------------------------------------------------------------------


def preferences_row(cursor: Any) -> Callable[[Sequence[Any]], Preferences]:
    """Row factory: the muted channels as a set."""

    def make(row: Sequence[Any]) -> Preferences:
        user_id, muted, *rest = row
        return Preferences(user_id, frozenset(muted), *rest)

    return make


async def preferences(conn: AsyncConnection, user_id: uuid.UUID) -> Preferences:
    """The rider's preferences; the defaults when they never set any."""
    cur = conn.cursor(row_factory=preferences_row)
    await cur.execute(
        f"SELECT {PREFERENCE_COLUMNS} FROM preferences WHERE user_id = %s", (user_id,)
    )
    return await cur.fetchone() or Preferences(user_id)


async def save_preferences(conn: AsyncConnection, p: Preferences) -> Preferences:
    cur = conn.cursor(row_factory=preferences_row)
    await cur.execute(
        f"""INSERT INTO preferences (user_id, muted_channels, language, time_zone, fare_updates,
                                     travelled_fare_updates)
            VALUES (%s, %s::notification_channel[], %s, %s, %s, %s)
            ON CONFLICT (user_id) DO UPDATE
               SET muted_channels = excluded.muted_channels, language = excluded.language,
                   time_zone = excluded.time_zone, fare_updates = excluded.fare_updates,
                   travelled_fare_updates = excluded.travelled_fare_updates,
                   updated_at = now()
            RETURNING {PREFERENCE_COLUMNS}""",
        (
            p.user_id,
            sorted(p.muted_channels),
            p.language,
            p.time_zone,
            p.fare_updates,
            p.travelled_fare_updates,
        ),
    )
    saved = await cur.fetchone()
    assert saved is not None
    return saved


# --- notifications -------------------------------------------------------------------------


async def insert_notifications(conn: AsyncConnection, drafts: list[Draft]) -> None:
    """Store each draft with a pending delivery per channel; a draft whose event and rider
    already have a notification is skipped (a replayed event)."""
    await conn.cursor().executemany(
        """WITH made AS (
               INSERT INTO notifications
                      (user_id, type, status, sent_at, message, language, terminal_code,
                       transaction_reference, metadata, event_id, event_type)
               VALUES (%(user_id)s, %(type)s, %(status)s,
                       CASE WHEN %(status)s = 'sent' THEN now() END, %(message)s,
                       %(language)s, %(terminal_code)s, %(reference)s, %(metadata)s,
                       %(event_id)s, %(event_type)s)
               ON CONFLICT (event_id, user_id) DO NOTHING
               RETURNING id)
           INSERT INTO notification_deliveries (notification_id, channel)
           SELECT made.id, channel
             FROM made, unnest(%(channels)s::notification_channel[]) AS channel""",
        [
            {
                "user_id": d.user_id,
                "type": d.type,
                "status": NotificationStatus.PENDING if d.channels else NotificationStatus.SENT,
                "message": d.message,
                "language": d.language,
                "terminal_code": d.terminal_code,
                "reference": d.reference,
                "metadata": Jsonb(d.metadata),
                "event_id": d.event_id,
                "event_type": d.event_type,
                "channels": list(d.channels),
            }
            for d in drafts
        ],
    )


async def notification(conn: AsyncConnection, notification_id: int) -> Notification | None:
    found = await _with_deliveries(
        conn, f"SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id = %s", (notification_id,)
    )
    return found[0] if found else None


@dataclass(frozen=True)
class NotificationFilter:
    user_id: uuid.UUID | None = None
    status: NotificationStatus | None = None
    type: NotificationType | None = None


async def list_notifications(
    conn: AsyncConnection, f: NotificationFilter, after_id: int | None, limit: int
) -> list[Notification]:
    """Newest first, keyset-paged on the id."""
    conditions: list[str] = []
    params: list[Any] = []
    for sql, value in (
        ("user_id = %s", f.user_id),
        ("status = %s", f.status),
        ("type = %s", f.type),
        ("id < %s", after_id),
    ):
        if value is not None:
            conditions.append(sql)
            params.append(value)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    return await _with_deliveries(
        conn,
        f"SELECT {NOTIFICATION_COLUMNS} FROM notifications {where} ORDER BY id DESC LIMIT %s",
        (*params, limit),
    )


async def _with_deliveries(
    conn: AsyncConnection, query: str, params: tuple[Any, ...]
) -> list[Notification]:
    cur = conn.cursor(row_factory=class_row(Notification))
    await cur.execute(query, params)
    found = await cur.fetchall()
    if not found:
        return []
    rows = await conn.execute(
        f"""SELECT notification_id, {DELIVERY_COLUMNS} FROM notification_deliveries
             WHERE notification_id = ANY(%s) ORDER BY notification_id, channel""",
        ([n.id for n in found],),
    )
    deliveries: dict[int, list[Delivery]] = {}
    for notification_id, *values in await rows.fetchall():
        deliveries.setdefault(notification_id, []).append(Delivery(*values))
    return [replace(n, deliveries=deliveries.get(n.id, [])) for n in found]


async def lock_notifications(conn: AsyncConnection, ids: list[int]) -> list[NotificationStatus]:
    """Lock notifications (in id order, so two lockers never deadlock); their statuses."""
    cur = await conn.execute(
        "SELECT status FROM notifications WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
        (ids,),
    )
    return [row[0] for row in await cur.fetchall()]


async def retry(conn: AsyncConnection, notification_id: int) -> None:
    """Put a failed notification's failed deliveries back to pending with no attempts."""
    statuses = await lock_notifications(conn, [notification_id])
    if not statuses:
        raise not_found("notification", notification_id)
    if statuses[0] is not NotificationStatus.FAILED:
        raise FailedPrecondition(
            "NOT_FAILED", f"notification {notification_id} is {statuses[0]}, not failed"
        )
    await conn.execute(
        """UPDATE notification_deliveries
              SET status = 'pending', attempts = 0, next_attempt_at = now(), last_error = NULL,
                  updated_at = now()
            WHERE notification_id = %s AND status = 'failed'""",
        (notification_id,),
    )
    await conn.execute(ROLL_UP, ([notification_id],))


# --- deliveries ----------------------------------------------------------------------------


async def fail_unfinished(conn: AsyncConnection, max_attempts: int) -> int:
    """Fail the deliveries claimed `max_attempts` times whose last lease ran out with no
    outcome recorded (the worker died or hung on every attempt), so a delivery that kills its
    worker is not taken forever; return how many. A late outcome of the last claim is then
    ignored by record_results (the delivery is no longer pending)."""
    cur = await conn.execute(
        "SELECT DISTINCT notification_id FROM notification_deliveries "
        "WHERE status = 'pending' AND next_attempt_at <= now() AND attempts >= %s",
        (max_attempts,),
    )
    ids = sorted(row[0] for row in await cur.fetchall())
    if not ids:
        return 0
    await lock_notifications(conn, ids)
    cur = await conn.execute(
        """UPDATE notification_deliveries
              SET status = 'failed', updated_at = now(),
                  last_error = 'no outcome after ' || attempts || ' attempts: the sender '
                               || 'stopped or hung each time'
            WHERE notification_id = ANY(%s) AND status = 'pending'
              AND next_attempt_at <= now() AND attempts >= %s""",
        (ids, max_attempts),
    )
    await conn.execute(ROLL_UP, (ids,))
    return cur.rowcount


async def claim_due(
    conn: AsyncConnection, limit: int, lease: timedelta, max_attempts: int
) -> list[Claimed]:
    """Take up to `limit` due deliveries no other worker holds and with attempts left,
    counting their attempt and pushing them out by `lease`: sent or not, they are not taken
    again before it is over."""
    cur = conn.cursor(row_factory=class_row(Claimed))
    await cur.execute(
        """WITH due AS (
               SELECT notification_id, channel FROM notification_deliveries
                WHERE status = 'pending' AND next_attempt_at <= now() AND attempts < %s
                ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED),
           claimed AS (
               UPDATE notification_deliveries d
                  SET attempts = d.attempts + 1, next_attempt_at = now() + %s,
                      updated_at = now()
                 FROM due
                WHERE d.notification_id = due.notification_id AND d.channel = due.channel
            RETURNING d.notification_id, d.channel, d.attempts)
           SELECT c.notification_id, c.channel, c.attempts AS attempt, n.user_id, n.message,
                  n.language, n.type
             FROM claimed c JOIN notifications n ON n.id = c.notification_id
            ORDER BY c.notification_id, c.channel""",
        (max_attempts, limit, lease),
    )
    return await cur.fetchall()


@dataclass(frozen=True)
class Result:
    """How one claimed attempt ended, and what the delivery becomes."""

    claimed: Claimed
    attempt: Attempt
    status: DeliveryStatus
    retry_in: timedelta | None  # when it stays pending: the wait before the next attempt


async def record_results(conn: AsyncConnection, results: list[Result]) -> None:
    """Log each attempt and update its delivery, unless the delivery moved on since it was
    claimed (its lease ran out and another worker took it); then roll the statuses up."""
    ids = sorted({r.claimed.notification_id for r in results})
    await lock_notifications(conn, ids)
    await conn.cursor().executemany(
        """WITH updated AS (
               UPDATE notification_deliveries
                  SET status = %(status)s, last_error = %(error)s,
                      next_attempt_at = coalesce(now() + %(retry_in)s::interval, next_attempt_at),
                      sent_at = CASE WHEN %(status)s = 'sent' THEN now() END,
                      updated_at = now()
                WHERE notification_id = %(id)s AND channel = %(channel)s
                  AND status = 'pending' AND attempts = %(attempt)s
            RETURNING notification_id, channel)
           INSERT INTO delivery_attempts
                  (notification_id, channel, attempt, outcome, recipient, error)
           SELECT notification_id, channel, %(attempt)s, %(outcome)s, %(recipient)s, %(error)s
             FROM updated""",
        [
            {
                "id": r.claimed.notification_id,
                "channel": r.claimed.channel,
                "attempt": r.claimed.attempt,
                "status": r.status,
                "retry_in": r.retry_in,
                "outcome": r.attempt.outcome,
                "recipient": r.attempt.recipient,
                "error": r.attempt.error_text,
            }
            for r in results
        ],
    )
    await conn.execute(ROLL_UP, (ids,))
