"""Reading and resolving GTFS Fares v2 feeds, without a database: the fixture feed, the
errors that name file, line and field, and the rules that become fares or are skipped."""

from __future__ import annotations

import io
import zipfile
from decimal import Decimal

import pytest

from libs.errors import InvalidArgument
from services.fare import gtfs, gtfs_plan
from services.fare.tests.helpers import feed_zip, fixture_text

TERMINALS = ["A", "B", "C", "D", "E"]


def test_the_fixture_feed_reads_and_resolves_to_a_full_table():
    feed = gtfs.read_feed(feed_zip())
    assert set(feed.areas) == {"A", "B", "C", "pusat", "depot"}
    assert feed.stop_areas["pusat"] == ["S_PUSAT"]
    assert feed.products["F12500"][0].amount == Decimal(12500)
    assert [f.describe() for f in feed.timeframes["PEAK"]] == ["06:00:00-09:00:00"]

    plan = gtfs_plan.plan(feed, TERMINALS, {})
    assert plan.areas == {"A": "A", "B": "B", "C": "C", "pusat": "E"}
    table = {(f.origin, f.destination): f.price for f in plan.fares}
    assert len(table) == 12
    assert table[("A", "E")] == Decimal(12500)
    assert table[("B", "A")] == Decimal(5500)
    skipped = {s.rule: s.reason for s in plan.skipped}
    assert set(skipped) == {"fare_leg_rules.txt:14", "fare_leg_rules.txt:15"}
    assert (
        "time-of-day fare (timeframe group PEAK: 06:00:00-09:00:00)"
        in skipped["fare_leg_rules.txt:14"]
    )
    assert "area 'depot' maps to no terminal" in skipped["fare_leg_rules.txt:15"]


def test_an_explicit_mapping_wins_and_must_name_known_areas_and_terminals():
    feed = gtfs.read_feed(feed_zip())
    plan = gtfs_plan.plan(feed, TERMINALS, {"depot": "D", "pusat": "E"})
    assert plan.areas["depot"] == "D"
    assert ("D", "A") in {(f.origin, f.destination) for f in plan.fares}
    with pytest.raises(InvalidArgument) as err:
        gtfs_plan.plan(feed, TERMINALS, {"nowhere": "A"})
    assert err.value.violations[0].field == "area_terminals[nowhere]"
    with pytest.raises(InvalidArgument) as err:
        gtfs_plan.plan(feed, TERMINALS, {"depot": "Z"})
    assert "no terminal 'Z'" in err.value.violations[0].description


def test_priorities_conflicts_and_unusable_products_are_reported():
    rules = fixture_text("fare_leg_rules.txt") + (
        "kota,B,C,F7000,,0\n"  # line 16: conflicts with line 6 (F6000) at priority 0
        "kota,C,A,F10000,,2\n"  # line 17: overrides line 8
        "kota,C,C,F5000,,0\n"  # line 18: same terminal
        "kota,,A,F5000,,0\n"  # line 19: any origin
        "kota,A,B,FUSD,,5\n"  # line 20: not IDR
        "kota,depot,A,FTWO,,0\n"  # line 21: two prices by fare medium
    )
    products = fixture_text("fare_products.txt") + (
        "FUSD,Dollar fare,1.50,USD,\nFTWO,Card,4000,IDR,CARD\nFTWO,Cash,4500,IDR,CASH\n"
    )
    products = products.replace("amount,currency\n", "amount,currency,fare_media_id\n", 1)
    feed = gtfs.read_feed(feed_zip(fare_leg_rules_txt=rules, fare_products_txt=products))
    plan = gtfs_plan.plan(feed, TERMINALS, {"depot": "D"})
    reasons = {s.rule.split(":")[1]: s.reason for s in plan.skipped}
    assert "conflicting prices for B->C" in reasons["6"] and "conflicting" in reasons["16"]
    assert reasons["8"] == "overridden by a rule with rule_priority 2"
    assert "both areas map to terminal C" in reasons["18"]
    assert reasons["19"].startswith("no from_area_id")
    assert "priced in USD" in reasons["20"]
    assert "several prices" in reasons["21"]
    table = {(f.origin, f.destination): f.price for f in plan.fares}
    assert table[("C", "A")] == Decimal(10000)
    assert ("B", "C") not in table


def test_a_whole_day_timeframe_is_no_restriction():
    frames = "timeframe_group_id,start_time,end_time,service_id\nALLDAY,,,WEEKDAY\n"
    rules = "from_area_id,to_area_id,fare_product_id,from_timeframe_group_id\nA,B,F5000,ALLDAY\n"
    feed = gtfs.read_feed(feed_zip(timeframes_txt=frames, fare_leg_rules_txt=rules))
    assert [(f.origin, f.destination) for f in gtfs_plan.plan(feed, TERMINALS, {}).fares] == [
        ("A", "B")
    ]


