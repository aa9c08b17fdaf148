"""The gate's own taps in SQLite: what it knows of a card at a tap, the offline decision and
its records written in one transaction, online taps kept for the audit trail, and the
uploads' bookkeeping (pending batch, results stored back, tasks cleared)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

from gate.decide import Card, Direction, LocalTap, Situation, Verdict, decide
from gate.offline_db import (
    LAST_SYNC,
    USERS_REFRESHED,
    from_cents,
    from_ms,
    get_time,
    read_rules,
    set_time,
    to_cents,
    to_ms,
    transaction,
)


@dataclass(frozen=True)
class Tap:
    tap_id: str
    card_id: str
    direction: Direction
    tapped_at: datetime
    terminal_code: str
    gate_code: str


@dataclass(frozen=True)
class Result:
    """The server's answer for one uploaded tap."""

    tap_id: str
    outcome: str  # APPLIED, DUPLICATE, ADJUSTED, REJECTED
    reason: str
    price_change_cents: int | None


def decide_offline(conn: sqlite3.Connection, tap: Tap) -> Verdict:
    """Decide `tap` from the snapshot; when the gate opens, record the offline task and the
    local transaction in the same transaction as the reads the decision was made on."""
    with transaction(conn):
        verdict = decide(tap.direction, situation(conn, tap), read_rules(conn), tap.tapped_at)
        if verdict.open:
            conn.execute(
                """INSERT INTO offline_tasks (id, task_type, card_id, terminal_code, gate_code,
                                              estimated_fare_cents, timestamp_ms)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                (
                    tap.tap_id,
                    tap.direction.value,
                    tap.card_id,
                    tap.terminal_code,
                    tap.gate_code,
                    to_cents(verdict.offline_amount),
                    to_ms(tap.tapped_at),
                ),
            )
            _insert_transaction(conn, tap, "offline", to_cents(verdict.spend), synced_at=None)
    return verdict


def record_online(conn: sqlite3.Connection, tap: Tap, held: int, at: datetime) -> None:
    """An online tap that opened the gate: the server has it already. `held` (minor units)
    is what a check-in held, counted as spent until a refresh shows the hold."""
    with transaction(conn):
        _insert_transaction(conn, tap, "online", held, synced_at=at)


def situation(conn: sqlite3.Connection, tap: Tap) -> Situation:
    end = "origin_code" if tap.direction is Direction.CHECK_IN else "destination_code"
    at = to_ms(tap.tapped_at)
    (max_fare,) = conn.execute(
        f"""SELECT max(price_cents) FROM fares
             WHERE {end} = ? AND is_active = 1 AND effective_from_ms <= ?
               AND (effective_until_ms IS NULL OR effective_until_ms > ?)""",
        (tap.terminal_code, at, at),
    ).fetchone()
    return Situation(
        card=_card(conn, tap.card_id),
        snapshot_at=get_time(conn, USERS_REFRESHED),
        max_fare=None if max_fare is None else from_cents(max_fare),
    )


def _card(conn: sqlite3.Connection, card_id: str) -> Card | None:
    row = conn.execute(
        "SELECT status, available_cents, exported_at_ms FROM users WHERE card_id = ?", (card_id,)
    ).fetchone()
    if row is None:
        return None
    status, available, exported = row
    # Not yet in the snapshot: offline taps not uploaded, and what the server learned after
    # the export that brought the card started (a rejected tap took nothing).
    (spent,) = conn.execute(
        """SELECT coalesce(sum(amount_cents), 0) FROM local_transactions
            WHERE card_id = ?
              AND (synced = 0 OR (synced_at_ms >= ? AND coalesce(outcome, '') != 'REJECTED'))""",
        (card_id, exported),
    ).fetchone()
    (pending,) = conn.execute(
        "SELECT count(*) FROM offline_tasks WHERE card_id = ? AND status = 'pending'", (card_id,)
    ).fetchone()
    last = conn.execute(
        """SELECT action_type, timestamp_ms, amount_cents FROM local_transactions
            WHERE card_id = ? ORDER BY timestamp_ms DESC, id DESC LIMIT 1""",
        (card_id,),
    ).fetchone()
    return Card(
        status=status,
        available=from_cents(available),
        exported_at=from_ms(exported),
        spent=from_cents(spent),
        pending_taps=pending,
        last_tap=None
        if last is None
        else LocalTap(Direction(last[0]), from_ms(last[1]), from_cents(last[2])),
    )


def _insert_transaction(
    conn: sqlite3.Connection, tap: Tap, mode: str, amount_cents: int, synced_at: datetime | None
) -> None:
    conn.execute(
        """INSERT INTO local_transactions (card_id, terminal_code, gate_code, action_type, mode,
                                           amount_cents, timestamp_ms, reference_id, synced,
                                           synced_at_ms, outcome)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (reference_id) DO NOTHING""",
        (
            tap.card_id,
            tap.terminal_code,
            tap.gate_code,
            tap.direction.value,
            mode,
            amount_cents,
            to_ms(tap.tapped_at),
            tap.tap_id,
            int(synced_at is not None),
            None if synced_at is None else to_ms(synced_at),
            "ONLINE" if mode == "online" else None,
        ),
    )


# --- uploads ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingTap:
    tap_id: str
    card_id: str
    direction: Direction
    tapped_at: datetime
    offline_amount_cents: int


def pending_batch(conn: sqlite3.Connection, limit: int) -> list[PendingTap]:
    """The oldest pending offline taps, by tap time."""
    rows = conn.execute(
        """SELECT id, card_id, task_type, timestamp_ms, estimated_fare_cents FROM offline_tasks
            WHERE status = 'pending' ORDER BY timestamp_ms, id LIMIT ?""",
        (limit,),
    ).fetchall()
    return [PendingTap(r[0], r[1], Direction(r[2]), from_ms(r[3]), r[4]) for r in rows]


def store_results(conn: sqlite3.Connection, results: list[Result], at: datetime) -> None:
    """Each result onto its local transaction, and its task cleared, in one transaction."""
    with transaction(conn):
        for r in results:
            conn.execute(
                """UPDATE local_transactions
                      SET synced = 1, synced_at_ms = ?, outcome = ?, result_reason = ?,
                          price_change_cents = ?
                    WHERE reference_id = ?""",
                (to_ms(at), r.outcome, r.reason, r.price_change_cents, r.tap_id),
            )
            conn.execute("DELETE FROM offline_tasks WHERE id = ?", (r.tap_id,))
        set_time(conn, LAST_SYNC, at)


def note_failed_upload(conn: sqlite3.Connection, tap_ids: list[str], error: str) -> None:
    """The batch stays pending; count the attempt and keep the error for `status`."""
    with transaction(conn):
        conn.executemany(
            "UPDATE offline_tasks SET attempts = attempts + 1, last_error = ? WHERE id = ?",
            [(error, tap_id) for tap_id in tap_ids],
        )


def pending_count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM offline_tasks WHERE status = 'pending'").fetchone()[0]
