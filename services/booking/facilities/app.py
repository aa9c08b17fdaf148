"""Use cases of facility booking: each change one transaction with its audit row and its
events (BookFacility one statement); overlaps are decided by the database's exclusion
constraint. The series use cases are in series.py."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from functools import partial

from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool

from libs.db.transaction import in_statement, in_transaction, read
from libs.errors import Aborted, FailedPrecondition, PermissionDenied, found, not_found
from services.booking.domain import Actor, same_retry
from services.booking.facilities import availability, changes, store
from services.booking.facilities.availability import Interval
from services.booking.facilities.changes import APPROVED, REJECTED, UPDATED
from services.booking.facilities.domain import (
    AuditAction,
    BookingRequest,
    Facility,
    FacilityBooking,
    FacilityBookingStatus,
    OpeningWindow,
    RequestContext,
    UpdateRequest,
    check_cancellable,
    check_decidable,
    check_updatable,
    initial_status,
    is_staff,
    require_party,
    snapshot,
)
from services.booking.facilities.series import SeriesApp
from services.booking.facilities.utilization import DayUse, daily_use

# The health check's index_usage: WARN while facility_bookings is read by sequential scans
# more often than by its indexes (the seed's rule), once it has been read this often at all.
MIN_SCANS = 100
# BookFacility reads the facility again after BOOK found it changed at most this often.
BOOK_ATTEMPTS = 3
KNOWN_FACILITIES = 10_000


class Facilities:
    """The facilities as last read, by id, so that BookFacility sends one statement: BOOK
    writes only while the facility is still the version read (updated_at), so an entry that
    another replica made stale costs a read again, never a wrong booking."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self._known: dict[uuid.UUID, Facility] = {}

    async def get(self, facility_id: uuid.UUID) -> tuple[Facility, bool]:
        """The facility, and whether it was read just now."""
        known = self._known.get(facility_id)
        if known is not None:
            return known, False
        return await self.load(facility_id), True

    async def load(self, facility_id: uuid.UUID) -> Facility:
        facility = await read(self.pool, store.facility, "facility_id", facility_id)
        facility = found(facility, "facility", facility_id)
        if len(self._known) >= KNOWN_FACILITIES:
            self._known.clear()
        self._known[facility_id] = facility
        return facility

    def forget(self, facility_id: uuid.UUID) -> None:
        self._known.pop(facility_id, None)


