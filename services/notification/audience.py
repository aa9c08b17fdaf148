"""Who hears about a fare change (SQL, on the caller's connection and in its transaction):
the riders who travelled the pair lately, learnt from journey.checked_out into
travelled_pairs, unless they opted out, and those who opted into every fare change."""

from __future__ import annotations

import uuid
from datetime import datetime

from psycopg import AsyncConnection

from services.notification.domain import Preferences, Travelled
from services.notification.store import preferences_row


async def fare_audience(
    conn: AsyncConnection,
    pair: tuple[str, str],
    travelled_since: datetime,
    after: uuid.UUID | None,
    limit: int,
) -> list[Preferences]:
    """The next `limit` riders, by user id after `after`, to tell about a fare change of
    `pair`: those who travelled it since `travelled_since` and did not opt out, and those
    who opted into every fare change. Each branch reads its index in user id order, so a
    chunk costs the same however far into a large audience it is."""
    origin, destination = pair
    defaults = Preferences(uuid.UUID(int=0))
    cur = conn.cursor(row_factory=preferences_row)
    await cur.execute(
        """WITH audience AS (
               (SELECT t.user_id FROM travelled_pairs t
                  LEFT JOIN preferences p USING (user_id)
                 WHERE t.origin_code = %(origin)s AND t.destination_code = %(destination)s
                   AND t.last_travelled_at >= %(since)s
                   AND (%(after)s::uuid IS NULL OR t.user_id > %(after)s)
                   AND coalesce(p.travelled_fare_updates, true)
                 ORDER BY t.user_id LIMIT %(limit)s)
               UNION
               (SELECT user_id FROM preferences
                 WHERE fare_updates AND (%(after)s::uuid IS NULL OR user_id > %(after)s)
                 ORDER BY user_id LIMIT %(limit)s))
           SELECT a.user_id, coalesce(p.muted_channels, '{}'),
                  coalesce(p.language, %(language)s), coalesce(p.time_zone, %(zone)s),
                  coalesce(p.fare_updates, false), coalesce(p.travelled_fare_updates, true),
                  p.updated_at
             FROM audience a LEFT JOIN preferences p USING (user_id)
            ORDER BY a.user_id LIMIT %(limit)s""",
        {
            "origin": origin,
            "destination": destination,
            "since": travelled_since,
            "after": after,
            "limit": limit,
            "language": defaults.language,
            "zone": defaults.time_zone,
        },
    )
    return await cur.fetchall()


async def last_notified(conn: AsyncConnection, event_id: uuid.UUID) -> uuid.UUID | None:
    """The highest user id told about `event_id` so far: where its fan-out resumes."""
    cur = await conn.execute(
        "SELECT user_id FROM notifications WHERE event_id = %s ORDER BY user_id DESC LIMIT 1",
        (event_id,),
    )
    row = await cur.fetchone()
    return row[0] if row else None


# --- who travelled what --------------------------------------------------------------------


async def remember_trip(conn: AsyncConnection, trip: Travelled) -> None:
    await conn.execute(
        """INSERT INTO travelled_pairs AS t
                  (origin_code, destination_code, user_id, last_travelled_at)
           VALUES (%s, %s, %s, %s)
           ON CONFLICT (origin_code, destination_code, user_id) DO UPDATE
              SET last_travelled_at = greatest(t.last_travelled_at, excluded.last_travelled_at)""",
        (trip.origin, trip.destination, trip.user_id, trip.at),
    )


async def forget_trips(conn: AsyncConnection, before: datetime, batch: int) -> int:
    """Delete up to `batch` pairs last travelled before `before`; how many went."""
    cur = await conn.execute(
        """DELETE FROM travelled_pairs WHERE (origin_code, destination_code, user_id) IN (
               SELECT origin_code, destination_code, user_id FROM travelled_pairs
                WHERE last_travelled_at < %s LIMIT %s)""",
        (before, batch),
    )
    return cur.rowcount
