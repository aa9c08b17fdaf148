"""libs.periodic: work every interval, at once again after a full batch or a wake()."""

from __future__ import annotations

import asyncio

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
