"""The reports over seed 004 §2.5's sample events (2024-01-15, terminals 1-5 = A-E, riders
1-5, anonymous check-ins without a rider) and a few booking events."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from tiket.analytics.v1 import analytics_pb2

from libs.money import from_money
from services.analytics.domain import BOOKING_TYPES
from services.analytics.tests.helpers import (
    checked_in,
    closed,
    pdate,
    raw_event,
    settled,
    wib,
)

pytestmark = pytest.mark.timeout(60)
A = analytics_pb2
DAY = date(2024, 1, 15)
RIDERS = {n: uuid.UUID(int=n) for n in range(1, 6)}
# (terminal, rider or None, hh:mm); seed: INSERT INTO analytics_events … 'checkin'
CHECKINS = [
    ("A", 1, "08:30"), ("A", 2, "08:45"), ("B", 3, "09:00"), ("C", 4, "09:15"),
    ("A", 5, "17:30"), ("A", None, "07:30"), ("A", None, "07:45"), ("A", None, "08:00"),
    ("B", None, "17:00"), ("B", None, "17:15"), ("B", None, "17:30"),
]  # fmt: skip
# (rider, exit terminal, hh:mm, fare from the demo matrix); seed: … 'checkout'
CHECKOUTS = [(1, "E", "09:45", 12000), (2, "C", "10:30", 7000), (3, "D", "11:15", 8000),
             (4, "B", "12:00", 6000)]  # fmt: skip


def at(hhmm: str, day: date = DAY) -> datetime:
    hour, minute = map(int, hhmm.split(":"))
    return wib(day, hour, minute)


@pytest.fixture
async def sample(publish, consumer) -> None:
    events = [checked_in(t, RIDERS.get(r or 0), at(hhmm)) for t, r, hhmm in CHECKINS]
    entries = {r: (t, at(hhmm)) for t, r, hhmm in CHECKINS if r}
    for rider, exit_code, hhmm, fare in CHECKOUTS:
        origin, entry = entries[rider]
        minutes = int((at(hhmm) - entry).total_seconds() // 60)
        events.append(
            closed(
                "journey.checked_out",
                RIDERS[rider],
                origin=origin,
                destination=exit_code,
                checkin=entry,
                checkout=at(hhmm),
                fare=fare,
                minutes=minutes,
            )
        )
    for when in (at("06:00"), at("06:00", DAY + timedelta(1))):  # the seed's fare updates
        events.append(raw_event("fare.updated", when, {"originCode": "A"}))
    paid = {"currencyCode": "IDR", "units": "150000"}
    events += [
        raw_event("booking.paid", at("10:00"), {"amount": paid}),
        raw_event(
            "booking.paid", at("23:59"), {"amount": {"units": "50000", "nanos": 500_000_000}}
        ),
        raw_event("booking.confirmed", at("09:00"), {"bookingId": "b1"}),
        raw_event("booking.no_show", at("00:10"), {}),
    ]
    await publish.events(*events)
    await settled(consumer, handled=len(events))


def window(start: date, end: date) -> dict[str, object]:
    return {"start_date": pdate(start), "end_date": pdate(end)}


async def test_terminal_days_follow_the_seed_peaks(analytics, sample):
    """The seed's sample totals disagree with its own events (terminal 1 has six check-ins,
    not four); its peak hours and busiest counts agree, and so do ours."""
    rows = {}
    for code in "ABCDE":
        request = A.GetTerminalDailyMetricsRequest(terminal_code=code, **window(DAY, DAY))
        (row,) = (await analytics.call("GetTerminalDailyMetrics", request)).days
        rows[code] = (row.checkins, row.checkouts, row.unique_users, row.peak_hour,
                      row.busiest_hour_count)  # fmt: skip
    assert rows == {
        "A": (6, 0, 3, 8, 3),  # seed: peak 8 (3 taps), 3 riders
        "B": (4, 1, 2, 17, 3),  # seed: peak 17 (3 taps), 1 check-out, 2 riders
        "C": (1, 1, 2, 9, 1),  # seed: peak 9 (1 tap); 09:15 and 10:30 tie, the earlier wins
        "D": (0, 1, 1, 11, 1),
        "E": (0, 1, 1, 9, 1),
    }


async def test_a_range_has_one_row_per_day(analytics, sample):
    request = A.GetTerminalDailyMetricsRequest(
        terminal_code="A", **window(DAY - timedelta(1), DAY + timedelta(1))
    )
    days = (await analytics.call("GetTerminalDailyMetrics", request)).days
    assert [(d.date.day, d.checkins, d.HasField("peak_hour")) for d in days] == [
        (14, 0, False),
        (15, 6, True),
        (16, 0, False),
    ]
    assert [from_money(d.unfinished_fares) for d in days] == [0, 0, 0]


async def test_peak_hours_of_one_terminal_and_of_all(analytics, sample):
    every = await analytics.call("GetPeakHours", A.GetPeakHoursRequest(**window(DAY, DAY)))
    assert {h.hour: h.taps for h in every.hours if h.taps} == {
        7: 2, 8: 3, 9: 3, 10: 1, 11: 1, 12: 1, 17: 4,
    }  # fmt: skip
    assert [h.hour for h in every.hours] == list(range(24))
    assert (every.peak_hour, every.peak_taps) == (17, 4)
    request = A.GetPeakHoursRequest(terminal_code="B", **window(DAY, DAY))
    b = await analytics.call("GetPeakHours", request)
    assert (b.peak_hour, b.peak_taps, sum(h.taps for h in b.hours)) == (17, 3, 5)
    later = DAY + timedelta(30)
    none = await analytics.call("GetPeakHours", A.GetPeakHoursRequest(**window(later, later)))
    assert (none.HasField("peak_hour"), none.peak_taps, len(none.hours)) == (False, 0, 24)


async def test_route_matrix_pages_and_filters(analytics, sample):
    request = A.GetRouteMatrixRequest(page_size=3, **window(DAY, DAY))
    first = await analytics.call("GetRouteMatrix", request)
    request.page_token = first.next_page_token
    second = await analytics.call("GetRouteMatrix", request)
    assert second.next_page_token == ""
    routes = [
        (r.origin_code, r.destination_code, r.trips, from_money(r.revenue),
         r.average_duration_minutes)
        for r in [*first.routes, *second.routes]
    ]  # fmt: skip
    assert routes == [
        ("A", "C", 1, Decimal(7000), 105),
        ("A", "E", 1, Decimal(12000), 75),
        ("B", "D", 1, Decimal(8000), 135),
        ("C", "B", 1, Decimal(6000), 165),
    ]
    request = A.GetRouteMatrixRequest(origin_code="A", **window(DAY, DAY))
    from_a = (await analytics.call("GetRouteMatrix", request)).routes
    assert [r.destination_code for r in from_a] == ["C", "E"]


async def test_booking_stats_count_each_type_per_local_day(analytics, sample):
    request = A.GetBookingStatsRequest(**window(DAY, DAY + timedelta(1)))
    days = (await analytics.call("GetBookingStats", request)).days
    assert [(d.date.day, [t.event_type for t in d.types]) for d in days] == [
        (15, list(BOOKING_TYPES)),
        (16, list(BOOKING_TYPES)),
    ]
    first = {t.event_type: (t.events, from_money(t.amount)) for t in days[0].types}
    assert first == {
        "booking.reservation_expired": (0, 0),
        "booking.confirmed": (1, 0),
        "booking.paid": (2, Decimal("200000.50")),
        "booking.cancelled": (0, 0),
        "booking.rescheduled": (0, 0),
        "booking.no_show": (1, 0),
    }
    assert all(t.events == 0 for t in days[1].types)


async def test_the_time_zone_decides_the_business_day(analytics, publish, consumer):
    # 17:30 UTC on the 1st is 00:30 on the 2nd in Jakarta.
    await publish.events(checked_in("D", None, datetime(2024, 2, 1, 17, 30, tzinfo=UTC)))
    await settled(consumer, handled=1)
    request = A.GetTerminalDailyMetricsRequest(
        terminal_code="D", **window(date(2024, 2, 1), date(2024, 2, 2))
    )
    days = (await analytics.call("GetTerminalDailyMetrics", request)).days
    assert [(d.checkins, d.peak_hour) for d in days] == [(0, 0), (1, 0)]
    assert [d.HasField("peak_hour") for d in days] == [False, True]
