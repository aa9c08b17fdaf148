"""tiket.booking.v1.FacilityService: proto <-> domain, input validation, the request context
of the audit log."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from grpc import aio
from tiket.booking.v1 import facility_pb2 as pb
from tiket.booking.v1 import facility_pb2_grpc

from libs import paging, tracing
from libs.auth import current_principal
from libs.errors import InvalidArgument
from libs.server.ratelimit import Network, client_address
from libs.validation import (
    int_field,
    key_field,
    optional_uuid_field,
    required_text_field,
    text_field,
    time_id_token_field,
    time_zone_field,
    timestamp_field,
    uuid_field,
    within,
)
from services.booking.domain import Actor
from services.booking.facilities import messages, recurrence
from services.booking.facilities.app import FacilityApp
from services.booking.facilities.availability import on_step
from services.booking.facilities.domain import (
    MAX_ATTENDEES,
    MAX_LENGTH,
    BookingRequest,
    FacilityBookingStatus,
    OpeningWindow,
    RequestContext,
    SeriesRequest,
    UpdateRequest,
    is_staff,
)

DEFAULT_TIME_ZONE = "Asia/Jakarta"
NAME_LENGTH = 255
TEXT_LENGTH = 2000
REASON_LENGTH = 1000
URL_LENGTH = 500
MAX_WINDOWS = 50
SEARCH_MAX = timedelta(days=31)
# Bookings and searches at most this far ahead (a calendar, and no date near year 9999).
AHEAD = timedelta(days=731)
LIST_LIMIT = 50  # the seed's LIMIT 50
DAY_MINUTES = 1440


def _actor() -> Actor:
    return Actor.of(current_principal())


def _request_id(value: str) -> str | None:
    return key_field(value, "request_id") if value else None


class FacilityApi(facility_pb2_grpc.FacilityServiceServicer):
    def __init__(self, app: FacilityApp, trusted_proxies: Sequence[Network] = ()) -> None:
        self.app = app
        self.trusted_proxies = tuple(trusted_proxies)

    def _context(self, context: aio.ServicerContext) -> RequestContext:
        """Request id, client address (x-forwarded-for only from a trusted proxy), user agent."""
        metadata = context.invocation_metadata() or ()
        forwarded = [str(v) for k, v in metadata if k == "x-forwarded-for"]
        agents = [str(v) for k, v in metadata if k == "user-agent"]
        address = client_address(context.peer(), forwarded, self.trusted_proxies)
        return RequestContext(
            request_id=tracing.current_request_id() or None,
            ip_address=None if address is None else str(address),
            user_agent=agents[0][:500] if agents else None,
        )

    # --- facilities ---------------------------------------------------------------------

    async def CreateFacility(self, request: pb.CreateFacilityRequest, context: aio.ServicerContext):
        fields: dict[str, object] = {
            "name": required_text_field(request.name, "name", max_len=NAME_LENGTH),
            "location": text_field(request.location, "location", max_len=TEXT_LENGTH),
            "capacity": int_field(request.capacity, "capacity", 1, MAX_ATTENDEES),
            "time_zone": time_zone_field(request.time_zone or DEFAULT_TIME_ZONE).key,
            "requires_approval": request.requires_approval,
            "is_active": not request.inactive,
        }
        made = await self.app.create_facility(_actor(), fields, _request_id(request.request_id))
        return messages.facility(made)

    async def SetFacilityHours(
        self, request: pb.SetFacilityHoursRequest, context: aio.ServicerContext
    ):
        facility_id = uuid_field(request.facility_id, "facility_id")
        windows = _windows(request.hours)
        return messages.facility(await self.app.set_hours(facility_id, windows))

    async def GetFacility(self, request: pb.GetFacilityRequest, context: aio.ServicerContext):
        facility_id = uuid_field(request.facility_id, "facility_id")
        return messages.facility(await self.app.get_facility(facility_id))

    async def ListFacilities(self, request: pb.ListFacilitiesRequest, context: aio.ServicerContext):
        limit = int_field(request.page_size, "page_size", 0, 100) or LIST_LIMIT
        after = time_id_token_field(request.page_token)
        found = await self.app.list_facilities(request.active_only, after, limit + 1)
        token = ""
        if len(found) > limit:
            found = found[:limit]
            token = paging.encode(found[-1].created_at.isoformat(), str(found[-1].id))
        return pb.ListFacilitiesResponse(
            facilities=[messages.facility(f) for f in found], next_page_token=token
        )

    async def SearchFacilityAvailability(
        self, request: pb.SearchFacilityAvailabilityRequest, context: aio.ServicerContext
    ):
        facility_id = uuid_field(request.facility_id, "facility_id")
        start, end = _range(request)
        minutes = request.min_duration_minutes or 15
        if not 15 <= minutes <= DAY_MINUTES or minutes % 15:
            raise InvalidArgument.field(
                "min_duration_minutes", "must be 15..1440 in steps of 15 (0 = 15)"
            )
        facility, free = await self.app.free_windows(
            facility_id, start, end, timedelta(minutes=minutes)
        )
        zone = facility.zone
        return pb.SearchFacilityAvailabilityResponse(
            facility_id=str(facility.id),
            time_zone=facility.time_zone,
            windows=[messages.free_window(w, zone) for w in free],
        )

    # --- bookings -----------------------------------------------------------------------

    async def BookFacility(self, request: pb.BookFacilityRequest, context: aio.ServicerContext):
        asked = _booking_request(request)
        made = await self.app.book(_actor(), asked, self._context(context))
        zone = await self.app.zones([made])
        return messages.booking(made, zone.get(made.facility_id, ""))

    async def GetFacilityBooking(
        self, request: pb.GetFacilityBookingRequest, context: aio.ServicerContext
    ):
        booking_id = uuid_field(request.booking_id, "booking_id")
        asked_for = optional_uuid_field(request.user_id, "user_id")
        booking, facility = await self.app.get_booking(_actor(), booking_id, asked_for)
        return messages.booking(booking, facility.time_zone)

    async def CancelFacilityBooking(
        self, request: pb.CancelFacilityBookingRequest, context: aio.ServicerContext
    ):
        booking_id = uuid_field(request.booking_id, "booking_id")
        asked_for = optional_uuid_field(request.user_id, "user_id")
        actor = _actor()
        reason = text_field(
            request.reason, "reason", max_len=REASON_LENGTH, required=is_staff(actor)
        )
        booking, facility = await self.app.cancel(
            actor, booking_id, asked_for, reason, self._context(context)
        )
        return messages.booking(booking, facility.time_zone)

    async def ListMyFacilityBookings(
        self, request: pb.ListMyFacilityBookingsRequest, context: aio.ServicerContext
    ):
        user_id = uuid_field(request.user_id, "user_id")
        limit = int_field(request.page_size, "page_size", 0, LIST_LIMIT) or LIST_LIMIT
        after = time_id_token_field(request.page_token)
        found = await self.app.upcoming(user_id, after, limit + 1)
        token = ""
        if len(found) > limit:
            found = found[:limit]
            token = paging.encode(found[-1].start_time.isoformat(), str(found[-1].id))
        zones = await self.app.zones(found)
        return pb.ListMyFacilityBookingsResponse(
            bookings=[messages.booking(b, zones.get(b.facility_id, "")) for b in found],
            next_page_token=token,
        )

    async def ApproveFacilityBooking(
        self, request: pb.DecideFacilityBookingRequest, context: aio.ServicerContext
    ):
        return await self._decide(request, context, FacilityBookingStatus.CONFIRMED)

    async def RejectFacilityBooking(
        self, request: pb.DecideFacilityBookingRequest, context: aio.ServicerContext
    ):
        return await self._decide(request, context, FacilityBookingStatus.REJECTED)

    async def _decide(
        self,
        request: pb.DecideFacilityBookingRequest,
        context: aio.ServicerContext,
        to: FacilityBookingStatus,
    ) -> pb.FacilityBooking:
        booking_id = uuid_field(request.booking_id, "booking_id")
        rejecting = to is FacilityBookingStatus.REJECTED
        reason = text_field(request.reason, "reason", max_len=REASON_LENGTH, required=rejecting)
        booking, facility = await self.app.decide(
            _actor(), booking_id, to, reason, self._context(context)
        )
        return messages.booking(booking, facility.time_zone)

    async def UpdateFacilityBooking(
        self, request: pb.UpdateFacilityBookingRequest, context: aio.ServicerContext
    ):
        asked = UpdateRequest(
            booking_id=uuid_field(request.booking_id, "booking_id"),
            user_id=optional_uuid_field(request.user_id, "user_id"),
            **_bookable_range(request),
            attendee_count=int_field(request.attendee_count, "attendee_count", 0, MAX_ATTENDEES)
            or None,
        )
        _request_id(request.request_id)
        booking, facility = await self.app.update(_actor(), asked, self._context(context))
        return messages.booking(booking, facility.time_zone)

    # --- calendar and reports -----------------------------------------------------------

    async def GetFacilityCalendar(
        self, request: pb.GetFacilityCalendarRequest, context: aio.ServicerContext
    ):
        facility_id = uuid_field(request.facility_id, "facility_id")
        start, end = _range(request)
        actor = _actor()
        facility, found = await self.app.calendar(facility_id, start, end)
        staff = is_staff(actor)
        return pb.GetFacilityCalendarResponse(
            bookings=[
                messages.booking(b, facility.time_zone)
                if staff or str(b.user_id) == actor.subject
                else messages.busy(b, facility.time_zone)
                for b in found
            ]
        )

    async def GetFacilityUtilizationReport(
        self, request: pb.GetFacilityUtilizationReportRequest, context: aio.ServicerContext
    ):
        facility_id = optional_uuid_field(request.facility_id, "facility_id")
        start, end = _range(request)
        report = await self.app.utilization(facility_id, start, end)
        return pb.GetFacilityUtilizationReportResponse(
            days=[messages.day_use(f, use) for f, days in report for use in days]
        )

    async def CheckFacilityHealth(
        self, request: pb.CheckFacilityHealthRequest, context: aio.ServicerContext
    ):
        checks = await self.app.health()
        return pb.CheckFacilityHealthResponse(
            checks=[
                pb.HealthCheckResult(check_name=name, status=status, value=value)
                for name, status, value in checks
            ]
        )

    # --- series -------------------------------------------------------------------------

    async def BookFacilitySeries(
        self, request: pb.BookFacilitySeriesRequest, context: aio.ServicerContext
    ):
        asked = _series_request(request)
        made = await self.app.series.book(_actor(), asked, self._context(context))
        return messages.series(made.series, made.bookings, made.facility.time_zone)

    async def CancelFacilitySeries(
        self, request: pb.CancelFacilitySeriesRequest, context: aio.ServicerContext
    ):
        series_id = uuid_field(request.series_id, "series_id")
        asked_for = optional_uuid_field(request.user_id, "user_id")
        since = timestamp_field(request, "from_time")
        actor = _actor()
        reason = text_field(
            request.reason, "reason", max_len=REASON_LENGTH, required=is_staff(actor)
        )
        cancelled, facility = await self.app.series.cancel(
            actor, series_id, asked_for, since, reason, self._context(context)
        )
        return pb.CancelFacilitySeriesResponse(
            cancelled=[messages.booking(b, facility.time_zone) for b in cancelled]
        )


# --- validation -------------------------------------------------------------------------


def _instant(message: Any, field: str) -> datetime:
    """A required Timestamp within two years of now (either way)."""
    value = timestamp_field(message, field)
    if value is None:
        raise InvalidArgument.field(field, "is required")
    now = datetime.now(UTC)
    if not now - AHEAD <= value <= now + AHEAD:
        raise InvalidArgument.field(field, "must be within two years of now")
    return value


def _range(request: Any) -> tuple[datetime, datetime]:
    """[from_time, to_time) of a search, calendar or report: at most 31 days."""
    start = _instant(request, "from_time")
    end = _instant(request, "to_time")
    if end <= start:
        raise InvalidArgument.field("to_time", "must be after from_time")
    if end - start > SEARCH_MAX:
        raise InvalidArgument.field("to_time", "the range is longer than 31 days")
    return start, end


def _bookable_range(request: Any) -> dict[str, datetime]:
    """start_time and end_time of a booking: 15-minute boundaries, end after start, at most
    24 hours, not in the past."""
    start, end = _instant(request, "start_time"), _instant(request, "end_time")
    for field, value in (("start_time", start), ("end_time", end)):
        if not on_step(value):
            raise InvalidArgument.field(
                field, f"{value.isoformat()} is not on a 15-minute boundary (seconds zero)"
            )
    if end <= start:
        raise InvalidArgument.field("end_time", "must be after start_time")
    if end - start > MAX_LENGTH:
        raise InvalidArgument.field("end_time", "a booking lasts at most 24 hours")
    if start < datetime.now(UTC):
        raise InvalidArgument.field("start_time", "is in the past")
    return {"start_time": start, "end_time": end}


def _booking_request(request: pb.BookFacilityRequest) -> BookingRequest:
    facility_id = uuid_field(request.facility_id, "facility_id")
    user_id = uuid_field(request.user_id, "user_id")
    times = _bookable_range(request)
    url = text_field(request.external_meeting_url, "external_meeting_url", max_len=URL_LENGTH)
    if url is not None and not url.lower().startswith(("https://", "http://")):
        raise InvalidArgument.field("external_meeting_url", "must be an http(s) URL")
    return BookingRequest(
        facility_id=facility_id,
        user_id=user_id,
        **times,
        title=required_text_field(request.title, "title", max_len=NAME_LENGTH),
        description=text_field(request.description, "description", max_len=TEXT_LENGTH),
        attendee_count=int_field(request.attendee_count, "attendee_count", 1, MAX_ATTENDEES),
        external_meeting_url=url,
        request_id=_request_id(request.request_id),
    )


def _series_request(request: pb.BookFacilitySeriesRequest) -> SeriesRequest:
    """The series' user_id, its first occurrence under BookFacility's rules (fields named
    first.*; its user_id empty or the series', its request_id required), the rule."""
    user_id = uuid_field(request.user_id, "user_id")
    if not request.HasField("first"):
        raise InvalidArgument.field("first", "is required")
    with within("first"):
        if request.first.user_id and uuid_field(request.first.user_id, "user_id") != user_id:
            raise InvalidArgument.field("user_id", "must be the series' user_id (or empty)")
        given = pb.BookFacilityRequest()
        given.CopyFrom(request.first)
        given.user_id = str(user_id)
        first = _booking_request(given)
        if first.request_id is None:
            raise InvalidArgument.field("request_id", "is required: it keys the series")
    recurrence.parse_rule(request.rrule)
    return SeriesRequest(
        first=first,
        rrule=request.rrule.strip(),
        skip_conflicts=request.skip_conflicts,
        latest=datetime.now(UTC) + AHEAD,
    )


def _windows(hours: Sequence[pb.OpeningWindow]) -> list[OpeningWindow]:
    """Opening windows: weekday 1..7, quarter hours, open < close (close may be 24:00), none
    overlapping another of its day."""
    if len(hours) > MAX_WINDOWS:
        raise InvalidArgument.field("hours", f"at most {MAX_WINDOWS} windows")
    windows: list[OpeningWindow] = []
    for i, given in enumerate(hours):
        field = f"hours[{i}]"
        if not 1 <= given.day_of_week <= 7:
            raise InvalidArgument.field(f"{field}.day_of_week", "must be MONDAY..SUNDAY")
        opens = _minute(given.open, f"{field}.open")
        closes = _minute(given.close, f"{field}.close")
        if opens >= closes or opens == DAY_MINUTES:
            raise InvalidArgument.field(f"{field}.close", "must be after open")
        windows.append(OpeningWindow(given.day_of_week, opens, closes))
    ordered = sorted(windows)
    for before, after in itertools.pairwise(ordered):
        if before.weekday == after.weekday and after.open_minute < before.close_minute:
            index = windows.index(after)
            raise InvalidArgument.field(f"hours[{index}]", "overlaps another window of its day")
    return ordered


def _minute(value: Any, field: str) -> int:
    """A TimeOfDay on a quarter hour as minutes after midnight; 24:00 is 1440."""
    valid = (
        0 <= value.hours <= 24
        and value.minutes in (0, 15, 30, 45)
        and value.seconds == 0
        and value.nanos == 0
        and (value.hours < 24 or value.minutes == 0)
    )
    if not valid:
        raise InvalidArgument.field(field, "must be a quarter hour from 00:00 to 24:00")
    return value.hours * 60 + value.minutes
