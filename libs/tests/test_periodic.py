"""libs.periodic: work every interval, at once again after a full batch or a wake()."""

from __future__ import annotations

import asyncio
import logging

import psycopg
import pytest

from libs.periodic import Periodic


async def test_wake_runs_the_work_before_the_interval() -> None:
    runs: list[int] = []
    ran = asyncio.Event()

    async def work() -> int:
        runs.append(1)
        ran.set()
        return 0

    job = Periodic("test", work, interval=3600)
    await job.start()
    try:
        await asyncio.wait_for(ran.wait(), 1)  # the first run starts at once
        ran.clear()
        job.wake()
        await asyncio.wait_for(ran.wait(), 1)
        assert len(runs) == 2
    finally:
        await job.stop()


async def test_a_wake_during_a_run_makes_one_more_run() -> None:
    runs: list[int] = []
    release = asyncio.Event()

    async def work() -> int:
        runs.append(1)
        if len(runs) == 1:
            await release.wait()
        return 0

    job = Periodic("test", work, interval=3600)
    await job.start()
    try:
        await asyncio.sleep(0.01)
        job.wake()  # while the first run is still working
        release.set()
        for _ in range(100):
            if len(runs) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(runs) == 2
    finally:
        await job.stop()


@pytest.mark.parametrize(
    ("failure", "level", "traceback"),
    [
        # PostgreSQL restarting: the sweepers logged a traceback each at ERROR, every tick.
        (psycopg.errors.AdminShutdown("terminating connection"), logging.WARNING, False),
        (psycopg.OperationalError("server closed\n\tthe connection"), logging.WARNING, False),
        (ValueError("a bug"), logging.ERROR, True),
    ],
)
async def test_an_outage_is_one_warning_line_and_anything_else_a_traceback(
    caplog: pytest.LogCaptureFixture, failure: Exception, level: int, traceback: bool
) -> None:
    failed = asyncio.Event()

    async def work() -> int:
        failed.set()
        raise failure

    caplog.set_level(logging.INFO, logger="libs.periodic")
    job = Periodic("sweeper", work, interval=3600)
    await job.start()
    try:
        await failed.wait()
        await asyncio.sleep(0)  # the loop logs right after the work raised
    finally:
        await job.stop()
    (record,) = [r for r in caplog.records if r.name == "libs.periodic"]
    assert record.levelno == level
    assert (record.exc_info is not None) is traceback
    if not traceback:  # the error on the one line
        assert "\n" not in record.getMessage()
        assert " ".join(str(failure).split()) in record.getMessage()