class FacilityApp:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self.facilities = Facilities(pool)
        self.series = SeriesApp(pool)

    # --- facilities ---------------------------------------------------------------------

    async def create_facility(
        self, actor: Actor, fields: dict[str, object], request_id: str | None
    ) -> Facility:
        async def work(conn: AsyncConnection) -> Facility:
            made = await store.insert_facility(conn, fields, request_id, actor.label)
            if made is not None:
                return made
            first = await store.facility(conn, "request_id", request_id)
            assert first is not None and request_id is not None
            same_retry(asdict(first), fields, "a facility", request_id)
            return first

        return await in_transaction(self.pool, work, pipeline=False)

    async def set_hours(self, facility_id: uuid.UUID, windows: Sequence[OpeningWindow]) -> Facility:
        self.facilities.forget(facility_id)

        async def work(conn: AsyncConnection) -> Facility:
            if not await store.replace_hours(conn, facility_id, windows):
                raise not_found("facility", facility_id)
            return found(await store.facility(conn, "facility_id", facility_id), "facility")

        return await in_transaction(self.pool, work, pipeline=False)

    async def get_facility(self, facility_id: uuid.UUID) -> Facility:
        facility = await read(self.pool, store.facility, "facility_id", facility_id)
        return found(facility, "facility", facility_id)

    async def list_facilities(
        self, active_only: bool, after: store.After, limit: int
    ) -> list[Facility]:
        return await read(self.pool, store.list_facilities, active_only, after, limit)

    async def free_windows(
        self, facility_id: uuid.UUID, start: datetime, end: datetime, min_length: timedelta
    ) -> tuple[Facility, list[Interval]]:
        """The facility and its free windows in [start, end): its hours and the bookings that
        overlap the range, read on one connection, computed here."""

        async def query(conn: AsyncConnection) -> tuple[Facility, list[Interval]]:
            facility = found(
                await store.facility(conn, "facility_id", facility_id), f"facility {facility_id}"
            )
            busy = await store.holding(conn, facility_id, start, end)
            open_time = availability.open_intervals(facility.hours, facility.zone, start, end)
            free = availability.free_windows(
                open_time, busy, not_before=datetime.now(UTC), min_length=min_length
            )
            return facility, free

        return await read(self.pool, query)

    # --- bookings -----------------------------------------------------------------------

    async def book(
        self, actor: Actor, asked: BookingRequest, context: RequestContext
    ) -> FacilityBooking:
        """One statement, BOOK, checked against the facility as last read; the facility is
        read again where it is not known yet, where it refuses (it may have changed since),
        and where BOOK finds it changed."""
        facility, fresh = await self.facilities.get(asked.facility_id)
        for _ in range(BOOK_ATTEMPTS):
            refused = changes.refusal(
                facility, asked.attendee_count, asked.start_time, asked.end_time
            )
            if refused is None:
                work = partial(_book, actor=actor, asked=asked, facility=facility, context=context)
                if (booked := await in_statement(self.pool, work)) is not None:
                    return booked
            elif fresh:
                return await read(self.pool, _prior_or, asked, refused)
            facility, fresh = await self.facilities.load(asked.facility_id), True
        raise Aborted("the facility kept changing while it was being booked; retry")

    async def get_booking(
        self, actor: Actor, booking_id: uuid.UUID, asked_for: uuid.UUID | None
    ) -> tuple[FacilityBooking, Facility]:
        async def query(conn: AsyncConnection) -> tuple[FacilityBooking, Facility]:
            booking = found(await store.booking(conn, booking_id), "facility booking", booking_id)
            require_party(actor, booking, asked_for)
            facility = await store.facility(conn, "facility_id", booking.facility_id)
            return booking, found(facility, "facility")

        return await read(self.pool, query)

    async def cancel(
        self,
        actor: Actor,
        booking_id: uuid.UUID,
        asked_for: uuid.UUID | None,
        reason: str | None,
        context: RequestContext,
    ) -> tuple[FacilityBooking, Facility]:
        """By its user (cancelled) or staff (admin_cancelled, with a reason)."""

        async def work(conn: AsyncConnection) -> tuple[FacilityBooking, Facility]:
            booking = await self._locked(conn, actor, booking_id, asked_for)
            facility = found(
                await store.facility(conn, "facility_id", booking.facility_id),
                "facility",
                booking.facility_id,
            )
            if not check_cancellable(booking, datetime.now(UTC)):
                return booking, facility
            changed = await changes.cancel(conn, actor, booking, facility, reason, context)
            return changed, facility

        return await in_transaction(self.pool, work, pipeline=False)

    async def decide(
        self,
        actor: Actor,
        booking_id: uuid.UUID,
        to: FacilityBookingStatus,
        reason: str | None,
        context: RequestContext,
    ) -> tuple[FacilityBooking, Facility]:
        """Staff approve (to CONFIRMED) or reject (to REJECTED) a pending booking."""
        if not is_staff(actor):
            raise PermissionDenied("only facility staff approve or reject bookings")

        async def work(conn: AsyncConnection) -> tuple[FacilityBooking, Facility]:
            booking = await self._locked(conn, actor, booking_id, None)
            facility = found(
                await store.facility(conn, "facility_id", booking.facility_id),
                "facility",
                booking.facility_id,
            )
            if not check_decidable(booking, to, datetime.now(UTC)):
                return booking, facility
            changed = await store.set_status(conn, booking_id, to, actor.label, reason)
            approved = to is FacilityBookingStatus.CONFIRMED
            action = AuditAction.APPROVED if approved else AuditAction.REJECTED
            await store.audit(
                conn, booking_id, action, snapshot(booking), snapshot(changed), actor.label, context
            )
            kind = APPROVED if approved else REJECTED
            await changes.announce(conn, kind, changed, facility, actor, reason or "")
            return changed, facility

        return await in_transaction(self.pool, work, pipeline=False)

    async def update(
        self, actor: Actor, asked: UpdateRequest, context: RequestContext
    ) -> tuple[FacilityBooking, Facility]:
        """Move or resize a booking under BookFacility's rules, in one transaction: the booking
        is locked, the exclusion constraint decides overlaps with the other bookings."""

        async def work(conn: AsyncConnection) -> tuple[FacilityBooking, Facility]:
            booking = await self._locked(conn, actor, asked.booking_id, asked.user_id)
            facility = found(
                await store.facility(conn, "facility_id", booking.facility_id, lock=True), ""
            )
            attendees = asked.attendee_count or booking.attendee_count
            wanted = (asked.start_time, asked.end_time, attendees)
            if (booking.start_time, booking.end_time, booking.attendee_count) == wanted:
                return booking, facility  # a retry, or nothing to change
            check_updatable(booking, datetime.now(UTC))
            if refused := changes.refusal(facility, attendees, asked.start_time, asked.end_time):
                raise refused
            # A user's change of a confirmed booking of a facility that needs approval is no
            # longer what staff approved: it waits for their approval again.
            status = (
                booking.status
                if booking.status is FacilityBookingStatus.PENDING
                else initial_status(facility, actor)
            )
            try:
                async with conn.transaction():
                    changed = await store.move(conn, booking.id, *wanted, status)
            except errors.ExclusionViolation:
                conflict = await changes.conflict(
                    conn, facility, asked.start_time, asked.end_time, besides=booking.id
                )
                raise conflict or changes.race() from None
            await store.audit(
                conn,
                booking.id,
                AuditAction.UPDATED,
                snapshot(booking),
                snapshot(changed),
                actor.label,
                context,
            )
            await changes.announce(conn, UPDATED, changed, facility, actor, previous=booking)
            return changed, facility

        return await in_transaction(self.pool, work, pipeline=False)

    async def calendar(
        self, facility_id: uuid.UUID, start: datetime, end: datetime
    ) -> tuple[Facility, list[FacilityBooking]]:
        async def query(conn: AsyncConnection) -> tuple[Facility, list[FacilityBooking]]:
            facility = found(
                await store.facility(conn, "facility_id", facility_id), f"facility {facility_id}"
            )
            return facility, await store.calendar(conn, facility_id, start, end)

        return await read(self.pool, query)

    async def utilization(
        self, facility_id: uuid.UUID | None, start: datetime, end: datetime
    ) -> list[tuple[Facility, list[DayUse]]]:
        """Per facility (one, or every active one) per local day: the facilities and their
        hours, then the confirmed bookings of all of them in one query; the days in Python."""

        async def query(conn: AsyncConnection) -> list[tuple[Facility, list[DayUse]]]:
            chosen = await store.facilities_with_hours(conn, facility_id)
            if facility_id is not None and not chosen:
                raise not_found("facility", facility_id)
            if not chosen:
                return []
            # Whole local days: from the earliest zone's midnight to the latest one's.
            lo, hi = start - timedelta(days=1), end + timedelta(days=1)
            booked: dict[uuid.UUID, list[Interval]] = {}
            for owner, begin, finish in await store.confirmed_ranges(
                conn, [f.id for f in chosen], lo, hi
            ):
                booked.setdefault(owner, []).append((begin, finish))
            return [
                (f, daily_use(f.hours, f.zone, start, end, booked.get(f.id, []))) for f in chosen
            ]

        return await read(self.pool, query)

    async def health(self) -> list[tuple[str, str, int]]:
        """(check, PASS/WARN/FAIL, value): the seed's booking_conflicts and index_usage."""

        async def query(conn: AsyncConnection) -> list[tuple[str, str, int]]:
            conflicting = await store.conflict_count(conn)
            index_scans, seq_scans = await store.scan_counts(conn)
            preferred = index_scans >= seq_scans or index_scans + seq_scans < MIN_SCANS
            return [
                ("booking_conflicts", "PASS" if conflicting == 0 else "FAIL", conflicting),
                ("index_usage", "PASS" if preferred else "WARN", index_scans - seq_scans),
            ]

        return await read(self.pool, query)

    async def upcoming(
        self, user_id: uuid.UUID, after: store.After, limit: int
    ) -> list[FacilityBooking]:
        return await read(self.pool, store.upcoming, user_id, datetime.now(UTC), after, limit)

    async def zones(self, bookings: Sequence[FacilityBooking]) -> dict[uuid.UUID, str]:
        """The time zone of each booking's facility."""

        async def query(conn: AsyncConnection) -> dict[uuid.UUID, str]:
            cur = await conn.execute(
                "SELECT facility_id, time_zone FROM facilities WHERE facility_id = ANY(%s)",
                ([b.facility_id for b in bookings],),
            )
            return {row[0]: row[1] for row in await cur.fetchall()}

        return await read(self.pool, query) if bookings else {}

    async def _locked(
        self,
        conn: AsyncConnection,
        actor: Actor,
        booking_id: uuid.UUID,
        asked_for: uuid.UUID | None,
    ) -> FacilityBooking:
        booking = await store.booking(conn, booking_id, lock=True)
        booking = found(booking, "facility booking", booking_id)
        require_party(actor, booking, asked_for)
        return booking


