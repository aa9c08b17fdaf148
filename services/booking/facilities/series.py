"""Recurring series of facility bookings: BookFacilitySeries and CancelFacilitySeries. Each
occurrence is an ordinary booking, made by BOOK as BookFacility makes one and cancelled as
CancelFacilityBooking cancels one; all of a series in one transaction."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from libs.db.transaction import in_transaction
from libs.errors import FailedPrecondition, found
from services.booking.domain import Actor, same_retry
from services.booking.facilities import changes, recurrence, series_store, store
from services.booking.facilities.domain import (
    HOLDING,
    Facility,
    FacilityBooking,
    FacilityBookingStatus,
    FacilitySeries,
    RequestContext,
    SeriesRequest,
    check_bookable,
    require_party,
)
from services.booking.facilities.recurrence import Occurrence


@dataclass(frozen=True)
class BookedSeries:
    series: FacilitySeries
    facility: Facility
    bookings: list[FacilityBooking]


class SeriesApp:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def book(
        self, actor: Actor, asked: SeriesRequest, context: RequestContext
    ) -> BookedSeries:
        """The facility locked FOR SHARE, the series row (its unique (user_id, request_id)
        makes a concurrent retry wait, then answer the first result), then each occurrence
        in order: all of them, or with skip_conflicts those that can be booked."""

        async def work(conn: AsyncConnection) -> BookedSeries:
            first = asked.first
            facility = await store.facility(conn, "facility_id", first.facility_id, lock=True)
            facility = found(facility, "facility", first.facility_id)
            series_id = uuid.uuid4()
            if not await series_store.insert_series(conn, series_id, _series_row(asked, actor)):
                return await _retried(conn, asked, facility)
            check_bookable(facility, first.attendee_count)
            occurrences = recurrence.expand(
                asked.rrule, first.start_time, first.end_time, facility.zone, asked.latest
            )
            booked, skipped = await _book_all(
                conn, actor, asked, facility, occurrences, series_id, context
            )
            if skipped:
                await series_store.set_skipped(conn, series_id, skipped)
            series = found(await series_store.series(conn, series_id), "facility series")
            return BookedSeries(series, facility, booked)

        return await in_transaction(self.pool, work, pipeline=False)

    async def cancel(
        self,
        actor: Actor,
        series_id: uuid.UUID,
        asked_for: uuid.UUID | None,
        since: datetime | None,
        reason: str | None,
        context: RequestContext,
    ) -> tuple[list[FacilityBooking], Facility]:
        """Cancel the series' occurrences holding time that start at or after `since` (at the
        earliest now); answer its occurrences from then on that are cancelled."""

        async def work(conn: AsyncConnection) -> tuple[list[FacilityBooking], Facility]:
            series = found(
                await series_store.series(conn, series_id, lock=True), "facility series", series_id
            )
            require_party(actor, series, asked_for, "facility series")
            facility = found(
                await store.facility(conn, "facility_id", series.facility_id),
                "facility",
                series.facility_id,
            )
            now = datetime.now(UTC)
            start = max(since or now, now)
            cancelled: list[FacilityBooking] = []
            for booking in await series_store.series_bookings(conn, series_id, start, lock=True):
                if booking.status in HOLDING:
                    booking = await changes.cancel(conn, actor, booking, facility, reason, context)
                if booking.status is FacilityBookingStatus.CANCELLED:
                    cancelled.append(booking)
            return cancelled, facility

        return await in_transaction(self.pool, work, pipeline=False)


async def _book_all(
    conn: AsyncConnection,
    actor: Actor,
    asked: SeriesRequest,
    facility: Facility,
    occurrences: list[Occurrence],
    series_id: uuid.UUID,
    context: RequestContext,
) -> tuple[list[FacilityBooking], list[dict[str, str]]]:
    """The occurrences booked and those skipped; the refusal of the first that cannot be
    booked unless skip_conflicts, or when none can."""
    booked: list[FacilityBooking] = []
    skipped: list[dict[str, str]] = []
    first_refusal: FailedPrecondition | None = None
    for number, occurrence in enumerate(occurrences, 1):
        made = await _book_one(conn, actor, asked, facility, occurrence, series_id, context)
        if isinstance(made, FacilityBooking):
            booked.append(made)
            continue
        refusal = recurrence.occurrence_refusal(number, occurrence, facility.zone, made)
        if not asked.skip_conflicts:
            raise refusal
        first_refusal = first_refusal or refusal
        skipped.append(occurrence.as_json(facility.zone, made.reason))
    if not booked:
        assert first_refusal is not None  # expand() yields at least one occurrence
        raise FailedPrecondition(
            first_refusal.reason, f"no occurrence can be booked; {first_refusal.message}"
        )
    return booked, skipped


async def _book_one(
    conn: AsyncConnection,
    actor: Actor,
    asked: SeriesRequest,
    facility: Facility,
    occurrence: Occurrence,
    series_id: uuid.UUID,
    context: RequestContext,
) -> FacilityBooking | FailedPrecondition:
    """The occurrence booked, or why it cannot be (a clock change skips its start, the
    facility is closed, or it overlaps a booking: the exclusion constraint decides)."""
    if not occurrence.exists:
        return recurrence.gap_refusal(occurrence, facility.zone)
    start, end = occurrence.start, occurrence.end
    if refused := changes.refusal(facility, asked.first.attendee_count, start, end):
        return refused
    one = replace(asked.first, start_time=start, end_time=end, request_id=None)
    made = await changes.create(
        conn, changes.draft(one, facility, actor, series_id), facility, actor, context
    )
    if made is not None:
        return made
    # The facility is locked FOR SHARE since it was read: BOOK met an overlap it did not see.
    conflict = await changes.conflict(conn, facility, start, end)
    if conflict is None:
        raise changes.race()
    return conflict


async def _retried(conn: AsyncConnection, asked: SeriesRequest, facility: Facility) -> BookedSeries:
    """The series its request_id made (of `facility`): the retry must ask for the same."""
    first = asked.first
    assert first.request_id is not None
    series = await series_store.series_by_request(conn, first.user_id, first.request_id)
    series = found(series, "facility series")
    same_retry(asdict(series), asked.asked(), "a facility series", first.request_id)
    bookings = await series_store.series_bookings(conn, series.id, series.start_time)
    return BookedSeries(series, facility, bookings)


def _series_row(asked: SeriesRequest, actor: Actor) -> dict[str, object]:
    first = asked.first
    return {
        "facility_id": first.facility_id,
        "user_id": first.user_id,
        "rrule": asked.rrule,
        "start_time": first.start_time,
        "end_time": first.end_time,
        "title": first.title,
        "attendee_count": first.attendee_count,
        "skip_conflicts": asked.skip_conflicts,
        "request_id": first.request_id,
        "created_by": actor.label,
    }
