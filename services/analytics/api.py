"""tiket.analytics.v1.AnalyticsService: proto <-> reports, input validation. Errors raised
here or below are turned into status codes by the shared interceptor."""

from __future__ import annotations

from datetime import date

from google.protobuf.message import Message
from grpc import aio
from tiket.analytics.v1 import analytics_pb2, analytics_pb2_grpc

from libs import paging
from libs.errors import InvalidArgument
from libs.validation import date_field, page_size_field, terminal_code_field
from services.analytics import domain, messages
from services.analytics.app import AnalyticsApp


class AnalyticsApi(analytics_pb2_grpc.AnalyticsServiceServicer):
    def __init__(self, app: AnalyticsApp) -> None:
        self.app = app

    async def GetTerminalDailyMetrics(
        self, request: analytics_pb2.GetTerminalDailyMetricsRequest, context: aio.ServicerContext
    ) -> analytics_pb2.GetTerminalDailyMetricsResponse:
        code = terminal_code_field(request.terminal_code, "terminal_code")
        start, end = _date_range(request)
        rows = await self.app.terminal_days(code, start, end)
        return analytics_pb2.GetTerminalDailyMetricsResponse(
            days=[messages.terminal_day(row) for row in rows]
        )

    async def GetPeakHours(
        self, request: analytics_pb2.GetPeakHoursRequest, context: aio.ServicerContext
    ) -> analytics_pb2.GetPeakHoursResponse:
        code = (
            terminal_code_field(request.terminal_code, "terminal_code")
            if request.terminal_code
            else None
        )
        start, end = _date_range(request)
        counts = await self.app.hourly_taps(code, start, end)
        return messages.peak_hours(counts, *domain.peak(counts))

    async def GetRouteMatrix(
        self, request: analytics_pb2.GetRouteMatrixRequest, context: aio.ServicerContext
    ) -> analytics_pb2.GetRouteMatrixResponse:
        start, end = _date_range(request)
        origin = (
            terminal_code_field(request.origin_code, "origin_code") if request.origin_code else None
        )
        limit = page_size_field(request.page_size)
        key = paging.decode(request.page_token, 2)
        after = (
            (terminal_code_field(key[0], "page_token"), terminal_code_field(key[1], "page_token"))
            if key
            else None
        )
        rows = await self.app.routes(start, end, origin, after, limit + 1)
        token = ""
        if len(rows) > limit:
            token = paging.encode(rows[limit - 1].origin_code, rows[limit - 1].destination_code)
        return analytics_pb2.GetRouteMatrixResponse(
            routes=[messages.route(row) for row in rows[:limit]], next_page_token=token
        )

    async def GetBookingStats(
        self, request: analytics_pb2.GetBookingStatsRequest, context: aio.ServicerContext
    ) -> analytics_pb2.GetBookingStatsResponse:
        start, end = _date_range(request)
        rows = await self.app.booking_days(start, end)
        return analytics_pb2.GetBookingStatsResponse(days=[messages.booking_day(r) for r in rows])


# --- fields ----------------------------------------------------------------------------------


def _date_range(request: Message) -> tuple[date, date]:
    """(start_date, end_date): an inclusive range of at most MAX_RANGE_DAYS days."""
    start, end = date_field(request, "start_date"), date_field(request, "end_date")
    if end < start:
        raise InvalidArgument.field("end_date", "must not be before start_date")
    if domain.range_days(start, end) > domain.MAX_RANGE_DAYS:
        raise InvalidArgument.field(
            "end_date",
            f"the range covers {domain.range_days(start, end)} days; "
            f"at most {domain.MAX_RANGE_DAYS}",
        )
    return start, end
