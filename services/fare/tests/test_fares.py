"""Effective-dated fares through the real service: lookups at any instant (through the cache
too), changes scheduled ahead, SetFare's refusals and idempotency, a race of concurrent
changes, listing, the gates' snapshot and fare.updated."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import psycopg
import pytest
from tiket.events.v1 import fare_pb2 as events_pb2
from tiket.fare.v1 import fare_pb2

from libs.auth import Role
from libs.events.outbox import emit
from services.fare.events import FARE_UPDATED, SOURCE
from services.fare.tests.helpers import (
    amount_of,
    fare_events_consumed,
    idr,
    in_seconds,
    price_of,
    row_counts,
    seed,
    set_fare,
    ts,
)
from tests.support.waiting import wait_until


async def test_the_seeded_matrix_answers(fares):
    await seed(fares)
    fare = await fares.call(
        "GetFare", fare_pb2.GetFareRequest(origin_code="A", destination_code="E")
    )
    assert (fare.price.currency_code, fare.price.units) == ("IDR", 12000)
    assert await price_of(fares, "D", "B") == Decimal(8000)
    most = await fares.call("GetMaxFare", fare_pb2.GetMaxFareRequest(origin_code="B"))
    assert (amount_of(most.price), most.fare.destination_code) == (Decimal(11000), "E")


async def test_a_scheduled_change_applies_from_its_instant_through_the_cache(fares, db):
    await seed(fares)
    assert await price_of(fares, "A", "E") == 12000  # now cached, with its validity
    change_at = in_seconds(3)
    answer = await set_fare(fares, "A", "E", 13000, change_at)
    assert answer.changed and amount_of(answer.previous.price) == 12000
    assert answer.previous.effective_until == ts(change_at)
    before, after = change_at - timedelta(microseconds=1), change_at
    assert await price_of(fares, "A", "E", before) == 12000
    assert await price_of(fares, "A", "E", after) == 13000
    assert await price_of(fares, "A", "E") == 12000
    most = await fares.call("GetMaxFare", fare_pb2.GetMaxFareRequest(origin_code="A", at=ts(after)))
    assert amount_of(most.price) == 13000

    # From here the answers can only come from the cache: the database now says otherwise
    # (once no fare.updated is on its way to retire the cached entries).
    await fare_events_consumed(db)
    assert await price_of(fares, "A", "E", after) == 13000
    await db.execute("UPDATE fares SET price = 99999")
    # Asked with a margin: the service reads its clock a little after ours, and an answer for
    # an instant past change_at would rightly be 13000.
    asked = 0
    while datetime.now(UTC) < change_at - timedelta(milliseconds=300):
        assert await price_of(fares, "A", "E") == 12000
        asked += 1
        await asyncio.sleep(0.1)
    assert asked, "the cache was never asked before the change"
    await asyncio.sleep(max(0.0, (change_at - datetime.now(UTC)).total_seconds()))
    assert await price_of(fares, "A", "E") == 13000  # the cached list knew the next version

    await set_fare(fares, "B", "C", 6500)  # any fare change retires every cached entry
    assert await price_of(fares, "A", "E") == 99999


async def test_fare_updated_tells_old_and_new_price_and_when(fares, db):
    await seed(fares)
    change_at = in_seconds(3600)
    await set_fare(fares, "D", "E", 9500, change_at)
    cur = await db.execute(
        "SELECT body FROM outbox WHERE event_type = 'fare.updated' ORDER BY seq DESC LIMIT 1"
    )
    event = (await cur.fetchone())[0]
    assert event["subject"] == "D-E"
    data = event["data"]
    assert (data["originName"], data["destinationName"]) == ("Terminal Barat", "Terminal Pusat")
    assert data["oldPrice"]["units"] == "9000" and data["newPrice"]["units"] == "9500"
    assert datetime.fromisoformat(data["effectiveFrom"]) == change_at.replace(
        microsecond=change_at.microsecond
    )
    assert data["changedBy"] == "admin:tests"


async def test_the_same_price_changes_nothing(fares, db):
    await seed(fares)
    before = await row_counts(db)
    answer = await set_fare(fares, "A", "B", 5000)
    assert not answer.changed and amount_of(answer.fare.price) == 5000
    assert await row_counts(db) == before


async def test_a_scheduled_version_is_replaced_by_one_for_the_same_instant(fares):
    await seed(fares)
    change_at = in_seconds(3600)
    first = await set_fare(fares, "A", "B", 6000, change_at)
    second = await set_fare(fares, "A", "B", 6500, change_at)
    assert second.previous.id == first.fare.id
    assert await price_of(fares, "A", "B", change_at) == 6500
    listed = await fares.call(
        "ListFares",
        fare_pb2.ListFaresRequest(origin_code="A", destination_code="B", include_inactive=True),
    )
    assert [(amount_of(f.price), f.active) for f in listed.fares] == [
        (Decimal(5000), True),
        (Decimal(6000), False),
        (Decimal(6500), True),
    ]


async def test_a_change_before_a_scheduled_one_runs_until_it_starts(fares, db):
    """A version scheduled by mistake for a far-off year used to refuse every later change of
    the pair (OVERLAPPING_PERIOD) with no way to remove it; imports touching the pair too."""
    await seed(fares)
    far_off = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    await set_fare(fares, "A", "B", 7100, far_off)
    scheduled = in_seconds(7200)
    await set_fare(fares, "A", "B", 6000, scheduled)

    change = await set_fare(fares, "A", "B", 5500, in_seconds(3600))

    assert change.changed and change.fare.effective_until.ToDatetime(tzinfo=UTC) == scheduled
    assert await price_of(fares, "A", "B") == 5000
    assert await price_of(fares, "A", "B", in_seconds(5400)) == 5500
    assert await price_of(fares, "A", "B", in_seconds(9000)) == 6000
    assert await price_of(fares, "A", "B", far_off) == 7100
    assert (await set_fare(fares, "A", "B", 5200)).changed  # now, until the 5500
    assert await price_of(fares, "A", "B") == 5200


async def test_request_id_makes_set_fare_idempotent(fares, db):
    await seed(fares)
    request = fare_pb2.SetFareRequest(
        origin_code="A", destination_code="C", price=idr(7500), request_id="change-42"
    )
    answers = await asyncio.gather(*(fares.call("SetFare", request) for _ in range(5)))
    assert len({a.fare.id for a in answers}) == 1
    assert all(a.previous.price.units == 7000 for a in answers)
    cur = await db.execute("SELECT count(*) FROM fares WHERE price = 7500")
    assert (await cur.fetchone())[0] == 1
    request.destination_code = "D"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await fares.call("SetFare", request)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_concurrent_changes_of_one_pair_never_overlap(fares, db):
    await seed(fares)
    base = datetime.now(UTC) + timedelta(hours=1)
    scheduled = [
        set_fare(fares, "C", "E", 10_000 + 100 * n, base + timedelta(minutes=(n * 7) % 20))
        for n in range(20)
    ]
    immediate = [set_fare(fares, "C", "E", 20_000 + 100 * n) for n in range(10)]
    results = await asyncio.gather(*scheduled, *immediate, return_exceptions=True)
    assert [r for r in results if isinstance(r, Exception)] == []
    # The fixture checks after the test that no versions overlap and none leaves a gap;
    # here: every lookup agrees with the timeline in the database.
    cur = await db.execute(
        """SELECT f.price, f.effective_from FROM fares f JOIN terminals o ON o.id = f.origin_terminal_id
           JOIN terminals d ON d.id = f.destination_terminal_id
           WHERE o.code = 'C' AND d.code = 'E' AND f.is_active ORDER BY f.effective_from"""
    )
    for price, start in await cur.fetchall():
        assert await price_of(fares, "C", "E", start) == price


async def test_list_fares_pages_and_filters(fares):
    await seed(fares)
    await set_fare(fares, "A", "B", 5200, in_seconds(3600))
    seen, token = [], ""
    while True:
        page = await fares.call(
            "ListFares", fare_pb2.ListFaresRequest(page_size=7, page_token=token)
        )
        seen += [(f.origin_code, f.destination_code, amount_of(f.price)) for f in page.fares]
        if not (token := page.next_page_token):
            break
    assert len(seen) == 21 and seen[:3] == [
        ("A", "B", Decimal(5000)),
        ("A", "B", Decimal(5200)),
        ("A", "C", Decimal(7000)),
    ]
    now = await fares.call(
        "ListFares", fare_pb2.ListFaresRequest(origin_code="A", in_force_at=ts(in_seconds(0)))
    )
    assert [f.price.units for f in now.fares] == [5000, 7000, 9000, 12000]
    later = await fares.call(
        "ListFares",
        fare_pb2.ListFaresRequest(destination_code="B", in_force_at=ts(in_seconds(7200))),
    )
    assert [(f.origin_code, f.price.units) for f in later.fares] == [
        ("A", 5200),
        ("C", 6000),
        ("D", 8000),
        ("E", 11000),
    ]


async def test_the_snapshot_gives_terminals_then_current_and_scheduled_fares(fares):
    await seed(fares)
    await set_fare(fares, "A", "B", 5200, in_seconds(3600))
    items = await fares.stream(
        "ExportFareSnapshot",
        fare_pb2.ExportFareSnapshotRequest(),
        role=Role.GATE,
        sub="A/A-EXIT-01",
    )
    kinds = [i.WhichOneof("item") for i in items]
    assert kinds == ["terminal"] * 5 + ["fare"] * 21 + ["end"]
    assert (items[-1].end.terminals, items[-1].end.fares) == (5, 21)
    a_to_b = [i.fare for i in items if i.fare.origin_code == "A" and i.fare.destination_code == "B"]
    assert [f.price.units for f in a_to_b] == [5000, 5200]
    assert a_to_b[0].HasField("effective_until") and not a_to_b[1].HasField("effective_until")

    only_d = await fares.stream(
        "ExportFareSnapshot", fare_pb2.ExportFareSnapshotRequest(terminal_code="D")
    )
    d_fares = [i.fare for i in only_d if i.WhichOneof("item") == "fare"]
    assert len(d_fares) == 8
    assert all("D" in (f.origin_code, f.destination_code) for f in d_fares)


async def test_the_database_itself_refuses_overlapping_versions(fares, db):
    """The exclusion constraint, not only SetFare's lock, keeps a pair's versions apart."""
    await seed(fares)
    with pytest.raises(psycopg.errors.ExclusionViolation):
        await db.execute(
            """INSERT INTO fares (origin_terminal_id, destination_terminal_id, price, effective_from)
               SELECT origin_terminal_id, destination_terminal_id, 1, now() + interval '1 hour'
                 FROM fares LIMIT 1"""
        )


async def test_fare_updated_from_another_writer_retires_the_cache(fares, db):
    """A change committed by another process (another replica, an admin script) reaches this
    one only as fare.updated: the consumer renews the cache generation."""
    await seed(fares)
    await fare_events_consumed(db)
    assert await price_of(fares, "A", "D") == 9000
    await db.execute(
        "UPDATE fares SET price = 9900 WHERE origin_terminal_id = 1 AND destination_terminal_id = 4"
    )
    assert await price_of(fares, "A", "D") == 9000  # the cached entry, until told
    await emit(db, SOURCE, FARE_UPDATED, "A-D", events_pb2.FareUpdated(origin_code="A"))

    async def renewed() -> bool:
        return await price_of(fares, "A", "D") == 9900

    await wait_until(renewed, "the fare.updated consumer to retire the cache", within=10)
