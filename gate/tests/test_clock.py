"""Measuring the gate's clock against the fare service's heartbeat stamp (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gate import clock

T = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)


def test_the_server_is_taken_to_stamp_halfway_through_the_round_trip() -> None:
    sent, received = T, T + timedelta(milliseconds=200)
    assert clock.skew_seconds(sent, received, T + timedelta(milliseconds=100)) == 0.0
    assert clock.skew_seconds(sent, received, T - timedelta(seconds=90)) == 90.1
    assert clock.skew_seconds(sent, received, T + timedelta(seconds=5)) == -4.9


def test_a_clock_within_the_tolerance_is_only_described_and_one_beyond_it_is_flagged() -> None:
    assert clock.describe(0.25) == "0.2 s ahead of the fare service's"
    assert clock.describe(-3.0) == "3.0 s behind the fare service's"
    far = clock.describe(clock.TOLERANCE_SECONDS + 1)
    assert far.startswith("31.0 s ahead") and "set it right, NTP" in far
