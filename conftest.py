"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from libs.config import load
from tests.support.databases import temporary_database
from tests.support.tcp_proxy import TcpProxy


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (URL), dropped after the test."""
    with temporary_database() as url:
        yield url


@pytest.fixture
async def redis_proxy() -> AsyncIterator[TcpProxy]:
    """A TCP proxy in front of the real Redis, to cut or stall it (fault injection)."""
    redis_url = load().redis_url
    host, _, port = redis_url.split("//", 1)[1].split("/", 1)[0].rpartition(":")
    proxy = TcpProxy(host or "127.0.0.1", int(port or 6379))
    await proxy.start()
    yield proxy
    await proxy.stop()
