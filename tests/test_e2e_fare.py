"""End to end: the real `tiket serve fare` process, loaded with the demo data, called with the
real grpcurl binary, and fed a GTFS feed by the real `tiket fares import-gtfs` command."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc import aio

from libs.config import Settings, load
from services.fare import demo
from services.fare.tests.helpers import feed_zip, fixture_text
from tests.support import keys
from tests.support.cleanup import remove_run
from tests.support.processes import ServiceProcess, grpcurl, service_process
from tests.support.processes import tiket as run_tiket
from tests.support.settings import isolated_env

pytestmark = pytest.mark.e2e
SERVICE = "tiket.fare.v1.FareService"


@pytest.fixture(scope="module")
def fare_process() -> Iterator[ServiceProcess]:
    """One fare service for the module, loaded with seed 004's demo data."""
    env = isolated_env()
    with service_process("fare", env) as child:
        settings = load(child.env)
        asyncio.run(_load_demo(child.address, settings))
        yield child
    asyncio.run(remove_run(load(env), ["fare"]))


async def _load_demo(address: str, settings: Settings) -> None:
    metadata = keys.bearer(settings, "admin", "e2e-seed")
    async with aio.insecure_channel(address) as channel:
        await demo.load(channel, metadata, lambda _: None)


def token(process: ServiceProcess, role: str = "admin", sub: str = "e2e") -> str:
    return keys.token(load(process.env), role, sub)


def get_fare(process: ServiceProcess, origin: str, destination: str, **kwargs) -> dict:
    return grpcurl(
        process.address,
        f"{SERVICE}/GetFare",
        token=kwargs.pop("token", None) or token(process, "gate", "A/A-EXIT-01"),
        data={"origin_code": origin, "destination_code": destination, **kwargs},
    )


def test_reflection_lists_the_service_and_get_fare_answers_the_seeded_matrix(fare_process):
    listed = grpcurl(fare_process.address, "list").split()
    assert {SERVICE, "grpc.health.v1.Health"} <= set(listed)
    described = grpcurl(fare_process.address, "describe", SERVICE)
    assert "rpc GetFare ( .tiket.fare.v1.GetFareRequest ) returns ( .tiket.fare.v1.Fare )" in (
        described
    )
    fare = get_fare(fare_process, "A", "E")
    assert fare["price"] == {"currency_code": "IDR", "units": "12000"}
    most = grpcurl(
        fare_process.address,
        f"{SERVICE}/GetMaxFare",
        token=token(fare_process, "service", "journey"),
        data={"origin_code": "C"},
    )
    assert most["price"]["units"] == "10000" and most["fare"]["destination_code"] == "E"


def test_bad_input_and_unknown_pairs_reach_grpcurl_with_their_status(fare_process):
    with pytest.raises(subprocess.CalledProcessError) as err:
        get_fare(fare_process, "A", "A")
    assert "Code: InvalidArgument" in err.value.stderr
    assert '"field":"destination_code"' in err.value.stderr.replace(" ", "")
    with pytest.raises(subprocess.CalledProcessError) as err:
        get_fare(fare_process, "A", "Z")
    assert "Code: NotFound" in err.value.stderr and "terminal Z" in err.value.stderr


def tiket(process: ServiceProcess, *args: str) -> subprocess.CompletedProcess:
    return run_tiket(*args, env=process.env)


def test_import_gtfs_command_imports_once_and_refuses_a_broken_feed(fare_process, tmp_path: Path):
    feed = tmp_path / "feed.zip"
    feed.write_bytes(feed_zip())
    dry = tiket(fare_process, "fares", "import-gtfs", str(feed), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would import 4 fare(s)" in dry.stdout
    assert get_fare(fare_process, "A", "B")["price"]["units"] == "5000"

    first = tiket(fare_process, "fares", "import-gtfs", str(feed))
    assert first.returncode == 0, first.stderr
    assert "imported 4 fare(s)" in first.stdout
    assert re.search(r"A -> B +Rp 5.000 +Rp 5.500 +fare_leg_rules.txt:2", first.stdout)
    assert "fare_leg_rules.txt:14  time-of-day fare" in first.stdout
    assert "areas: A=A, B=B, C=C, pusat=E" in first.stdout
    assert get_fare(fare_process, "A", "B")["price"]["units"] == "5500"

    again = tiket(fare_process, "fares", "import-gtfs", str(feed))
    assert again.returncode == 0 and "imported 0 fare(s)" in again.stdout

    broken = tmp_path / "broken.zip"
    products = fixture_text("fare_products.txt").replace("5500,IDR", "lima ribu,IDR")
    broken.write_bytes(feed_zip(fare_products_txt=products))
    refused = tiket(fare_process, "fares", "import-gtfs", str(broken))
    assert refused.returncode == 1
    assert "fare_products.txt line 3, field amount: 'lima ribu' is not a decimal amount" in (
        refused.stderr
    )
    assert get_fare(fare_process, "A", "B")["price"]["units"] == "5500"


def test_import_gtfs_command_prints_a_report_larger_than_grpc_s_default_message(
    fare_process, tmp_path: Path
):
    """A network's feed imported before its areas are mapped skips every rule, each with its
    reason: ~30,000 rules make a report of ~5 MB, past gRPC's default 4 MB a client takes.
    The command used to print `import refused, nothing changed: RESOURCE_EXHAUSTED` though
    the import had been applied."""
    before = get_fare(fare_process, "B", "C")["price"]["units"]
    assert before != "10000"
    areas = [f"Z{n:03d}" for n in range(175)]
    unmapped = [f"kota,{a},{b},F5000,,0" for a in areas for b in areas if a != b]
    rules = fixture_text("fare_leg_rules.txt").replace("kota,B,C,F6000", "kota,B,C,F10000")
    feed = tmp_path / "network.zip"
    feed.write_bytes(
        feed_zip(
            areas_txt=fixture_text("areas.txt") + "".join(f"{a},Halte {a}\n" for a in areas),
            fare_leg_rules_txt=rules + "\n".join(unmapped) + "\n",
        )
    )

    run = tiket(fare_process, "fares", "import-gtfs", str(feed))

    assert run.returncode == 0, run.stderr
    assert re.search(r"B -> C +Rp [0-9.]+ +Rp 10.000 +fare_leg_rules.txt:6", run.stdout)
    assert run.stdout.count("maps to no terminal") == len(unmapped) + 1  # and the depot
    assert f"fare_leg_rules.txt:{15 + len(unmapped)}  area 'Z174' maps to no terminal" in (
        run.stdout
    )
    assert get_fare(fare_process, "B", "C")["price"]["units"] == "10000"
