"""What `tiket gate status` shows, read from the gate's SQLite file (a running agent keeps
writing it; WAL lets this read alongside)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

from gate import offline_db
from gate.offline_db import from_ms, get_time, get_value


@dataclass(frozen=True)
class GateStatus:
    mode: str  # online / offline as the agent last saw it; "" = never ran
    direction: str  # as the fare service's registry last said; "" = never asked
    last_online_at: datetime | None
    pending_taps: int
    oldest_pending_at: datetime | None
    last_upload_error: str
    cards: int
    blocked_cards: int
    users_refreshed_at: datetime | None
    users_full_at: datetime | None
    fare_versions: int
    fares_generated_at: datetime | None
    last_sync_at: datetime | None
    clock_skew: float | None  # seconds this clock is ahead at the last heartbeat; None: never


def read_status(conn: sqlite3.Connection) -> GateStatus:
    pending, oldest = conn.execute(
        "SELECT count(*), min(timestamp_ms) FROM offline_tasks WHERE status = 'pending'"
    ).fetchone()
    error = conn.execute(
        """SELECT last_error FROM offline_tasks WHERE last_error IS NOT NULL
            ORDER BY attempts DESC, timestamp_ms LIMIT 1"""
    ).fetchone()
    cards, blocked = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE status != 'active') FROM users"
    ).fetchone()
    (fares,) = conn.execute("SELECT count(*) FROM fares").fetchone()
    skew = get_value(conn, offline_db.CLOCK_SKEW)
    return GateStatus(
        mode=get_value(conn, offline_db.MODE) or "",
        direction=get_value(conn, offline_db.DIRECTION) or "",
        last_online_at=get_time(conn, offline_db.LAST_ONLINE),
        pending_taps=pending,
        oldest_pending_at=None if oldest is None else from_ms(oldest),
        last_upload_error=error[0] if error else "",
        cards=cards,
        blocked_cards=blocked,
        users_refreshed_at=get_time(conn, offline_db.USERS_REFRESHED),
        users_full_at=get_time(conn, offline_db.USERS_FULL),
        fare_versions=fares,
        fares_generated_at=get_time(conn, offline_db.FARES_REFRESHED),
        last_sync_at=get_time(conn, offline_db.LAST_SYNC),
        clock_skew=None if skew is None else int(skew) / 1000,
    )
