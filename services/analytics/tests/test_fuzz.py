"""Property test: random valid and malformed requests to every AnalyticsService RPC, by
every role, against one real service holding a few days of events. Every answer is a
success or a clear refusal, never INTERNAL or UNKNOWN, and a success has the promised shape
(one row per day, 24 hours, pages within their size)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import date, timedelta

import grpc
import pytest
from google.type import date_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from tiket.analytics.v1 import analytics_pb2

from libs.auth import Role
from services.analytics.domain import BOOKING_TYPES
from services.analytics.tests.helpers import checked_in, closed, pdate, raw_event, settled, wib
from tests.support.fuzz import SERVICE_FUZZ

pytestmark = pytest.mark.timeout(120)
A = analytics_pb2
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
}
METHODS = [m.name for m in A.DESCRIPTOR.services_by_name["AnalyticsService"].methods]
INT32 = (-(2**31), 2**31 - 1)
DAY = date(2024, 6, 10)

junk = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=20),
    st.sampled_from(["", " ", "\x00", "a", "ABCD", "A1", "'; DROP TABLE analytics_events; --"]),
)


def mostly(valid, malformed):
    """Three draws in four from `valid`."""
    return st.integers(0, 3).flatmap(lambda n: valid if n else malformed)


codes = mostly(st.sampled_from(["A", "B", "C", "E", "Z", "XYZ"]), junk)
optional_codes = st.one_of(st.just(""), codes)
near_days = st.integers(-200, 200).map(lambda n: DAY + timedelta(days=n))


dates = st.one_of(
    st.none(),
    near_days.map(pdate),
    st.builds(
        date_pb2.Date, year=st.integers(*INT32), month=st.integers(*INT32), day=st.integers(*INT32)
    ),
    st.builds(
        date_pb2.Date,
        year=st.sampled_from([0, 1, 2024, 9999, 10000]),
        month=st.integers(0, 13),
        day=st.integers(0, 32),
    ),
)
ranges = mostly(
    st.tuples(near_days, st.integers(0, 40)).map(
        lambda p: {"start_date": pdate(p[0]), "end_date": pdate(p[0] + timedelta(days=p[1]))}
    ),
    st.fixed_dictionaries({"start_date": dates, "end_date": dates}),
)
page_sizes = mostly(st.integers(0, 500), st.integers(*INT32))
tokens = mostly(
    st.just(""),
    st.one_of(
        junk,
        st.lists(
            st.one_of(st.none(), st.integers(), st.sampled_from(["A", "E", "a", ""])),
            max_size=3,
            # The standard json module, not orjson: it writes integers past 64 bits too, so
            # those reach the service (orjson refused them here, failing the test, not the RPC).
        ).map(lambda key: base64.urlsafe_b64encode(json.dumps(key).encode()).decode()),
    ),
)


def message(cls, **fields):
    return cls(**{k: v for k, v in fields.items() if v is not None})


def build(cls, **fields):
    """Requests of `cls` over a date range (mostly a valid one) with `fields` drawn."""
    return st.tuples(ranges, st.fixed_dictionaries(fields)).map(
        lambda drawn: message(cls, **drawn[0], **drawn[1])
    )


REQUESTS = {
    "GetTerminalDailyMetrics": build(A.GetTerminalDailyMetricsRequest, terminal_code=codes),
    "GetPeakHours": build(A.GetPeakHoursRequest, terminal_code=optional_codes),
    "GetRouteMatrix": build(
        A.GetRouteMatrixRequest,
        origin_code=optional_codes,
        page_size=page_sizes,
        page_token=tokens,
    ),
    "GetBookingStats": build(A.GetBookingStatsRequest),
}
ROLES = mostly(
    st.sampled_from([(Role.ADMIN, "tests"), (Role.OPERATOR, "ops")]),
    st.one_of(
        st.sampled_from([(Role.GATE, "A/A-ENTRY-01"), (Role.SERVICE, "journey")]),
        st.tuples(st.just(Role.USER), st.uuids().map(str)),
    ),
)


def span(request) -> int:
    start, end = request.start_date, request.end_date
    return (date(end.year, end.month, end.day) - date(start.year, start.month, start.day)).days + 1


def check_shape(method: str, request, response) -> None:
    if method == "GetTerminalDailyMetrics":
        assert len(response.days) == span(request)
    elif method == "GetPeakHours":
        assert [h.hour for h in response.hours] == list(range(24))
        assert response.peak_taps == max(h.taps for h in response.hours)
    elif method == "GetRouteMatrix":
        assert len(response.routes) <= (request.page_size or 50)
    else:
        assert len(response.days) == span(request)
        assert all(len(d.types) == len(BOOKING_TYPES) for d in response.days)


def test_every_rpc_has_a_strategy():
    assert set(REQUESTS) == set(METHODS)


@pytest.fixture
async def events(publish, consumer) -> None:
    rider = uuid.uuid4()
    sent = []
    for offset in range(3):
        day = DAY + timedelta(days=offset)
        sent += [
            checked_in("A", rider, wib(day, 8)),
            closed(
                "journey.checked_out",
                rider,
                origin="A",
                destination="E",
                checkin=wib(day, 8),
                checkout=wib(day, 9),
                fare=12000,
                minutes=60,
            ),
            raw_event("booking.paid", wib(day, 10), {"amount": {"units": "1000"}}),
        ]
    await publish.events(*sent)
    await settled(consumer, handled=len(sent))


@settings(SERVICE_FUZZ, max_examples=60)
@given(data=st.data())
async def test_fuzz_every_rpc(analytics, events, data) -> None:
    for method in data.draw(st.lists(st.sampled_from(METHODS), min_size=1, max_size=4)):
        request = data.draw(REQUESTS[method], label=method)
        role, sub = data.draw(ROLES, label="role")
        try:
            response = await analytics.call(method, request, role=role, sub=sub)
        except grpc.aio.AioRpcError as error:
            assert error.code() in ALLOWED, (
                f"{method} answered {error.code().name}: {error.details()!r}"
            )
            continue
        check_shape(method, request, response)
