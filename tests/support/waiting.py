"""Waiting in tests for what happens asynchronously (a consumer, a worker, a relay)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

import pytest


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], what: str, within: float = 10.0
) -> None:
    """Poll `condition` (plain or async) until it holds; fail the test after `within` s."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)
