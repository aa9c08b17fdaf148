"""GetBookingStats: a clinic's daily figures from the booking_analytics_daily materialized
view (migrations/0003_analytics.sql says what each column counts), and its hourly refresh.

The view is read as it was at its last refresh (at most an hour old, seed 000 §3.2), one row
per local day and service that had bookings: days without any are absent, not zeros.

Its refresh is REFRESH MATERIALIZED VIEW CONCURRENTLY, so readers are never blocked. Every
replica runs the refresher; a transaction-scoped advisory lock lets one of them refresh and
the others skip that round, rather than each recomputing the whole view in turn."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool
from tiket.booking.v1 import booking_pb2 as pb

from libs.db.transaction import in_transaction, read
from libs.errors import not_found
from libs.money import to_money
from libs.periodic import Periodic
from services.booking.domain import Actor
from services.booking.messages import calendar_date

log = logging.getLogger(__name__)

VIEW = "booking_analytics_daily"
# The advisory lock (per database) of the refresh: "bkstat". Distinct from the migrations'
# (libs/db/migrations.py).
REFRESH_LOCK = 0x626B_7374_6174
# Seed 000 §3.2: "Refresh setiap 1 jam".
REFRESH_SECONDS = 3600


@dataclass(frozen=True)
class DailyStats:
    """A row of the view: one clinic's bookings made on `day` (local) for one service."""

    day: date
    service_id: uuid.UUID
    total_bookings: int
    completed_bookings: int
    cancelled_bookings: int
    no_show_bookings: int
    # Money kept: payments taken less refunds given or owed.
    total_revenue: Decimal
    # Average final amount of the day's paid bookings; None when none was paid.
    avg_booking_value: Decimal | None


# --- refresh ------------------------------------------------------------------------------


async def refresh(pool: AsyncConnectionPool) -> bool:
    """Refresh the view now, unless another session (another replica) is refreshing it:
    True when this call refreshed it, False when it skipped."""

    async def work(conn: AsyncConnection) -> bool:
        cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (REFRESH_LOCK,))
        row = await cur.fetchone()
        if not (row and row[0]):
            return False
        await conn.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {VIEW}")
        return True

    return await in_transaction(pool, work, pipeline=False)


def refresher(pool: AsyncConnectionPool, interval_seconds: float = REFRESH_SECONDS) -> Periodic:
    """The background job: a refresh at start, then every `interval_seconds`. It reports no
    count to Periodic (a positive one would make it run again at once)."""

    async def round_() -> int:
        if await refresh(pool):
            log.info("refreshed %s", VIEW)
        else:
            log.debug("%s: another replica is refreshing it; skipped", VIEW)
        return 0

    return Periodic("booking-stats-refresher", round_, interval_seconds)


# --- read ---------------------------------------------------------------------------------


async def daily(
    pool: AsyncConnectionPool,
    actor: Actor,
    clinic_id: uuid.UUID,
    first: date,
    last: date,
    service_id: uuid.UUID | None = None,
) -> list[DailyStats]:
    """The clinic's rows for the local days first..last (inclusive), of one service or all,
    by day then service. PERMISSION_DENIED unless the actor manages the clinic (before
    anything is looked up, so nothing hints whether another clinic exists); NOT_FOUND for an
    unknown clinic, or a service that is not the clinic's."""
    actor.require_clinic(clinic_id)

    async def query(conn: AsyncConnection) -> list[DailyStats]:
        cur = await conn.execute(
            """SELECT EXISTS (SELECT 1 FROM clinics WHERE clinic_id = %(clinic)s),
                      EXISTS (SELECT 1 FROM clinic_services
                               WHERE service_id = %(service)s AND clinic_id = %(clinic)s)""",
            {"clinic": clinic_id, "service": service_id},
        )
        known = await cur.fetchone()
        assert known is not None
        if not known[0]:
            raise not_found("clinic", clinic_id)
        if service_id is not None and not known[1]:
            raise not_found("service", service_id, within=f"clinic {clinic_id}")
        rows = conn.cursor(row_factory=class_row(DailyStats))
        await rows.execute(
            f"""SELECT booking_date AS day, service_id, total_bookings, completed_bookings,
                       cancelled_bookings, no_show_bookings, total_revenue, avg_booking_value
                  FROM {VIEW}
                 WHERE clinic_id = %(clinic)s AND booking_date BETWEEN %(first)s AND %(last)s
                   AND (%(service)s::uuid IS NULL OR service_id = %(service)s)
                 ORDER BY booking_date, service_id""",
            {"clinic": clinic_id, "first": first, "last": last, "service": service_id},
        )
        return await rows.fetchall()

    return await read(pool, query)


def message(row: DailyStats) -> pb.DailyClinicStats:
    """A row as tiket.booking.v1.DailyClinicStats (avg_booking_value unset when no booking
    of the day was paid)."""
    return pb.DailyClinicStats(
        date=calendar_date(row.day),
        service_id=str(row.service_id),
        total_bookings=row.total_bookings,
        completed_bookings=row.completed_bookings,
        cancelled_bookings=row.cancelled_bookings,
        no_show_bookings=row.no_show_bookings,
        total_revenue=to_money(row.total_revenue),
        avg_booking_value=(
            to_money(row.avg_booking_value) if row.avg_booking_value is not None else None
        ),
    )
