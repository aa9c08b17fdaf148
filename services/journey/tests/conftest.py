"""One mesh (real user, fare and journey services, seeded) per test module: starting three
services costs seconds, and every test works on riders of its own. When the module is done,
the sweeper finishes whatever is left pending (an attempt given up with UNAVAILABLE is a
legitimate outcome), then the money audit must hold."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest_asyncio

from services.journey.config import JourneyConfig
from services.journey.tests.audit import audit
from services.journey.tests.mesh import Mesh, running_mesh, settle

# Fares start when the mesh seeds them and cannot be set in the past, so tests move exits
# into the future instead of entries into the past: the gates' clocks may run 3 h ahead.
# The dependency timeout is generous: on a busy shared machine the default 1.5 s can pass,
# and these tests are about what the taps do, not about deadlines (tests/test_journey_faults).
TEST_CONFIG = JourneyConfig(max_clock_skew=timedelta(hours=3), dependency_timeout=10.0)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh() -> AsyncIterator[Mesh]:
    async with running_mesh(TEST_CONFIG) as running:
        yield running
        await settle(running)
        problems = await audit(running.database_url("user"), running.database_url("journey"))
        assert problems == [], f"money audit failed: {problems}"


@pytest_asyncio.fixture(loop_scope="module")
async def audited(mesh: Mesh) -> AsyncIterator[None]:
    """The money audit after the test itself, once the system has settled (tests that move
    money in ways worth checking one by one: pytest.mark.usefixtures("audited"))."""
    yield
    await settle(mesh)
    problems = await audit(mesh.database_url("user"), mesh.database_url("journey"))
    assert problems == [], f"money audit failed: {problems}"