def broken(file: str, old: str, new: str) -> bytes:
    return feed_zip(**{file.replace(".txt", "_txt"): fixture_text(file).replace(old, new, 1)})


@pytest.mark.parametrize(
    ("feed", "file", "line", "field", "words"),
    [
        (
            lambda: broken("fare_products.txt", "5500,IDR", "5.5.0,IDR"),
            "fare_products.txt",
            3,
            "amount",
            "is not a decimal amount",
        ),
        (
            lambda: broken("fare_products.txt", "6000,IDR", "6000.001,IDR"),
            "fare_products.txt",
            4,
            "amount",
            "more than two decimal places",
        ),
        (
            lambda: broken("fare_products.txt", "7000,IDR", "7000,rupiah"),
            "fare_products.txt",
            5,
            "currency",
            "ISO 4217",
        ),
        (
            lambda: broken("fare_leg_rules.txt", "kota,B,C,F6000", "kota,B,X,F6000"),
            "fare_leg_rules.txt",
            6,
            "to_area_id",
            "'X' is not in areas.txt",
        ),
        (
            lambda: broken("fare_leg_rules.txt", "kota,C,A,F7000", "kota,C,A,F9999"),
            "fare_leg_rules.txt",
            8,
            "fare_product_id",
            "'F9999' is not in fare_products.txt",
        ),
        (
            lambda: broken("fare_leg_rules.txt", "PEAK,1", "PEAK,high"),
            "fare_leg_rules.txt",
            14,
            "rule_priority",
            "not a non-negative integer",
        ),
        (
            lambda: feed_zip(timeframes_txt=None),
            "fare_leg_rules.txt",
            14,
            "from_timeframe_group_id",
            "'PEAK' is not in timeframes.txt",
        ),
        (
            lambda: broken("timeframes.txt", "09:00:00", "9am"),
            "timeframes.txt",
            2,
            "end_time",
            "is not a time",
        ),
        (
            lambda: broken("stop_areas.txt", "C,S_TIMUR", "C,S_NOWHERE"),
            "stop_areas.txt",
            4,
            "stop_id",
            "'S_NOWHERE' is not in stops.txt",
        ),
        (
            lambda: broken("areas.txt", "C,Timur", "B,Timur"),
            "areas.txt",
            4,
            "area_id",
            "'B' is defined twice",
        ),
        (
            lambda: broken("areas.txt", "area_id,area_name", "id,area_name"),
            "areas.txt",
            1,
            "area_id",
            "required column is missing",
        ),
        (
            lambda: broken("stops.txt", "S_TIMUR,C", ",C"),
            "stops.txt",
            4,
            "stop_id",
            "is required",
        ),
        (
            lambda: broken("areas.txt", "depot,Depot", "depot,Depot,extra"),
            "areas.txt",
            6,
            None,
            "has 3 fields, the header names 2",
        ),
        (lambda: feed_zip(stops_txt=None), "stops.txt", None, None, "is missing from the feed"),
        (lambda: b"not a zip", "feed", None, None, "is not a zip file"),
    ],
)
def test_malformed_feeds_name_file_line_and_field(feed, file, line, field, words):
    with pytest.raises(gtfs.GtfsError) as err:
        gtfs.read_feed(feed())
    error = err.value
    assert (error.file, error.line, error.field) == (file, line, field), str(error)
    assert words in str(error)


def test_text_that_is_not_utf8_is_refused():
    with pytest.raises(gtfs.GtfsError) as err:
        gtfs.read_feed(_zip({"areas.txt": b"area_id\n\xff\xfe\n"}))
    assert err.value.file == "areas.txt" and "not UTF-8" in str(err.value)


def _zip(
    replace: dict[str, bytes], folder: str = "", extra: dict[str, bytes] | None = None
) -> bytes:
    """The fixture feed with some files' bytes replaced, optionally inside a folder."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target, zipfile.ZipFile(io.BytesIO(feed_zip())) as source:
        for info in source.infolist():
            target.writestr(folder + info.filename, replace.get(info.filename, source.read(info)))
        for name, data in (extra or {}).items():
            target.writestr(folder + name, data)
    return out.getvalue()


def test_slim_keeps_only_the_files_read():
    fat = _zip({}, folder="feed/", extra={"shapes.txt": b"shape_id\n" + b"x\n" * 1000})
    with zipfile.ZipFile(io.BytesIO(gtfs.slim(fat))) as slim:
        assert "shapes.txt" not in slim.namelist()
        assert "fare_leg_rules.txt" in slim.namelist()
    assert gtfs.read_feed(gtfs.slim(fat)).rules == gtfs.read_feed(feed_zip()).rules
