"""Throw-away PostgreSQL databases for tests: unique names, migrated, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from libs.db.database import drop_database, ensure_database
from libs.db.migrations import Track, migrate

POSTGRES_URL = os.environ.get("TIKET_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


def unique_name(prefix: str = "tiket_test") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@contextmanager
def temporary_database(tracks: Sequence[Track] = ()) -> Iterator[str]:
    """Yield the URL of a new database with `tracks` applied; drop it on exit."""
    url = f"{POSTGRES_URL.rstrip('/')}/{unique_name()}"
    ensure_database(url)
    try:
        migrate(url, tracks)
        yield url
    finally:
        drop_database(url)
