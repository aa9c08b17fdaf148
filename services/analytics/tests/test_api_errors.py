"""Bad input is INVALID_ARGUMENT naming the field; only operators and admins read reports."""

from __future__ import annotations

import base64
import uuid

import grpc
import orjson
import pytest
from google.type import date_pb2
from tiket.analytics.v1 import analytics_pb2

from libs.auth import Role
from tests.support.grpc_errors import bad_request_fields

pytestmark = pytest.mark.timeout(60)
A = analytics_pb2
D = date_pb2.Date
JAN1, JAN31 = D(year=2024, month=1, day=1), D(year=2024, month=1, day=31)
RANGE = {"start_date": JAN1, "end_date": JAN31}


def token(*key: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode()


BAD_INPUT = [
    ("GetTerminalDailyMetrics", A.GetTerminalDailyMetricsRequest(**RANGE), "terminal_code"),
    (
        "GetTerminalDailyMetrics",
        A.GetTerminalDailyMetricsRequest(terminal_code="a", **RANGE),
        "terminal_code",
    ),
    (
        "GetTerminalDailyMetrics",
        A.GetTerminalDailyMetricsRequest(terminal_code="ABCD", **RANGE),
        "terminal_code",
    ),
    (
        "GetTerminalDailyMetrics",
        A.GetTerminalDailyMetricsRequest(terminal_code="A", end_date=JAN31),
        "start_date",
    ),
    (
        "GetTerminalDailyMetrics",
        A.GetTerminalDailyMetricsRequest(
            terminal_code="A", start_date=D(year=2024, month=2, day=30), end_date=JAN31
        ),
        "start_date",
    ),
    ("GetPeakHours", A.GetPeakHoursRequest(start_date=JAN1), "end_date"),
    ("GetPeakHours", A.GetPeakHoursRequest(terminal_code="1", **RANGE), "terminal_code"),
    (
        "GetPeakHours",
        A.GetPeakHoursRequest(start_date=D(year=0, month=1, day=1), end_date=JAN31),
        "start_date",
    ),
    ("GetPeakHours", A.GetPeakHoursRequest(start_date=JAN31, end_date=JAN1), "end_date"),
    (
        "GetPeakHours",
        A.GetPeakHoursRequest(start_date=JAN1, end_date=D(year=2025, month=1, day=1)),
        "end_date",
    ),  # 367 days
    ("GetRouteMatrix", A.GetRouteMatrixRequest(origin_code="ab", **RANGE), "origin_code"),
    ("GetRouteMatrix", A.GetRouteMatrixRequest(page_size=501, **RANGE), "page_size"),
    ("GetRouteMatrix", A.GetRouteMatrixRequest(page_token="garbage", **RANGE), "page_token"),
    ("GetRouteMatrix", A.GetRouteMatrixRequest(page_token=token("a", "B"), **RANGE), "page_token"),
    ("GetRouteMatrix", A.GetRouteMatrixRequest(page_token=token(1, None), **RANGE), "page_token"),
    ("GetBookingStats", A.GetBookingStatsRequest(), "start_date"),
    (
        "GetBookingStats",
        A.GetBookingStatsRequest(start_date=JAN1, end_date=D(year=-1, month=13, day=99)),
        "end_date",
    ),
]
GOOD = [
    ("GetTerminalDailyMetrics", A.GetTerminalDailyMetricsRequest(terminal_code="A", **RANGE)),
    ("GetPeakHours", A.GetPeakHoursRequest(**RANGE)),
    ("GetRouteMatrix", A.GetRouteMatrixRequest(**RANGE)),
    ("GetBookingStats", A.GetBookingStatsRequest(**RANGE)),
]


async def test_bad_input_names_the_field(analytics):
    for method, request, field in BAD_INPUT:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await analytics.call(method, request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, field)
        assert bad_request_fields(err.value) == [field], (method, err.value.details())


async def test_a_leap_year_is_the_longest_range(analytics):
    leap = A.GetBookingStatsRequest(start_date=JAN1, end_date=D(year=2024, month=12, day=31))
    assert len((await analytics.call("GetBookingStats", leap)).days) == 366


async def test_only_operators_and_admins_read_reports(analytics):
    for method, request in GOOD:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await getattr(analytics.stub, method)(request)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, method
        for role, sub in (
            (Role.USER, str(uuid.uuid4())),
            (Role.GATE, "A/A-ENTRY-01"),
            (Role.SERVICE, "tests"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await analytics.call(method, request, role=role, sub=sub)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, (method, role)
        for role in (Role.OPERATOR, Role.ADMIN):
            await analytics.call(method, request, role=role)
