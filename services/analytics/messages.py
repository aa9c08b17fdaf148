"""Report rows -> tiket.analytics.v1 messages."""

from __future__ import annotations

from datetime import date

from google.type import date_pb2
from tiket.analytics.v1 import analytics_pb2

from libs.money import to_money
from services.analytics.domain import HOURS, BookingDay, RouteTotals, TerminalDay


def proto_date(day: date) -> date_pb2.Date:
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


def terminal_day(row: TerminalDay) -> analytics_pb2.TerminalDailyMetrics:
    message = analytics_pb2.TerminalDailyMetrics(
        date=proto_date(row.day),
        terminal_code=row.terminal_code,
        checkins=row.checkins,
        checkouts=row.checkouts,
        unique_users=row.unique_users,
        busiest_hour_count=row.busiest_hour_count,
        abandoned_journeys=row.abandoned_journeys,
        incomplete_journeys=row.incomplete_journeys,
        unfinished_fares=to_money(row.unfinished_fares),
    )
    if row.peak_hour is not None:
        message.peak_hour = row.peak_hour
    return message


def peak_hours(
    counts: dict[int, int], peak_hour: int | None, peak_taps: int
) -> analytics_pb2.GetPeakHoursResponse:
    response = analytics_pb2.GetPeakHoursResponse(
        hours=[analytics_pb2.HourCount(hour=h, taps=counts.get(h, 0)) for h in HOURS],
        peak_taps=peak_taps,
    )
    if peak_hour is not None:
        response.peak_hour = peak_hour
    return response


def route(row: RouteTotals) -> analytics_pb2.Route:
    message = analytics_pb2.Route(
        origin_code=row.origin_code,
        destination_code=row.destination_code,
        trips=row.trips,
        revenue=to_money(row.revenue),
    )
    average = row.average_duration_minutes
    if average is not None:
        message.average_duration_minutes = average
    return message


def booking_day(row: BookingDay) -> analytics_pb2.DailyBookingStats:
    return analytics_pb2.DailyBookingStats(
        date=proto_date(row.day),
        types=[
            analytics_pb2.BookingTypeStats(
                event_type=t.event_type, events=t.events, amount=to_money(t.amount)
            )
            for t in row.types
        ],
    )
