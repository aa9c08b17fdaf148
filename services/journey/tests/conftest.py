"""One mesh (real user, fare and journey services, seeded) per test module: starting three
services costs seconds, and every test works on riders of its own. The money audit runs when
the module is done."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest_asyncio

from services.journey.config import JourneyConfig
from services.journey.tests.audit import audit
from services.journey.tests.mesh import Mesh, running_mesh

# Fares start when the mesh seeds them and cannot be set in the past, so tests move exits
# into the future instead of entries into the past: the gates' clocks may run 3 h ahead.
TEST_CONFIG = JourneyConfig(max_clock_skew=timedelta(hours=3))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh() -> AsyncIterator[Mesh]:
    async with running_mesh(TEST_CONFIG) as running:
        yield running
        problems = await audit(running.database_url("user"), running.database_url("journey"))
        assert problems == [], f"money audit failed: {problems}"
