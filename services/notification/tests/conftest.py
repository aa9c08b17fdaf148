"""One stack (real user and notification services, SMTP server, webhook provider) per test
module: starting it costs about a second, and every test works on riders of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from services.notification.tests.stack import Stack, running_stack


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[Stack]:
    async with running_stack() as running:
        yield running
