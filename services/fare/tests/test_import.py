"""GTFS Fares v2 import through the real service: what it imports and skips, idempotency,
all-or-nothing on a broken feed or a refused change, dry runs and explicit area mapping."""

from __future__ import annotations

import grpc
import pytest
from tiket.fare.v1 import fare_pb2

from libs.auth import Role
from services.fare.tests.helpers import (
    feed_zip,
    fixture_text,
    in_seconds,
    price_of,
    row_counts,
    seed,
    set_fare,
    ts,
)
from tests.support.grpc_errors import bad_request_fields


async def import_feed(
    fares, feed: bytes | None = None, **fields
) -> fare_pb2.ImportGtfsFaresResponse:
    request = fare_pb2.ImportGtfsFaresRequest(feed=feed or feed_zip(), **fields)
    return await fares.call("ImportGtfsFares", request)


def pairs(report) -> dict[tuple[str, str], tuple[int, int]]:
    return {
        (f.origin_code, f.destination_code): (f.previous_price.units, f.price.units)
        for f in report.imported
    }


async def test_the_fixture_feed_imports_the_changed_pairs_and_says_what_it_skipped(fares):
    await seed(fares)
    report = await import_feed(fares)
    assert pairs(report) == {
        ("A", "B"): (5000, 5500),
        ("B", "A"): (5000, 5500),
        ("A", "E"): (12000, 12500),
        ("E", "A"): (12000, 12500),
    }
    assert dict(report.area_terminals) == {"A": "A", "B": "B", "C": "C", "pusat": "E"}
    reasons = {s.rule: s.reason for s in report.skipped}
    assert "time-of-day fare" in reasons["fare_leg_rules.txt:14"]
    assert "maps to no terminal" in reasons["fare_leg_rules.txt:15"]
    unchanged = [s for s in report.skipped if s.reason.startswith("unchanged")]
    assert len(unchanged) == 8
    assert await price_of(fares, "E", "A") == 12500
    assert await price_of(fares, "A", "C") == 7000


async def test_importing_twice_gives_the_same_fares(fares, db):
    await seed(fares)
    await import_feed(fares)
    after_first = await row_counts(db)
    again = await import_feed(fares)
    assert list(again.imported) == []
    assert len([s for s in again.skipped if s.reason.startswith("unchanged")]) == 12
    assert await row_counts(db) == after_first


async def test_a_broken_feed_changes_nothing_and_names_file_line_and_field(fares, db):
    await seed(fares)
    before = await row_counts(db)
    bad = fixture_text("fare_products.txt").replace("12500,IDR", "12.500,00,IDR")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await import_feed(fares, feed_zip(fare_products_txt=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(err.value) == ["feed"]
    assert "fare_products.txt line 8" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await import_feed(fares, b"PK\x03\x04 truncated")
    assert "is not a zip file" in err.value.details()
    assert await row_counts(db) == before


async def test_an_import_before_a_scheduled_change_imports_the_pair_until_it(fares, db):
    """A pair with a change scheduled after the import's instant used to refuse the whole
    import (OVERLAPPING_PERIOD); the imported price now holds until the scheduled one."""
    await seed(fares)
    scheduled = in_seconds(3600)
    await set_fare(fares, "A", "B", 6100, scheduled)
    report = await import_feed(fares)
    imported = {(f.origin_code, f.destination_code): f for f in report.imported}
    assert imported["A", "B"].price.units == 5500
    assert await price_of(fares, "A", "B") == 5500
    assert await price_of(fares, "A", "B", scheduled) == 6100


async def test_a_dry_run_reports_and_changes_nothing(fares, db):
    await seed(fares)
    before = await row_counts(db)
    report = await import_feed(fares, dry_run=True)
    assert report.dry_run and len(report.imported) == 4
    assert await row_counts(db) == before


async def test_a_scheduled_import_and_an_explicit_area_mapping(fares):
    await seed(fares)
    start = in_seconds(3600)
    report = await import_feed(fares, effective_from=ts(start), area_terminals={"depot": "D"})
    assert report.effective_from == ts(start)
    assert pairs(report)[("D", "A")] == (9000, 5000)
    assert await price_of(fares, "A", "B") == 5000
    assert await price_of(fares, "A", "B", start) == 5500
    again = await import_feed(fares, effective_from=ts(start), area_terminals={"depot": "D"})
    assert list(again.imported) == []


async def test_only_admins_import(fares):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await fares.call(
            "ImportGtfsFares", fare_pb2.ImportGtfsFaresRequest(feed=feed_zip()), role=Role.OPERATOR
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
