"""The booking service's business gauges, refreshed every minute beside the server: clinic
bookings by status and upcoming facility bookings by status (the dashboard's "bookings by
status"), and seed 003's conflict monitor — facility bookings holding time that overlaps
another's, which the exclusion constraint keeps at 0 (the FacilityBookingConflict alert
fires otherwise).

Counted with sequential scans turned off: CheckFacilityHealth's index_usage check warns when
facility_bookings is read by sequential scans more than by its indexes, and the monitor must
not be the reader that makes it warn. Every replica counts (the numbers are the database's,
the same everywhere): dashboards take the max over pods."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from prometheus_client import Gauge
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from libs.periodic import Periodic
from libs.server.metrics import GAUGES_REFRESHED
from services.booking.domain import BookingStatus
from services.booking.facilities import store as facility_store
from services.booking.facilities.domain import FacilityBookingStatus

INTERVAL_SECONDS = 60.0
# seed 003's window: conflicts among the bookings of the last 7 days (and those to come).
CONFLICT_WINDOW = timedelta(days=7)

BOOKINGS = Gauge(
    "tiket_bookings",
    "Clinic bookings by current status, counted every minute.",
    ("status",),
    multiprocess_mode="livemax",
)
FACILITY_BOOKINGS = Gauge(
    "tiket_facility_bookings_upcoming",
    "Facility bookings starting from now on, by status (confirmed, pending approval, "
    "rejected; cancelled ones are not counted), counted every minute.",
    ("status",),
    multiprocess_mode="livemax",
)
FACILITY_CONFLICTS = Gauge(
    "tiket_facility_booking_conflicts",
    "Facility bookings (confirmed or pending) ending in the last 7 days or later whose time "
    "overlaps another's at the same facility: seed 003's conflict monitor, 0 while the "
    "booking_no_overlap constraint holds.",
    multiprocess_mode="livemax",
)

# Each count reads an index (bookings_status_idx; facility_bookings_status_time_idx, which
# leaves cancelled bookings out).
_BY_STATUS = (
    (BOOKINGS, "SELECT status, count(*) FROM bookings GROUP BY status", list(BookingStatus)),
    (
        FACILITY_BOOKINGS,
        """SELECT status, count(*) FROM facility_bookings
            WHERE status <> 'cancelled' AND start_time >= now() GROUP BY status""",
        [s for s in FacilityBookingStatus if s != FacilityBookingStatus.CANCELLED],
    ),
)


@dataclass(frozen=True)
class Counts:
    by_status: list[dict[str, int]]  # per gauge of _BY_STATUS: status -> bookings, all known
    conflicts: int


def refresher(pool: AsyncConnectionPool, interval: float = INTERVAL_SECONDS) -> Periodic:
    """A job refreshing tiket_bookings, tiket_facility_bookings_upcoming and
    tiket_facility_booking_conflicts."""
    refreshed = GAUGES_REFRESHED.labels("booking", "bookings")

    async def observe() -> int:
        async with pool.connection() as conn, conn.transaction():
            counts = await count(conn)
        for (gauge, _, _), by_status in zip(_BY_STATUS, counts.by_status, strict=True):
            for status, bookings in by_status.items():
                gauge.labels(status).set(bookings)
        FACILITY_CONFLICTS.set(counts.conflicts)
        refreshed.set_to_current_time()
        return 0

    return Periodic("booking-gauges", observe, interval)


async def count(conn: AsyncConnection) -> Counts:
    """The gauges' values, read by index only; `conn` must be in a transaction."""
    await conn.execute("SET LOCAL enable_seqscan = off")
    by_status = []
    for _, query, statuses in _BY_STATUS:
        found = dict(await (await conn.execute(query)).fetchall())
        # A status with no booking left reads 0, not its last value.
        by_status.append({status.value: found.get(status.value, 0) for status in statuses})
    return Counts(by_status, await facility_store.conflict_count(conn, CONFLICT_WINDOW))
