"""Forward-only versioned SQL migrations.

A database holds one or more tracks of migrations: the shared event tables of libs/events
(`events`) and the service's own (`user`, `fare` …), each a folder of `NNNN_name.sql`.
Applied files are recorded in `schema_migrations` with a SHA-256 checksum; an applied file
that was edited afterwards is refused. An advisory lock makes replicas that start together
migrate exactly once.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

log = logging.getLogger(__name__)

MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any constant shared by all replicas of every service; the lock is per database.
ADVISORY_LOCK_KEY = 0x7469_6B65_74  # "tiket"


class MigrationError(RuntimeError):
    """The migrations on disk and those applied to the database disagree."""


@dataclass(frozen=True)
class Migration:
    track: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class Track:
    """A named folder of migrations."""

    name: str
    folder: Path

    def discover(self) -> list[Migration]:
        """The migrations in the folder, in version order; gaps and bad names are errors."""
        found: list[Migration] = []
        for path in sorted(self.folder.glob("*.sql")):
            match = MIGRATION_NAME.match(path.name)
            if not match:
                raise MigrationError(f"{path}: name must look like 0001_create_users.sql")
            found.append(Migration(self.name, int(match.group(1)), path.name, path.read_text()))
        for expected, migration in enumerate(found, start=1):
            if migration.version != expected:
                raise MigrationError(
                    f"{self.folder}: expected version {expected:04d}, found {migration.name}"
                )
        return found


def migrate(database_url: str, tracks: Sequence[Track]) -> list[str]:
    """Apply pending migrations of every track; return the names applied now."""
    applied_now: list[str] = []
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       track TEXT NOT NULL,
                       version INTEGER NOT NULL,
                       name TEXT NOT NULL,
                       checksum TEXT NOT NULL,
                       applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                       PRIMARY KEY (track, version))"""
            )
            for track in tracks:
                applied_now += _apply_track(conn, track)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    return applied_now


def _apply_track(conn: psycopg.Connection, track: Track) -> list[str]:
    migrations = track.discover()
    applied = {
        version: (name, checksum)
        for version, name, checksum in conn.execute(
            "SELECT version, name, checksum FROM schema_migrations WHERE track = %s", (track.name,)
        )
    }
    unknown = sorted(set(applied) - {m.version for m in migrations})
    if unknown:
        raise MigrationError(
            f"{track.name}: the database has migrations this code does not know ({unknown}); "
            "is an older version of the service running against a newer database?"
        )
    done: list[str] = []
    for migration in migrations:
        if migration.version in applied:
            name, checksum = applied[migration.version]
            if checksum != migration.checksum:
                raise MigrationError(
                    f"{track.name}: migration {migration.name} was edited after it was applied "
                    f"(checksum {checksum[:12]}… when applied as {name}, {migration.checksum[:12]}… "
                    "now). Applied migrations are forward-only: restore the file and put the "
                    "change in a new migration."
                )
            continue
        with conn.transaction():
            conn.execute(migration.sql)
            conn.execute(
                "INSERT INTO schema_migrations (track, version, name, checksum) "
                "VALUES (%s, %s, %s, %s)",
                (track.name, migration.version, migration.name, migration.checksum),
            )
        log.info("applied migration %s/%s", track.name, migration.name)
        done.append(f"{track.name}/{migration.name}")
    return done
