"""The migration track of the shared event tables (outbox, inbox)."""

from pathlib import Path

from libs.db.migrations import Track

EVENTS_TRACK = Track("events", Path(__file__).parent / "migrations")
