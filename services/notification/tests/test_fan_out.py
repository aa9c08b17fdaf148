"""fare.updated fans out to the riders who travelled the pair in the last 30 days (learnt from
journey.checked_out, unless they opted out) and to those who opted into all fare news — in
chunks of riders, each its own transaction, so a failure redoes one chunk, not the set."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import pytest_asyncio
from tiket.events.v1 import fare_pb2, journey_pb2
from tiket.notification.v1 import notification_pb2 as pb

from libs.auth import Role
from libs.db.database import open_pool
from libs.events.envelope import CloudEvent
from libs.money import to_money
from services.notification.app import NotificationApp
from services.notification.tests.stack import TEST_CONFIG, Stack, event, running_stack
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]
CHUNK = 2
FARE_NEWS = (
    "Informasi: Tarif perjalanan Terminal Barat ke Terminal Pusat telah diperbarui menjadi "
    "Rp 9.500 efektif besok."
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[Stack]:
    async with running_stack(replace(TEST_CONFIG, fan_out_chunk=CHUNK)) as running:
        yield running


def travelled(rider: str, origin: str, destination: str, days_ago: float) -> CloudEvent:
    data = journey_pb2.JourneyClosed(
        journey_id=str(uuid.uuid4()),
        user_id=rider,
        status="completed",
        origin_code=origin,
        destination_code=destination,
        fare=to_money(Decimal(9000)),
        remaining_balance=to_money(Decimal(50000)),
    )
    data.checkout_time.FromDatetime(datetime.now(UTC) - timedelta(days=days_ago))
    return event("journey.checked_out", rider, data)


def fare_updated(origin: str = "B", destination: str = "E") -> CloudEvent:
    data = fare_pb2.FareUpdated(
        fare_id=7,
        origin_code=origin,
        origin_name="Terminal Barat",
        destination_code=destination,
        destination_name="Terminal Pusat",
        new_price=to_money(Decimal(9500)),
    )
    data.effective_from.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    return event("fare.updated", f"{origin}-{destination}", data)


async def opt_in(stack: Stack, rider: str) -> None:
    wanted = pb.SetPreferencesRequest(user_id=rider, fare_updates=True)
    await stack.call("SetPreferences", wanted, Role.USER, rider)


async def handled(stack: Stack, *events: CloudEvent) -> None:
    """Until the consumer recorded every one of `events` in its inbox (after its effect)."""
    ids = [e.id for e in events]

    async def recorded() -> bool:
        rows = await stack.rows("SELECT count(*) FROM inbox WHERE event_id = ANY(%s)", ids)
        return rows == [(len(ids),)]

    await wait_until(recorded, f"{len(ids)} event(s) handled")


async def told(stack: Stack, news: CloudEvent) -> dict[str, str]:
    """Rider -> the text of their notification of `news`."""
    rows = await stack.rows(
        "SELECT user_id::text, message FROM notifications WHERE event_id = %s", news.id
    )
    return dict(rows)


async def test_a_fare_update_tells_who_travelled_the_pair_lately_and_who_opted_in(stack):
    lately, also = await stack.new_rider(), await stack.new_rider()
    long_ago, elsewhere, backwards = [await stack.new_rider() for _ in range(3)]
    fan = await stack.new_rider()
    await opt_in(stack, fan)
    trips = [
        travelled(lately, "B", "E", days_ago=1),
        travelled(also, "B", "E", days_ago=29),
        travelled(also, "A", "E", days_ago=2),
        travelled(long_ago, "B", "E", days_ago=31),
        travelled(elsewhere, "B", "A", days_ago=1),
        travelled(backwards, "E", "B", days_ago=1),
    ]
    for trip in trips:
        await stack.publish(trip)
    await handled(stack, *trips)

    news = fare_updated()
    await stack.publish(news)
    await handled(stack, news)

    assert await told(stack, news) == dict.fromkeys([lately, also, fan], FARE_NEWS)


async def test_a_rider_who_opted_out_hears_only_about_what_they_opted_into(stack):
    quiet, fan_but_quiet = await stack.new_rider(), await stack.new_rider()
    await opt_in(stack, fan_but_quiet)
    trips = [travelled(rider, "B", "E", days_ago=1) for rider in (quiet, fan_but_quiet)]
    for trip in trips:
        await stack.publish(trip)
    await handled(stack, *trips)
    for rider, every_pair in ((quiet, False), (fan_but_quiet, True)):
        wanted = pb.SetPreferencesRequest(
            user_id=rider, fare_updates=every_pair, travelled_fare_updates=False
        )
        saved = await stack.call("SetPreferences", wanted, Role.USER, rider)
        assert not saved.travelled_fare_updates

    news = fare_updated()
    await stack.publish(news)
    await handled(stack, news)

    audience = await told(stack, news)
    assert fan_but_quiet in audience
    assert quiet not in audience


async def test_a_failure_part_way_redoes_one_chunk_and_no_rider_hears_twice(stack):
    """A rider's notification fails once (an injected trigger): the chunks before it stay
    committed, the retry resumes at the failing chunk, and every rider is told once."""
    riders = [await stack.new_rider() for _ in range(7)]
    for rider in riders:
        await opt_in(stack, rider)
    news = fare_updated("C", "E")
    failing = max(riders)  # late in the fan-out's user_id order: most riders come before
    async with stack.database() as conn:
        await conn.execute(
            f"""CREATE SEQUENCE fan_out_inserts; CREATE SEQUENCE fan_out_failures;
                CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                  IF NEW.event_id = '{news.id}' THEN
                    PERFORM nextval('fan_out_inserts');
                    IF NEW.user_id = '{failing}' AND nextval('fan_out_failures') = 1 THEN
                      RAISE EXCEPTION 'mail relay refused (injected)';
                    END IF;
                  END IF;
                  RETURN NEW;
                END $$;
                CREATE TRIGGER fail_once BEFORE INSERT ON notifications
                  FOR EACH ROW EXECUTE FUNCTION fail_once();"""
        )
    try:
        await stack.publish(news)
        await handled(stack, news)
        async with stack.database() as conn:
            cur = await conn.execute("SELECT last_value FROM fan_out_inserts")
            [(inserts,)] = await cur.fetchall()
    finally:
        async with stack.database() as conn:
            await conn.execute(
                "DROP TRIGGER fail_once ON notifications; DROP FUNCTION fail_once();"
                " DROP SEQUENCE fan_out_inserts; DROP SEQUENCE fan_out_failures;"
            )

    audience = await told(stack, news)
    assert set(riders) <= set(audience)
    redone = inserts - len(audience)  # inserts tried again after the failure (rolled back)
    assert 1 <= redone <= CHUNK


async def test_pairs_not_travelled_within_the_window_are_forgotten(stack):
    recent, stale = await stack.new_rider(), await stack.new_rider()
    trips = [travelled(recent, "D", "E", days_ago=29), travelled(stale, "D", "E", days_ago=31)]
    for trip in trips:
        await stack.publish(trip)
    await handled(stack, *trips)

    pool = await open_pool(stack.database_url(), min_size=1, max_size=1)
    try:
        forgotten = await NotificationApp(pool, stack.config, lambda: None).forget_old_trips()
    finally:
        await pool.close()

    assert forgotten >= 1
    rows = await stack.rows(
        "SELECT user_id::text FROM travelled_pairs WHERE origin_code = 'D' AND user_id = ANY(%s)",
        [uuid.UUID(recent), uuid.UUID(stale)],
    )
    assert rows == [(recent,)]
