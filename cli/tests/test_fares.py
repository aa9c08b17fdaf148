"""`tiket fares import-gtfs`: what it refuses before sending, and what it says of a failed call."""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime
from pathlib import Path

import grpc
import pytest
from grpc import aio

from cli import fares
from services.fare import gtfs
from services.fare.tests.helpers import feed_zip


def _args(feed: Path) -> argparse.Namespace:
    return argparse.Namespace(feed=feed, dry_run=False, map=[], effective_from=None)


def test_a_feed_larger_than_one_import_takes_is_refused_here_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    feed = tmp_path / "feed.zip"
    feed.write_bytes(feed_zip())
    assert fares._request(_args(feed)).feed  # the fixture feed fits

    monkeypatch.setattr(gtfs, "MAX_UPLOAD_BYTES", 1024)
    with pytest.raises(SystemExit) as exit_:
        fares._request(_args(feed))
    message = str(exit_.value.code)
    assert "compressed; one import takes at most" in message
    assert "Import it in parts" in message and "nothing imported" in message


def _error(code: grpc.StatusCode) -> aio.AioRpcError:
    return aio.AioRpcError(code, aio.Metadata(), aio.Metadata(), details="why")


def test_only_a_refusal_is_said_to_have_changed_nothing():
    refused = fares._failure(_error(grpc.StatusCode.INVALID_ARGUMENT), "fare:50052")
    assert refused == "tiket: import refused, nothing changed: INVALID_ARGUMENT: why"
    for code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL):
        unknown = fares._failure(_error(code), "fare:50052")
        assert "may or may not have been applied" in unknown and "nothing changed" not in unknown
        assert "run the same command again" in unknown
    down = fares._failure(_error(grpc.StatusCode.UNAVAILABLE), "fare:50052")
    assert down == "tiket: no fare service at fare:50052: start it (tiket up)"


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        # Python reads "2027-01-01+07:00" as 07:00 without an offset: the example must not be it
        ("2027-01-01", "2027-01-01T00:00:00+07:00"),
        ("2027-01-01T06:30", "2027-01-01T06:30:00+07:00"),
        ("2027-01-01 06:30:15", "2027-01-01T06:30:15+07:00"),
    ],
)
def test_a_time_without_offset_is_refused_with_an_example_that_works(
    typed: str, meant: str
) -> None:
    with pytest.raises(SystemExit) as refused:
        fares._instant(typed)
    message = str(refused.value)
    assert message.startswith(f"tiket: --effective-from {typed!r} needs an offset, e.g. ")
    example = message.rsplit("e.g. ", 1)[1]
    # what it suggests is accepted, as the instant the operator meant
    assert fares._instant(example).ToSeconds() == datetime.fromisoformat(meant).timestamp()


async def test_a_long_import_says_it_is_still_going(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setattr(fares, "PROGRESS_SECONDS", 0.01)
    progress = asyncio.create_task(fares._still_going("importing at the fare service x:1"))
    await asyncio.sleep(0.1)  # the loop wakes the 0.01-s ticker first, however busy
    progress.cancel()
    said = capsys.readouterr().err.splitlines()
    assert said and all(
        line.startswith("tiket: still importing at the fare service x:1 (") for line in said
    )