def _retried(first: FacilityBooking, asked: BookingRequest) -> FacilityBooking:
    assert asked.request_id is not None
    same_retry(asdict(first), asked.asked(), "a facility booking", asked.request_id)
    return first


async def _book(
    conn: AsyncConnection,
    *,
    actor: Actor,
    asked: BookingRequest,
    facility: Facility,
    context: RequestContext,
) -> FacilityBooking | None:
    """BOOK on an autocommit connection: the new booking, or the one its request_id made;
    TIME_CONFLICT where booking_no_overlap refused it; None where the facility changed since
    it was read."""
    draft = changes.draft(asked, facility, actor)
    made = await changes.create(conn, draft, facility, actor, context)
    if isinstance(made, FacilityBooking):
        return made if made.id == draft.id else _retried(made, asked)
    if made is not None:
        raise made
    if asked.request_id is not None and (
        first := await store.booking_by_request(conn, asked.user_id, asked.request_id)
    ):
        return _retried(first, asked)  # a concurrent request under the same request_id won
    if conflict := await changes.conflict(conn, facility, asked.start_time, asked.end_time):
        raise conflict
    return None


async def _prior_or(
    conn: AsyncConnection, asked: BookingRequest, refused: FailedPrecondition
) -> FacilityBooking:
    """The booking asked's request_id made before (a retry is answered whatever the facility
    is now), else `refused`."""
    if asked.request_id is not None and (
        first := await store.booking_by_request(conn, asked.user_id, asked.request_id)
    ):
        return _retried(first, asked)
    raise refused
