"""SQL of the analytics service (psycopg 3, parameters only), on the caller's connection and
inside the caller's transaction.

The writes run in the consumer's transaction, several at once (prefetch, replicas): each
is one INSERT … ON CONFLICT DO UPDATE adding to what is there, so no update is lost. Every
event locks its rows in the same order of tables (events, hourly taps, riders, terminal
days, routes, bookings), one row of each — a journey.revised a few, in key order — so they
cannot deadlock each other.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from libs.events.envelope import CloudEvent
from services.analytics.domain import BookingTotals, MonthPartition, RouteTotals, TerminalDay
from services.analytics.facts import Booking, Facts, Revision, Tap, Trip, Unfinished

# --- writes --------------------------------------------------------------------------------


async def ensure_partition(conn: AsyncConnection, partition: MonthPartition) -> bool:
    """Create the month's partition when missing; True when this call created it."""
    cur = await conn.execute(
        "SELECT analytics_ensure_partition(%s, %s, %s)",
        (partition.name, partition.start, partition.end),
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def insert_event(conn: AsyncConnection, event: CloudEvent, facts: Facts) -> None:
    """The raw event, in the partition of its month (the caller made sure it exists)."""
    await conn.execute(
        """INSERT INTO analytics_events
               (event_id, event_type, terminal_code, user_id, data, event_timestamp)
           VALUES (%s, %s, %s, %s, %s, %s)""",
        (
            event.id,
            event.type,
            facts.terminal_code,
            facts.user_id,
            Jsonb(event.data),
            facts.occurred_at,
        ),
    )


async def record_tap(conn: AsyncConnection, tap: Tap) -> None:
    """Count a tap: its hour, its rider (once a day per terminal), the day's totals and
    peak. The peak moves to this hour when its new count beats the busiest one, or equals
    it at an earlier hour: counts only grow, so this keeps the exact earliest busiest hour.
    An hour without taps is never the peak (a journey.revised counted before the closing it
    takes back leaves a count at -1, which this tap brings back to 0)."""
    await conn.execute(
        """WITH hourly AS (
               INSERT INTO terminal_hourly_taps AS h (metric_date, terminal_code, hour, taps)
               VALUES (%(day)s, %(terminal)s, %(hour)s, 1)
               ON CONFLICT (metric_date, terminal_code, hour) DO UPDATE SET taps = h.taps + 1
               RETURNING taps
           ), newcomer AS (
               INSERT INTO daily_terminal_users (metric_date, terminal_code, user_id)
               SELECT %(day)s, %(terminal)s, %(user)s::uuid WHERE %(user)s::uuid IS NOT NULL
               ON CONFLICT DO NOTHING
               RETURNING 1
           )
           INSERT INTO daily_terminal_metrics AS m
               (metric_date, terminal_code, total_checkins, total_checkouts, unique_users,
                peak_hour, busiest_hour_count)
           SELECT %(day)s, %(terminal)s, %(checkins)s, %(checkouts)s,
                  (SELECT count(*) FROM newcomer), CASE WHEN taps > 0 THEN %(hour)s END,
                  GREATEST(taps, 0)
             FROM hourly
           ON CONFLICT (metric_date, terminal_code) DO UPDATE SET
               total_checkins = m.total_checkins + EXCLUDED.total_checkins,
               total_checkouts = m.total_checkouts + EXCLUDED.total_checkouts,
               unique_users = m.unique_users + EXCLUDED.unique_users,
               peak_hour = CASE
                   WHEN EXCLUDED.busiest_hour_count > m.busiest_hour_count
                     OR (EXCLUDED.busiest_hour_count = m.busiest_hour_count
                         AND EXCLUDED.peak_hour < m.peak_hour)
                   THEN EXCLUDED.peak_hour ELSE m.peak_hour END,
               busiest_hour_count = GREATEST(m.busiest_hour_count, EXCLUDED.busiest_hour_count),
               updated_at = now()""",
        {
            "day": tap.day,
            "terminal": tap.terminal,
            "hour": tap.hour,
            "user": tap.user_id,
            "checkins": int(tap.checkin),
            "checkouts": int(not tap.checkin),
        },
    )


async def record_unfinished(conn: AsyncConnection, journey: Unfinished) -> None:
    await conn.execute(
        """INSERT INTO daily_terminal_metrics AS m
               (metric_date, terminal_code, abandoned_journeys, incomplete_journeys,
                unfinished_fares)
           VALUES (%s, %s, %s, %s, %s)
           ON CONFLICT (metric_date, terminal_code) DO UPDATE SET
               abandoned_journeys = m.abandoned_journeys + EXCLUDED.abandoned_journeys,
               incomplete_journeys = m.incomplete_journeys + EXCLUDED.incomplete_journeys,
               unfinished_fares = m.unfinished_fares + EXCLUDED.unfinished_fares,
               updated_at = now()""",
        (
            journey.day,
            journey.terminal,
            int(journey.abandoned),
            int(not journey.abandoned),
            journey.fare,
        ),
    )


async def record_trip(conn: AsyncConnection, trip: Trip) -> None:
    timed = trip.duration_minutes is not None
    await conn.execute(
        """INSERT INTO daily_route_metrics AS r
               (metric_date, origin_code, destination_code, trips, revenue,
                duration_minutes_total, timed_trips)
           VALUES (%s, %s, %s, 1, %s, %s, %s)
           ON CONFLICT (metric_date, origin_code, destination_code) DO UPDATE SET
               trips = r.trips + 1,
               revenue = r.revenue + EXCLUDED.revenue,
               duration_minutes_total = r.duration_minutes_total + EXCLUDED.duration_minutes_total,
               timed_trips = r.timed_trips + EXCLUDED.timed_trips,
               updated_at = now()""",
        (
            trip.day,
            trip.origin,
            trip.destination,
            trip.fare,
            trip.duration_minutes or 0,
            int(timed),
        ),
    )


async def record_booking(conn: AsyncConnection, booking: Booking) -> None:
    await conn.execute(
        """INSERT INTO daily_booking_stats AS b (metric_date, event_type, events, amount)
           VALUES (%s, %s, 1, %s)
           ON CONFLICT (metric_date, event_type) DO UPDATE SET
               events = b.events + 1,
               amount = b.amount + EXCLUDED.amount,
               updated_at = now()""",
        (booking.day, booking.event_type, booking.amount or Decimal(0)),
    )


async def revise(conn: AsyncConnection, revision: Revision) -> None:
    """Take back what a journey's previous closing counted and count its current one: the
    changes of each table in key order, the tables in the order of the others' writes. The
    peak of a day whose hourly counts changed is computed again from them (a count that fell
    breaks record_tap's rule)."""
    for (day, terminal, hour), change in revision.hourly().items():
        await conn.execute(
            """INSERT INTO terminal_hourly_taps AS h (metric_date, terminal_code, hour, taps)
               VALUES (%s, %s, %s, %s)
               ON CONFLICT (metric_date, terminal_code, hour) DO UPDATE SET
                   taps = h.taps + EXCLUDED.taps""",
            (day, terminal, hour, change),
        )
    newcomers: set[tuple[date, str]] = set()
    for day, terminal, user in revision.riders():
        cur = await conn.execute(
            """INSERT INTO daily_terminal_users (metric_date, terminal_code, user_id)
               VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1""",
            (day, terminal, user),
        )
        if await cur.fetchone():
            newcomers.add((day, terminal))
    for (day, terminal), c in revision.terminal_days().items():
        await conn.execute(
            """INSERT INTO daily_terminal_metrics AS m
                   (metric_date, terminal_code, total_checkins, total_checkouts, unique_users,
                    abandoned_journeys, incomplete_journeys, unfinished_fares)
               VALUES (%(day)s, %(terminal)s, %(checkins)s, %(checkouts)s, %(newcomer)s,
                       %(abandoned)s, %(incomplete)s, %(fares)s)
               ON CONFLICT (metric_date, terminal_code) DO UPDATE SET
                   total_checkins = m.total_checkins + EXCLUDED.total_checkins,
                   total_checkouts = m.total_checkouts + EXCLUDED.total_checkouts,
                   unique_users = m.unique_users + EXCLUDED.unique_users,
                   abandoned_journeys = m.abandoned_journeys + EXCLUDED.abandoned_journeys,
                   incomplete_journeys = m.incomplete_journeys + EXCLUDED.incomplete_journeys,
                   unfinished_fares = m.unfinished_fares + EXCLUDED.unfinished_fares,
                   updated_at = now()""",
            {
                "day": day,
                "terminal": terminal,
                "checkins": c.checkins,
                "checkouts": c.checkouts,
                "newcomer": int((day, terminal) in newcomers),
                "abandoned": c.abandoned,
                "incomplete": c.incomplete,
                "fares": c.fares,
            },
        )
        await conn.execute(
            """UPDATE daily_terminal_metrics AS m
                  SET peak_hour = top.hour, busiest_hour_count = coalesce(top.taps, 0)
                 FROM (SELECT %(day)s::date AS day, %(terminal)s::text AS terminal) AS k
                 LEFT JOIN LATERAL (
                      SELECT hour, taps FROM terminal_hourly_taps
                       WHERE metric_date = k.day AND terminal_code = k.terminal AND taps > 0
                       ORDER BY taps DESC, hour LIMIT 1) AS top ON true
                WHERE m.metric_date = k.day AND m.terminal_code = k.terminal""",
            {"day": day, "terminal": terminal},
        )
    for (day, origin, destination), r in revision.routes().items():
        await conn.execute(
            """INSERT INTO daily_route_metrics AS r
                   (metric_date, origin_code, destination_code, trips, revenue,
                    duration_minutes_total, timed_trips)
               VALUES (%s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (metric_date, origin_code, destination_code) DO UPDATE SET
                   trips = r.trips + EXCLUDED.trips,
                   revenue = r.revenue + EXCLUDED.revenue,
                   duration_minutes_total =
                       r.duration_minutes_total + EXCLUDED.duration_minutes_total,
                   timed_trips = r.timed_trips + EXCLUDED.timed_trips,
                   updated_at = now()""",
            (day, origin, destination, r.trips, r.revenue, r.duration_minutes, r.timed_trips),
        )


# --- reads ---------------------------------------------------------------------------------


async def terminal_days(
    conn: AsyncConnection, terminal_code: str, start: date, end: date
) -> list[TerminalDay]:
    cur = conn.cursor(row_factory=class_row(TerminalDay))
    await cur.execute(
        """SELECT metric_date AS day, terminal_code, total_checkins AS checkins,
                  total_checkouts AS checkouts, unique_users, peak_hour, busiest_hour_count,
                  abandoned_journeys, incomplete_journeys, unfinished_fares
             FROM daily_terminal_metrics
            WHERE terminal_code = %s AND metric_date BETWEEN %s AND %s
            ORDER BY metric_date""",
        (terminal_code, start, end),
    )
    return await cur.fetchall()


async def hourly_taps(
    conn: AsyncConnection, terminal_code: str | None, start: date, end: date
) -> dict[int, int]:
    """Taps per local hour over the days (and terminal, when given)."""
    cur = await conn.execute(
        """SELECT hour, sum(taps) FROM terminal_hourly_taps
            WHERE metric_date BETWEEN %(start)s AND %(end)s
              AND (%(terminal)s::text IS NULL OR terminal_code = %(terminal)s)
            GROUP BY hour""",
        {"start": start, "end": end, "terminal": terminal_code},
    )
    return {int(hour): int(taps) for hour, taps in await cur.fetchall()}


async def routes(
    conn: AsyncConnection,
    start: date,
    end: date,
    origin_code: str | None,
    after: tuple[str, str] | None,
    limit: int,
) -> list[RouteTotals]:
    """Totals per pair over the days, by origin then destination, after the pair `after`."""
    cur = conn.cursor(row_factory=class_row(RouteTotals))
    await cur.execute(
        """SELECT origin_code, destination_code, sum(trips)::bigint AS trips,
                  sum(revenue) AS revenue,
                  sum(duration_minutes_total)::bigint AS duration_minutes_total,
                  sum(timed_trips)::bigint AS timed_trips
             FROM daily_route_metrics
            WHERE metric_date BETWEEN %(start)s AND %(end)s
              AND (%(origin)s::text IS NULL OR origin_code = %(origin)s)
              AND (%(after_origin)s::text IS NULL
                   OR (origin_code, destination_code) > (%(after_origin)s, %(after_destination)s))
            GROUP BY origin_code, destination_code
            ORDER BY origin_code, destination_code
            LIMIT %(limit)s""",
        {
            "start": start,
            "end": end,
            "origin": origin_code,
            "after_origin": after[0] if after else None,
            "after_destination": after[1] if after else None,
            "limit": limit,
        },
    )
    return await cur.fetchall()


async def booking_totals(
    conn: AsyncConnection, start: date, end: date
) -> dict[tuple[date, str], BookingTotals]:
    cur = await conn.execute(
        """SELECT metric_date, event_type, events, amount FROM daily_booking_stats
            WHERE metric_date BETWEEN %s AND %s""",
        (start, end),
    )
    return {
        (day, kind): BookingTotals(kind, events, amount)
        for day, kind, events, amount in await cur.fetchall()
    }
