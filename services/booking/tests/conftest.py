"""One stack (real user and booking services) per test module; when the module is done the
places audit must hold.

Every test call comes from 127.0.0.1, where real riders come from many addresses: the
per-address and per-user limits (tests/test_rate_limits.py) are lifted so that hundreds of
concurrent riders are not refused as one client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from services.booking.tests.stack import Stack, audit, running_stack


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[Stack]:
    async with running_stack(
        TIKET_SWEEP_INTERVAL_SECONDS="3600",
        TIKET_RATE_LIMIT_ADDRESS_PER_MINUTE="1000000",
        TIKET_RATE_LIMIT_USER_PER_MINUTE="1000000",
    ) as running:
        yield running
        problems = await audit(running.database_url(), running.database_url("user"))
        assert problems == [], f"places audit failed: {problems}"
