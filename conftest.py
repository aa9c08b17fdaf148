"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.databases import temporary_database


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (URL), dropped after the test."""
    with temporary_database() as url:
        yield url
