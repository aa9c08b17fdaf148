"""Use cases of facility booking: each change one transaction with its audit row and its
events; overlaps are decided by the database's exclusion constraint."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool
from tiket.events.v1 import facility_pb2 as events_pb2

from libs.db.transaction import in_transaction, read
from libs.errors import Aborted, NotFound, PermissionDenied
from libs.timestamps import to_timestamp
from services.booking import events
from services.booking.domain import Actor, found, same_retry
from services.booking.facilities import availability, store
from services.booking.facilities.availability import Interval
from services.booking.facilities.domain import (
    AuditAction,
    BookingRequest,
    Facility,
    FacilityBooking,
    FacilityBookingStatus,
    OpeningWindow,
    RequestContext,
    UpdateRequest,
    check_bookable,
    check_cancellable,
    check_decidable,
    check_updatable,
    closed_refusal,
    conflict_refusal,
    initial_status,
    is_staff,
    require_party,
    snapshot,
)
from services.booking.facilities.utilization import DayUse, daily_use

AGGREGATE = "facility_booking"
CREATED = events.Kind("FacilityBookingCreated", "facility.booking_created", AGGREGATE)
CANCELLED = events.Kind("FacilityBookingCancelled", "facility.booking_cancelled", AGGREGATE)
APPROVED = events.Kind("FacilityBookingApproved", "facility.booking_approved", AGGREGATE)
REJECTED = events.Kind("FacilityBookingRejected", "facility.booking_rejected", AGGREGATE)
UPDATED = events.Kind("FacilityBookingUpdated", "facility.booking_updated", AGGREGATE)
# The health check's index_usage: WARN while facility_bookings is read by sequential scans
# more often than by its indexes (the seed's rule), once it has been read this often at all.
MIN_SCANS = 100


class FacilityApp:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

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
        async def work(conn: AsyncConnection) -> Facility:
            if not await store.replace_hours(conn, facility_id, windows):
                raise NotFound(f"facility {facility_id} not found")
            return found(await store.facility(conn, "facility_id", facility_id), "facility")

        return await in_transaction(self.pool, work, pipeline=False)

    async def get_facility(self, facility_id: uuid.UUID) -> Facility:
        facility = await read(self.pool, store.facility, "facility_id", facility_id)
        return found(facility, f"facility {facility_id}")

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
        async def work(conn: AsyncConnection) -> FacilityBooking:
            if asked.request_id is not None and (
                first := await store.booking_by_request(conn, asked.user_id, asked.request_id)
            ):
                return _retried(first, asked)
            facility = found(
                await store.facility(conn, "facility_id", asked.facility_id, lock=True),
                f"facility {asked.facility_id}",
            )
            check_bookable(facility, asked.attendee_count)
            if not availability.is_open(
                facility.hours, facility.zone, asked.start_time, asked.end_time
            ):
                raise closed_refusal(
                    facility, asked.start_time, asked.end_time, list(facility.hours)
                )
            status = initial_status(facility, actor)
            try:
                async with conn.transaction():
                    made = await store.insert_booking(conn, asked, status, actor.label)
            except errors.ExclusionViolation:
                raise await _conflict(conn, facility, asked.start_time, asked.end_time) from None
            if made is None:  # a concurrent retry under the same request_id won
                first = await store.booking_by_request(conn, asked.user_id, str(asked.request_id))
                return _retried(found(first, "facility booking"), asked)
            await store.audit(
                conn, made.id, AuditAction.CREATED, None, snapshot(made), actor.label, context
            )
            await _announce(conn, CREATED, made, facility, actor)
            return made

        return await in_transaction(self.pool, work, pipeline=False)

    async def get_booking(
        self, actor: Actor, booking_id: uuid.UUID, asked_for: uuid.UUID | None
    ) -> tuple[FacilityBooking, Facility]:
        async def query(conn: AsyncConnection) -> tuple[FacilityBooking, Facility]:
            booking = found(await store.booking(conn, booking_id), f"facility booking {booking_id}")
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
            facility = found(await store.facility(conn, "facility_id", booking.facility_id), "")
            if not check_cancellable(booking, datetime.now(UTC)):
                return booking, facility
            staff = is_staff(actor) and str(booking.user_id) != actor.subject
            action = AuditAction.ADMIN_CANCELLED if staff else AuditAction.CANCELLED
            changed = await store.set_status(
                conn, booking_id, FacilityBookingStatus.CANCELLED, actor.label, reason
            )
            await store.audit(
                conn, booking_id, action, snapshot(booking), snapshot(changed), actor.label, context
            )
            await _announce(conn, CANCELLED, changed, facility, actor, reason or "")
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
            facility = found(await store.facility(conn, "facility_id", booking.facility_id), "")
            if not check_decidable(booking, to):
                return booking, facility
            changed = await store.set_status(conn, booking_id, to, actor.label, reason)
            approved = to is FacilityBookingStatus.CONFIRMED
            action = AuditAction.APPROVED if approved else AuditAction.REJECTED
            await store.audit(
                conn, booking_id, action, snapshot(booking), snapshot(changed), actor.label, context
            )
            kind = APPROVED if approved else REJECTED
            await _announce(conn, kind, changed, facility, actor, reason or "")
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
            check_bookable(facility, attendees)
            if not availability.is_open(
                facility.hours, facility.zone, asked.start_time, asked.end_time
            ):
                raise closed_refusal(
                    facility, asked.start_time, asked.end_time, list(facility.hours)
                )
            try:
                async with conn.transaction():
                    changed = await store.move(conn, booking.id, *wanted)
            except errors.ExclusionViolation:
                raise await _conflict(
                    conn, facility, asked.start_time, asked.end_time, besides=booking.id
                ) from None
            await store.audit(
                conn,
                booking.id,
                AuditAction.UPDATED,
                snapshot(booking),
                snapshot(changed),
                actor.label,
                context,
            )
            await _announce(conn, UPDATED, changed, facility, actor, previous=booking)
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
                raise NotFound(f"facility {facility_id} not found")
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
        booking = found(booking, f"facility booking {booking_id}")
        require_party(actor, booking, asked_for)
        return booking


def _retried(first: FacilityBooking, asked: BookingRequest) -> FacilityBooking:
    assert asked.request_id is not None
    same_retry(asdict(first), asked.asked(), "a facility booking", asked.request_id)
    return first


async def _conflict(
    conn: AsyncConnection,
    facility: Facility,
    start: datetime,
    end: datetime,
    *,
    besides: uuid.UUID | None = None,
) -> Exception:
    """TIME_CONFLICT naming the booking (other than `besides`) the asked range met; ABORTED
    when it is gone again."""
    busy = await store.holding(conn, facility.id, start, end, besides=besides)
    if not busy:
        return Aborted("a concurrent change of this facility's bookings; retry")
    return conflict_refusal(facility, *busy[0])


async def _announce(
    conn: AsyncConnection,
    kind: events.Kind,
    booking: FacilityBooking,
    facility: Facility,
    actor: Actor,
    reason: str = "",
    *,
    previous: FacilityBooking | None = None,
) -> None:
    data = events_pb2.FacilityBookingChanged(
        booking_id=str(booking.id),
        facility_id=str(facility.id),
        facility_name=facility.name,
        user_id=str(booking.user_id),
        start_time=to_timestamp(booking.start_time),
        end_time=to_timestamp(booking.end_time),
        time_zone=facility.time_zone,
        status=booking.status,
        title=booking.title,
        attendee_count=booking.attendee_count,
        created_by=booking.created_by,
        changed_by=actor.label,
        reason=reason,
    )
    if previous is not None:
        data.previous_start_time.CopyFrom(to_timestamp(previous.start_time))
        data.previous_end_time.CopyFrom(to_timestamp(previous.end_time))
    await events.record(conn, [events.stage(kind, booking.id, data, actor)])
