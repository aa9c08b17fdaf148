"""Facility records as FacilityService messages."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from google.type import timeofday_pb2
from tiket.booking.v1 import facility_pb2 as pb

from libs.timestamps import to_timestamp
from services.booking.facilities.availability import Interval
from services.booking.facilities.domain import (
    Facility,
    FacilityBooking,
    FacilitySeries,
    OpeningWindow,
)
from services.booking.facilities.utilization import DayUse

STATUS = {
    "confirmed": pb.FACILITY_BOOKING_STATUS_CONFIRMED,
    "pending": pb.FACILITY_BOOKING_STATUS_PENDING,
    "cancelled": pb.FACILITY_BOOKING_STATUS_CANCELLED,
    "rejected": pb.FACILITY_BOOKING_STATUS_REJECTED,
}


def facility(f: Facility) -> pb.Facility:
    return pb.Facility(
        facility_id=str(f.id),
        name=f.name,
        location=f.location or "",
        capacity=f.capacity,
        time_zone=f.time_zone,
        requires_approval=f.requires_approval,
        active=f.is_active,
        hours=[window(w) for w in f.hours],
        created_at=to_timestamp(f.created_at),
        updated_at=to_timestamp(f.updated_at),
    )


def window(w: OpeningWindow) -> pb.OpeningWindow:
    return pb.OpeningWindow(
        day_of_week=w.weekday, open=_clock(w.open_minute), close=_clock(w.close_minute)
    )


def booking(b: FacilityBooking, time_zone: str) -> pb.FacilityBooking:
    message = pb.FacilityBooking(
        booking_id=str(b.id),
        facility_id=str(b.facility_id),
        user_id=str(b.user_id),
        start_time=to_timestamp(b.start_time),
        end_time=to_timestamp(b.end_time),
        title=b.title,
        description=b.description or "",
        attendee_count=b.attendee_count,
        external_meeting_url=b.external_meeting_url or "",
        status=STATUS[b.status],
        created_by=b.created_by,
        cancelled_by=b.cancelled_by or "",
        cancellation_reason=b.cancellation_reason or "",
        decided_by=b.decided_by or "",
        decision_reason=b.decision_reason or "",
        time_zone=time_zone,
        created_at=to_timestamp(b.created_at),
        updated_at=to_timestamp(b.updated_at),
        series_id=str(b.series_id or ""),
        **_local_range(b.start_time, b.end_time, ZoneInfo(time_zone)),
    )
    if b.cancelled_at is not None:
        message.cancelled_at.CopyFrom(to_timestamp(b.cancelled_at))
    return message


def series(
    s: FacilitySeries, bookings: list[FacilityBooking], time_zone: str
) -> pb.BookFacilitySeriesResponse:
    skipped = [
        pb.SkippedOccurrence(
            start_time=to_timestamp(datetime.fromisoformat(o["start_time"])),
            end_time=to_timestamp(datetime.fromisoformat(o["end_time"])),
            local_start=o["local_start"],
            reason=o["reason"],
        )
        for o in s.skipped
    ]
    return pb.BookFacilitySeriesResponse(
        series_id=str(s.id),
        bookings=[booking(b, time_zone) for b in bookings],
        skipped=[o.start_time for o in skipped],
        skipped_occurrences=skipped,
    )


def busy(b: FacilityBooking, time_zone: str) -> pb.FacilityBooking:
    """Another user's booking as a user's calendar shows it: when, never who or what."""
    return pb.FacilityBooking(
        booking_id=str(b.id),
        facility_id=str(b.facility_id),
        start_time=to_timestamp(b.start_time),
        end_time=to_timestamp(b.end_time),
        status=STATUS[b.status],
        time_zone=time_zone,
        **_local_range(b.start_time, b.end_time, ZoneInfo(time_zone)),
    )


def day_use(f: Facility, use: DayUse) -> pb.FacilityUtilizationDay:
    return pb.FacilityUtilizationDay(
        facility_id=str(f.id),
        date=use.day.isoformat(),
        booked_minutes=use.booked_minutes,
        open_minutes=use.open_minutes,
        utilization_percent=use.percent,
    )


def free_window(interval: Interval, zone: ZoneInfo) -> pb.FreeWindow:
    start, end = interval
    return pb.FreeWindow(
        start_time=to_timestamp(start),
        end_time=to_timestamp(end),
        **_local_range(start, end, zone),
        duration_minutes=int((end - start).total_seconds() // 60),
    )


def _clock(minute: int) -> timeofday_pb2.TimeOfDay:
    return timeofday_pb2.TimeOfDay(hours=minute // 60, minutes=minute % 60)


def _local_range(start: datetime, end: datetime, zone: ZoneInfo) -> dict[str, str]:
    """local_start and local_end: the instants on the facility's wall clock, ISO 8601."""
    return {
        "local_start": start.astimezone(zone).isoformat(),
        "local_end": end.astimezone(zone).isoformat(),
    }
