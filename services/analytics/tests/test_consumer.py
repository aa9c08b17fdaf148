"""Events published on the test's exchange, through the real RabbitMQ and PostgreSQL, into
the daily figures and the reports."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from tiket.analytics.v1 import analytics_pb2

from libs.money import from_money
from services.analytics import domain
from services.analytics.tests.helpers import (
    TEST_CONFIG,
    checked_in,
    closed,
    dead_letters,
    pdate,
    raw_event,
    revised,
    scalar,
    settled,
    wib,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)
A = analytics_pb2


async def terminal_day(analytics, code: str, day: date) -> A.TerminalDailyMetrics:
    request = A.GetTerminalDailyMetricsRequest(
        terminal_code=code, start_date=pdate(day), end_date=pdate(day)
    )
    (row,) = (await analytics.call("GetTerminalDailyMetrics", request)).days
    return row


def summary(row: A.TerminalDailyMetrics) -> tuple[int, ...]:
    return (row.checkins, row.checkouts, row.unique_users, row.peak_hour, row.busiest_hour_count)


async def test_a_journey_counts_at_each_end_and_on_its_route_once(analytics, db, publish, consumer):
    day, rider = date(2024, 3, 4), uuid.uuid4()
    entry = checked_in("A", rider, wib(day, 8, 30))
    exit_ = closed(
        "journey.checked_out",
        rider,
        origin="A",
        destination="E",
        checkin=wib(day, 8, 30),
        checkout=wib(day, 9, 5),
        fare=12000,
        minutes=35,
    )
    await publish.events(entry, exit_)
    await settled(consumer, handled=2)
    await publish.events(entry, exit_)  # published twice (or redelivered): counted once
    await settled(consumer, handled=2, duplicates=2)

    assert summary(await terminal_day(analytics, "A", day)) == (1, 0, 1, 8, 1)
    assert summary(await terminal_day(analytics, "E", day)) == (0, 1, 1, 9, 1)
    request = A.GetRouteMatrixRequest(start_date=pdate(day), end_date=pdate(day))
    (trip,) = (await analytics.call("GetRouteMatrix", request)).routes
    assert (trip.origin_code, trip.destination_code, trip.trips) == ("A", "E", 1)
    assert (from_money(trip.revenue), trip.revenue.currency_code) == (Decimal(12000), "IDR")
    assert trip.average_duration_minutes == 35
    assert await scalar(db, "SELECT count(*) FROM analytics_events") == 2
    assert consumer.handled == 2 and await dead_letters(publish.settings) == 0


async def test_abandoned_and_incomplete_journeys_are_counted_apart(analytics, publish, consumer):
    day, rider = date(2024, 3, 5), uuid.uuid4()
    await publish.events(
        closed("journey.abandoned", rider, origin="A", checkin=wib(day, 7), fare=12000),
        closed("journey.incomplete", rider, destination="C", checkout=wib(day, 18), fare=7000),
    )
    await settled(consumer, handled=2)
    a, c = await terminal_day(analytics, "A", day), await terminal_day(analytics, "C", day)
    assert (a.abandoned_journeys, from_money(a.unfinished_fares), summary(a)) == (
        1, Decimal(12000), (0, 0, 0, 0, 0),
    )  # fmt: skip
    assert not a.HasField("peak_hour")  # no tap at A
    assert (c.incomplete_journeys, from_money(c.unfinished_fares), summary(c)) == (
        1, Decimal(7000), (0, 1, 1, 18, 1),
    )  # fmt: skip
    request = A.GetRouteMatrixRequest(start_date=pdate(day), end_date=pdate(day))
    assert list((await analytics.call("GetRouteMatrix", request)).routes) == []


async def test_a_revised_journey_counts_as_it_is_now_whatever_the_order(
    analytics, publish, consumer
):
    """Reconciled offline taps revise journeys announced closed (journey.revised): an
    abandoned journey a late exit at D completed; an orphan exit at E merged into B→E (the
    incomplete journey cancelled, B→E announced checked out), its revision arriving before
    the incomplete journey itself (a retry, a DLQ replay); an orphan exit at C no journey
    makes any more. Each figure is what the journeys as they are now give."""
    day, rider = date(2024, 3, 6), uuid.uuid4()
    abandoned = closed("journey.abandoned", rider, origin="A", checkin=wib(day, 8), fare=12000)
    to_d = closed(
        "journey.checked_out", rider, origin="A", destination="D",
        checkin=wib(day, 8), checkout=wib(day, 8, 30), fare=9000, minutes=30,
    )  # fmt: skip
    orphan_e = closed(
        "journey.incomplete", rider, destination="E", checkout=wib(day, 9, 40), fare=12000
    )
    b_to_e = closed(
        "journey.checked_out", rider, origin="B", destination="E",
        checkin=wib(day, 9), checkout=wib(day, 9, 40), fare=11000, minutes=40,
    )  # fmt: skip
    orphan_c = closed(
        "journey.incomplete", rider, destination="C", checkout=wib(day, 18), fare=7000
    )
    later = wib(day, 20)
    await publish.events(
        checked_in("A", rider, wib(day, 8)),
        abandoned,
        revised(abandoned, to_d, later),
        revised(orphan_e, None, later),
        checked_in("B", rider, wib(day, 9)),
        b_to_e,
        orphan_e,
        revised(orphan_c, None, later),
        orphan_c,
    )
    await settled(consumer, handled=9)

    def unfinished(row: A.TerminalDailyMetrics) -> tuple[int, int, Decimal]:
        return row.abandoned_journeys, row.incomplete_journeys, from_money(row.unfinished_fares)

    a, d = await terminal_day(analytics, "A", day), await terminal_day(analytics, "D", day)
    e, c = await terminal_day(analytics, "E", day), await terminal_day(analytics, "C", day)
    assert (summary(a), unfinished(a)) == ((1, 0, 1, 8, 1), (0, 0, 0))
    assert (summary(d), unfinished(d)) == ((0, 1, 1, 8, 1), (0, 0, 0))
    assert (summary(e), unfinished(e)) == ((0, 1, 1, 9, 1), (0, 0, 0))
    assert (summary(c), unfinished(c)) == ((0, 0, 1, 0, 0), (0, 0, 0))
    assert not c.HasField("peak_hour")  # its one tap was taken back
    request = A.GetRouteMatrixRequest(start_date=pdate(day), end_date=pdate(day))
    routes = (await analytics.call("GetRouteMatrix", request)).routes
    assert [
        (
            r.origin_code,
            r.destination_code,
            r.trips,
            from_money(r.revenue),
            r.average_duration_minutes,
        )
        for r in routes
    ] == [("A", "D", 1, Decimal(9000), 30), ("B", "E", 1, Decimal(11000), 40)]
    request = A.GetPeakHoursRequest(start_date=pdate(day), end_date=pdate(day))
    peaks = await analytics.call("GetPeakHours", request)
    assert [(h.hour, h.taps) for h in peaks.hours if h.taps] == [(8, 2), (9, 2)]


async def test_an_event_of_a_month_without_partition_gets_one(analytics, db, publish, consumer):
    future, past = datetime(2031, 5, 17, 3, tzinfo=UTC), datetime(2019, 2, 28, 23, tzinfo=UTC)
    for name in ("analytics_events_2031_05", "analytics_events_2019_02"):
        assert await scalar(db, "SELECT to_regclass(%s)", name) is None
    await publish.events(
        checked_in("B", uuid.uuid4(), future),
        raw_event("fare.updated", past, {"originCode": "A", "destinationCode": "B"}),
    )
    await settled(consumer, handled=2)
    rows = await db.execute(
        "SELECT tableoid::regclass::text, event_type FROM analytics_events ORDER BY 1"
    )
    assert await rows.fetchall() == [
        ("analytics_events_2019_02", "fare.updated"),
        ("analytics_events_2031_05", "journey.checked_in"),
    ]
    assert (await terminal_day(analytics, "B", date(2031, 5, 17))).checkins == 1


async def test_the_partitions_ahead_are_made_at_start(db):
    expected = [p.name for p in domain.partitions_ahead(datetime.now(UTC), 3)]

    async def made() -> bool:
        return all([await scalar(db, "SELECT to_regclass(%s)", name) for name in expected])

    await wait_until(made, f"partitions {expected}")


async def test_a_concurrent_burst_is_counted_exactly(analytics, db, publish, consumer):
    """300 events over several hours, terminals and riders, in a month nobody created yet,
    shuffled and handled up to 50 at a time on parallel connections."""
    day, rng = date(2032, 7, 1), random.Random(7)
    riders = [uuid.uuid4() for _ in range(40)]
    events, taps = [], {t: dict.fromkeys(range(24), 0) for t in "ABC"}
    entries, exits = dict.fromkeys("ABC", 0), dict.fromkeys("ABC", 0)
    users: dict[str, set[uuid.UUID]] = {t: set() for t in "ABC"}
    for _ in range(150):
        rider, (origin, destination) = rng.choice(riders), rng.sample("ABC", 2)
        entry = wib(day, rng.choice([0, 7, 8, 8, 17, 22]), rng.randrange(60))
        exit_at = entry + timedelta(minutes=rng.randrange(5, 90))
        minutes = (exit_at - entry).seconds // 60
        events.append(checked_in(origin, rider, entry))
        events.append(
            closed(
                "journey.checked_out",
                rider,
                origin=origin,
                destination=destination,
                checkin=entry,
                checkout=exit_at,
                fare=5000,
                minutes=minutes,
            )
        )
        for terminal, when, counts in ((origin, entry, entries), (destination, exit_at, exits)):
            local_day, hour = domain.local_bucket(when, TEST_CONFIG.time_zone)
            if local_day == day:
                taps[terminal][hour] += 1
                users[terminal].add(rider)
                counts[terminal] += 1
    rng.shuffle(events)
    await asyncio.gather(*(publish.events(e) for e in events))
    await settled(consumer, handled=300)

    for terminal in "ABC":
        row = await terminal_day(analytics, terminal, day)
        assert (row.checkins, row.checkouts) == (entries[terminal], exits[terminal]), terminal
        assert row.unique_users == len(users[terminal]), terminal
        assert (row.peak_hour, row.busiest_hour_count) == domain.peak(taps[terminal]), terminal
    request = A.GetRouteMatrixRequest(start_date=pdate(day), end_date=pdate(day + timedelta(1)))
    routes = (await analytics.call("GetRouteMatrix", request)).routes
    assert sum(r.trips for r in routes) == 150
    assert sum(from_money(r.revenue) for r in routes) == 150 * 5000
    assert await scalar(db, "SELECT count(*) FROM analytics_events") == 300
    assert consumer.retried == 0 and consumer.dead_lettered == 0


async def test_poison_goes_to_the_dead_letters_and_unknown_events_are_kept(
    analytics, db, publish, consumer
):
    when = datetime(2024, 5, 2, 2, tzinfo=UTC)
    await publish.body(b"not a cloud event", "journey.checked_in")
    readable = checked_in("A", uuid.uuid4(), when)
    unreadable = raw_event("journey.checked_in", when, {**readable.data, "terminalCode": "a"})
    unknown = raw_event("gate.exploded", when, {"terminalCode": "C", "anything": [1, 2]})
    await publish.events(unreadable, unknown, readable)

    await settled(consumer, handled=2, dead=2)
    assert await dead_letters(publish.settings) == 2
    assert consumer.retried == 0  # the unreadable event: a retry would fail alike
    stored = await db.execute(
        "SELECT event_type, terminal_code, data->'anything' FROM analytics_events ORDER BY 1"
    )
    assert await stored.fetchall() == [
        ("gate.exploded", "C", [1, 2]),
        ("journey.checked_in", "A", None),
    ]
    assert (await terminal_day(analytics, "A", date(2024, 5, 2))).checkins == 1
