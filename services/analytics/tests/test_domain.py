"""The pure rules: local business days and hours, the busiest hour, monthly partitions,
report rows, what each event contributes, and the TIKET_ANALYTICS_* settings."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from libs.config import ConfigError
from libs.events.envelope import BadEvent, CloudEvent
from services.analytics import config, domain
from services.analytics.domain import MonthPartition, RouteTotals, TerminalDay
from services.analytics.facts import Booking, Tap, Trip, Unfinished, envelope_time, facts_of
from services.analytics.tests.helpers import checked_in, closed, raw_event

JAKARTA = ZoneInfo("Asia/Jakarta")
NOW = datetime(2024, 1, 15, 12, tzinfo=UTC)


# --- days, hours, peaks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instant", "zone", "bucket"),
    [
        (datetime(2024, 1, 15, 1, 30, tzinfo=UTC), JAKARTA, (date(2024, 1, 15), 8)),
        (datetime(2024, 1, 14, 17, 0, tzinfo=UTC), JAKARTA, (date(2024, 1, 15), 0)),
        (datetime(2024, 1, 14, 16, 59, tzinfo=UTC), JAKARTA, (date(2024, 1, 14), 23)),
        (datetime(2024, 1, 14, 16, 59, tzinfo=UTC), ZoneInfo("UTC"), (date(2024, 1, 14), 16)),
        # Daylight saving: 01:30 UTC is 21:30 EDT the day before in summer, 20:30 EST in winter.
        (datetime(2024, 7, 2, 1, 30, tzinfo=UTC), ZoneInfo("America/New_York"), (date(2024, 7, 1), 21)),
        (datetime(2024, 1, 2, 1, 30, tzinfo=UTC), ZoneInfo("America/New_York"), (date(2024, 1, 1), 20)),
    ],
)  # fmt: skip
def test_local_bucket(instant, zone, bucket):
    assert domain.local_bucket(instant, zone) == bucket


def test_an_instant_without_local_day_is_a_bad_event():
    with pytest.raises(BadEvent):
        domain.local_bucket(datetime(9999, 12, 31, 23, tzinfo=UTC), JAKARTA)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({}, (None, 0)),
        ({h: 0 for h in range(24)}, (None, 0)),
        ({8: 3, 7: 2, 17: 1}, (8, 3)),
        ({17: 3, 8: 3, 9: 1}, (8, 3)),  # a tie: the earliest hour
        ({23: 1}, (23, 1)),
        ({0: 1, 23: 1}, (0, 1)),
    ],
)
def test_peak_is_the_earliest_busiest_hour(counts, expected):
    assert domain.peak(counts) == expected


def test_ranges_are_inclusive():
    assert domain.range_days(date(2024, 1, 1), date(2024, 12, 31)) == 366
    assert list(domain.days(date(2024, 2, 28), date(2024, 3, 1))) == [
        date(2024, 2, 28),
        date(2024, 2, 29),
        date(2024, 3, 1),
    ]


# --- partitions ------------------------------------------------------------------------------


def test_a_partition_holds_one_utc_month():
    may = MonthPartition.of(datetime(2031, 5, 31, 23, 59, tzinfo=UTC))
    assert may == MonthPartition(2031, 5)
    assert may.name == "analytics_events_2031_05"
    assert (may.start, may.end) == (
        datetime(2031, 5, 1, tzinfo=UTC),
        datetime(2031, 6, 1, tzinfo=UTC),
    )
    # 05:00 on June 1st in Jakarta is still May in UTC.
    jakarta_june = datetime(2031, 6, 1, 5, tzinfo=timezone(timedelta(hours=7)))
    assert MonthPartition.of(jakarta_june) == may


def test_partition_bounds_at_the_ends_of_years_and_of_time():
    december = MonthPartition(2019, 12)
    assert (december.end, december.next()) == (
        datetime(2020, 1, 1, tzinfo=UTC),
        MonthPartition(2020, 1),
    )
    assert MonthPartition(1, 1).name == "analytics_events_0001_01"
    last = MonthPartition.of(datetime(9999, 12, 31, 23, 59, tzinfo=UTC))
    assert (last.start, last.end, last.next()) == (datetime(9999, 12, 1, tzinfo=UTC), None, None)


def test_partitions_ahead_run_into_the_next_year():
    ahead = domain.partitions_ahead(datetime(2030, 11, 20, tzinfo=UTC), 3)
    assert [p.name[-7:] for p in ahead] == ["2030_11", "2030_12", "2031_01", "2031_02"]
    assert domain.partitions_ahead(datetime(2030, 11, 20, tzinfo=UTC), 0) == [
        MonthPartition(2030, 11)
    ]
    assert len(domain.partitions_ahead(datetime(9999, 11, 1, tzinfo=UTC), 3)) == 2


# --- report rows -----------------------------------------------------------------------------


def test_terminal_days_fill_the_days_without_data():
    stored = TerminalDay(date(2024, 1, 2), "A", checkins=4, peak_hour=8, busiest_hour_count=2)
    rows = domain.terminal_days("A", date(2024, 1, 1), date(2024, 1, 3), [stored])
    assert rows == [TerminalDay(date(2024, 1, 1), "A"), stored, TerminalDay(date(2024, 1, 3), "A")]


def test_booking_days_have_every_type_every_day():
    paid = domain.BookingTotals("booking.paid", 2, Decimal("300.00"))
    rows = domain.booking_days(
        date(2024, 1, 1), date(2024, 1, 2), {(date(2024, 1, 2), paid.event_type): paid}
    )
    assert [len(r.types) for r in rows] == [6, 6]
    assert rows[1].types[domain.BOOKING_TYPES.index("booking.paid")] == paid
    assert all(t.events == 0 for t in rows[0].types)


def test_average_duration_counts_only_timed_trips():
    assert RouteTotals("A", "B", 3, Decimal(1), 90, 2).average_duration_minutes == 45
    assert RouteTotals("A", "B", 3, Decimal(1), 0, 0).average_duration_minutes is None


# --- what events contribute ------------------------------------------------------------------


RIDER = uuid.uuid4()
EIGHT_THIRTY = datetime(2024, 1, 15, 1, 30, tzinfo=UTC)  # 08:30 in Jakarta


def test_a_check_in_is_a_tap_at_its_terminal():
    facts = facts_of(checked_in("A", RIDER, EIGHT_THIRTY), JAKARTA, NOW)
    assert (facts.occurred_at, facts.terminal_code, facts.user_id) == (EIGHT_THIRTY, "A", RIDER)
    assert facts.tap == Tap("A", RIDER, date(2024, 1, 15), 8, checkin=True)
    assert (facts.trip, facts.unfinished, facts.booking) == (None, None, None)


def test_a_check_out_is_a_tap_at_the_exit_and_a_trip_on_the_exit_day():
    exit_at = EIGHT_THIRTY + timedelta(hours=16)  # 00:30 the next day in Jakarta
    event = closed(
        "journey.checked_out", RIDER, origin="A", destination="E",
        checkin=EIGHT_THIRTY, checkout=exit_at, fare=12000, minutes=960,
    )  # fmt: skip
    facts = facts_of(event, JAKARTA, NOW)
    assert facts.tap == Tap("E", RIDER, date(2024, 1, 16), 0, checkin=False)
    assert facts.trip == Trip(date(2024, 1, 16), "A", "E", Decimal("12000.00"), 960)


def test_unfinished_journeys():
    abandoned = closed("journey.abandoned", RIDER, origin="B", checkin=EIGHT_THIRTY, fare=11000)
    facts = facts_of(abandoned, JAKARTA, NOW)
    assert (facts.tap, facts.terminal_code) == (None, "B")
    assert facts.unfinished == Unfinished(date(2024, 1, 15), "B", True, Decimal("11000.00"))
    incomplete = closed("journey.incomplete", None, destination="C", checkout=EIGHT_THIRTY)
    facts = facts_of(incomplete, JAKARTA, NOW)
    assert facts.tap == Tap("C", None, date(2024, 1, 15), 8, checkin=False)
    assert facts.unfinished == Unfinished(date(2024, 1, 15), "C", False, Decimal("0.00"))


def test_bookings_count_from_the_envelope():
    paid = raw_event(
        "booking.paid", EIGHT_THIRTY, {"amount": {"currencyCode": "IDR", "units": "75000", "nanos": 500_000_000}, "userId": str(RIDER)}
    )  # fmt: skip
    facts = facts_of(paid, JAKARTA, NOW)
    assert facts.booking == Booking(date(2024, 1, 15), "booking.paid", Decimal("75000.50"))
    assert facts.user_id == RIDER
    bare = facts_of(raw_event("booking.no_show", EIGHT_THIRTY, {}), JAKARTA, NOW)
    assert bare.booking == Booking(date(2024, 1, 15), "booking.no_show", None)


def test_unknown_events_are_only_stored():
    event = raw_event("wallet.topped_up", EIGHT_THIRTY, {"userId": str(RIDER), "terminalCode": "x"})
    facts = facts_of(event, JAKARTA, NOW)
    assert (facts.occurred_at, facts.user_id, facts.terminal_code) == (EIGHT_THIRTY, RIDER, None)
    assert (facts.tap, facts.trip, facts.unfinished, facts.booking) == (None, None, None, None)
    untimed = CloudEvent("1", "s", "x.y", "yesterday", "", {"userId": "nope"})
    facts = facts_of(untimed, JAKARTA, NOW)
    assert (facts.occurred_at, facts.user_id) == (NOW, None)


@pytest.mark.parametrize(
    ("event_type", "data", "words"),
    [
        ("journey.checked_in", {"terminalCode": "a1", "userId": str(RIDER)}, "terminalCode"),
        ("journey.checked_in", {"terminalCode": "A", "userId": "rider-1"}, "userId"),
        ("journey.checked_in", {"terminalCode": "A", "checkinTime": "soon"}, "JourneyCheckedIn"),
        ("journey.checked_out", {"originCode": "A", "destinationCode": "B"}, "fare is missing"),
        ("journey.checked_out", {"originCode": "A", "destinationCode": "B", "fare": {"currencyCode": "USD", "units": "1"}}, "fare.currency_code"),
        ("journey.checked_out", {"originCode": "", "destinationCode": "B", "fare": {}}, "originCode"),
        ("journey.abandoned", {"destinationCode": "B"}, "originCode"),
        ("journey.revised", {"current": {"status": "cancelled"}}, "previous is missing"),
        ("journey.revised", {"previous": {"status": "closed"}, "current": {"status": "cancelled"}}, "previous.status 'closed'"),
        ("journey.revised", {"previous": {"status": "cancelled"}, "current": {"status": "abandoned"}}, "originCode"),
        ("booking.paid", {"amount": "150000"}, "Money"),
        ("booking.paid", {"amount": {"units": "1", "nanos": 1}}, "amount.nanos"),
    ],
)  # fmt: skip
def test_known_events_that_break_their_contract_are_bad(event_type, data, words):
    with pytest.raises(BadEvent, match=words):
        facts_of(raw_event(event_type, EIGHT_THIRTY, data), JAKARTA, NOW)


def test_envelope_times():
    assert envelope_time("2024-01-15T01:30:00Z") == EIGHT_THIRTY
    assert envelope_time("2024-01-15T08:30:00+07:00") == EIGHT_THIRTY
    assert envelope_time("2024-01-15T01:30:00") == EIGHT_THIRTY  # no offset: UTC
    assert envelope_time("") is None
    # Valid RFC 3339, but outside what a UTC datetime holds: the arrival time is used.
    assert envelope_time("0001-01-01T00:00:00+01:00") is None
    assert envelope_time("9999-12-31T23:30:00-05:00") is None
    far = CloudEvent("1", "s", "gate.opened", "0001-01-01T00:00:00+01:00", "", {})
    assert facts_of(far, JAKARTA, NOW).occurred_at == NOW


# --- settings --------------------------------------------------------------------------------


def test_settings_defaults_and_overrides():
    defaults = config.load({})
    assert (defaults.time_zone.key, defaults.partition_months_ahead) == ("Asia/Jakarta", 3)
    assert defaults.retry_backoff_seconds == 0.5
    custom = config.load(
        {
            "TIKET_ANALYTICS_TIME_ZONE": "Asia/Makassar",
            "TIKET_ANALYTICS_PARTITION_MONTHS_AHEAD": "0",
            "TIKET_ANALYTICS_RETRY_BACKOFF_SECONDS": "2",
        }
    )
    assert (custom.time_zone.key, custom.partition_months_ahead) == ("Asia/Makassar", 0)
    assert custom.retry_backoff_seconds == 2


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TIME_ZONE", "Mars/Olympus"),
        ("TIME_ZONE", "../etc/passwd"),
        ("PARTITION_MONTHS_AHEAD", "-1"),
        ("PARTITION_MONTHS_AHEAD", "many"),
        ("RETRY_BACKOFF_SECONDS", "0"),
    ],
)
def test_invalid_settings_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=f"TIKET_ANALYTICS_{name}"):
        config.load({f"TIKET_ANALYTICS_{name}": value})
