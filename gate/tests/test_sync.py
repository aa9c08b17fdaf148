"""Uploading offline taps against a fake JourneyService in this process (conftest.py):
batches of at most 500, results stored back and tasks cleared, and every kind of "not now"
keeping them pending."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import timedelta
from decimal import Decimal

from tiket.journey.v1 import journey_pb2

from gate.offline_db import now, to_ms, transaction
from libs.money import to_money


def add_offline_taps(path, count: int) -> list[str]:
    """`count` offline entries of distinct cards, a second apart, as decide_offline records."""
    start = now() - timedelta(hours=1)
    ids = []
    with sqlite3.connect(path, isolation_level=None) as conn, transaction(conn):
        for i in range(count):
            tap_id, card, at = str(uuid.uuid4()), f"CARD{i:06d}", to_ms(start) + i * 1000
            conn.execute(
                """INSERT INTO offline_tasks (id, task_type, card_id, terminal_code, gate_code,
                                              estimated_fare_cents, timestamp_ms)
                   VALUES (?, 'checkin', ?, 'A', 'A-ENTRY-01', 1200000, ?)""",
                (tap_id, card, at),
            )
            conn.execute(
                """INSERT INTO local_transactions (card_id, terminal_code, gate_code, action_type,
                                                   mode, amount_cents, timestamp_ms, reference_id)
                   VALUES (?, 'A', 'A-ENTRY-01', 'checkin', 'offline', 1200000, ?, ?)""",
                (card, at, tap_id),
            )
            ids.append(tap_id)
    return ids


def query(path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def applied(tap: journey_pb2.OfflineTap) -> journey_pb2.OfflineTapResult:
    return journey_pb2.OfflineTapResult(tap_id=tap.tap_id, outcome=journey_pb2.TAP_OUTCOME_APPLIED)


async def test_unimplemented_keeps_the_taps_pending_and_the_gate_online(fake, agent):
    add_offline_taps(agent.db.path, 3)
    assert await agent.sync() == 0
    assert agent.online
    assert (
        query(agent.db.path, "SELECT status, attempts FROM offline_tasks") == [("pending", 1)] * 3
    )
    assert "UNIMPLEMENTED" in query(agent.db.path, "SELECT last_error FROM offline_tasks")[0][0]


async def test_a_server_gone_keeps_the_taps_pending_and_the_gate_goes_offline(fake, agent):
    _, _, server = fake
    await server.stop(None)
    add_offline_taps(agent.db.path, 2)
    assert await agent.sync() == 0
    assert not agent.online
    assert query(agent.db.path, "SELECT count(*) FROM offline_tasks") == [(2,)]


async def test_taps_go_in_batches_of_500_in_tap_order_and_are_cleared(fake, agent):
    servicer, _, _ = fake
    servicer.answer = applied
    ids = add_offline_taps(agent.db.path, 1_100)
    while await agent.sync():  # a full batch asks for another round at once
        pass
    assert [len(b) for b in servicer.batches] == [500, 500, 100]
    sent = [t.tap_id for batch in servicer.batches for t in batch]
    assert sent == ids  # oldest first
    first = servicer.batches[0][0]
    assert first.direction == journey_pb2.TAP_DIRECTION_CHECK_IN
    assert first.offline_amount.units == 12_000
    assert first.card_id == "CARD000000"
    assert query(agent.db.path, "SELECT count(*) FROM offline_tasks") == [(0,)]
    assert query(
        agent.db.path, "SELECT count(*), min(outcome), min(synced) FROM local_transactions"
    ) == [(1_100, "APPLIED", 1)]
    assert query(agent.db.path, "SELECT count(*) FROM system_config WHERE key = 'last_sync_at_ms'")


async def test_each_result_is_stored_and_a_tap_left_unanswered_stays_pending(fake, agent):
    servicer, _, _ = fake
    adjusted, rejected, duplicate, unanswered = add_offline_taps(agent.db.path, 4)
    answers = {
        adjusted: journey_pb2.OfflineTapResult(
            tap_id=adjusted,
            outcome=journey_pb2.TAP_OUTCOME_ADJUSTED,
            price_change=to_money(Decimal("-7000")),
            reason="re-priced from 12000 to 5000",
        ),
        rejected: journey_pb2.OfflineTapResult(
            tap_id=rejected, outcome=journey_pb2.TAP_OUTCOME_REJECTED, reason="UNKNOWN_CARD"
        ),
        duplicate: journey_pb2.OfflineTapResult(
            tap_id=duplicate, outcome=journey_pb2.TAP_OUTCOME_DUPLICATE
        ),
    }
    servicer.answer = lambda tap: answers.get(tap.tap_id)
    assert await agent.sync() == 0  # not a full batch
    stored = query(
        agent.db.path,
        """SELECT reference_id, synced, outcome, result_reason, price_change_cents
             FROM local_transactions ORDER BY timestamp_ms""",
    )
    assert stored == [
        (adjusted, 1, "ADJUSTED", "re-priced from 12000 to 5000", -700_000),
        (rejected, 1, "REJECTED", "UNKNOWN_CARD", None),
        (duplicate, 1, "DUPLICATE", "", None),
        (unanswered, 0, None, None, None),
    ]
    assert query(agent.db.path, "SELECT id FROM offline_tasks") == [(unanswered,)]
