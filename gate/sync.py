"""Uploading the offline taps (seed 004's reconciliation flow): the oldest pending taps, at
most 500 per SyncOfflineTaps call, each result stored back on its local transaction and its
task cleared in one SQLite transaction. A server that cannot take them now (unreachable,
slow, or not offering SyncOfflineTaps yet: UNIMPLEMENTED) leaves them pending for the next
round; re-sending is safe, the server being idempotent by tap_id."""

from __future__ import annotations

from decimal import Decimal

import grpc
from grpc import aio
from tiket.journey.v1 import journey_pb2

from gate.decide import Direction
from gate.local_taps import (
    PendingTap,
    Result,
    note_failed_upload,
    pending_batch,
    store_results,
)
from gate.mesh import Mesh
from gate.offline_db import OfflineDb, from_cents, now, to_cents
from libs.money import from_money, to_money
from libs.timestamps import to_timestamp

BATCH = 500
TIMEOUT = 30.0
DIRECTIONS = {
    Direction.CHECK_IN: journey_pb2.TAP_DIRECTION_CHECK_IN,
    Direction.CHECK_OUT: journey_pb2.TAP_DIRECTION_CHECK_OUT,
}
OUTCOMES = {
    journey_pb2.TAP_OUTCOME_APPLIED: "APPLIED",
    journey_pb2.TAP_OUTCOME_DUPLICATE: "DUPLICATE",
    journey_pb2.TAP_OUTCOME_ADJUSTED: "ADJUSTED",
    journey_pb2.TAP_OUTCOME_REJECTED: "REJECTED",
}


class UploadDeferred(Exception):
    """The batch stays pending: the server could not take it now."""

    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code.name)
        self.code = code


async def upload_batch(
    db: OfflineDb, mesh: Mesh, terminal_code: str, gate_code: str, limit: int = BATCH
) -> int:
    """Send one batch of pending taps; the number the server answered. UploadDeferred when it
    answered none (the taps stay pending)."""
    batch = await db.run(pending_batch, min(limit, BATCH))
    if not batch:
        return 0
    request = journey_pb2.SyncOfflineTapsRequest(
        terminal_code=terminal_code, gate_code=gate_code, taps=[_offline_tap(t) for t in batch]
    )
    try:
        response = await mesh.journeys.SyncOfflineTaps(
            request, timeout=TIMEOUT, metadata=mesh.metadata()
        )
    except aio.AioRpcError as error:
        await db.run(
            note_failed_upload,
            [t.tap_id for t in batch],
            f"{error.code().name}: {error.details()}",
        )
        raise UploadDeferred(error.code()) from error
    sent = {t.tap_id for t in batch}
    # A result without a known outcome is no answer: that tap stays pending.
    results = [_result(r) for r in response.results if r.tap_id in sent and r.outcome in OUTCOMES]
    await db.run(store_results, results, now())
    return len(results)


def _offline_tap(tap: PendingTap) -> journey_pb2.OfflineTap:
    return journey_pb2.OfflineTap(
        tap_id=tap.tap_id,
        card_id=tap.card_id,
        direction=DIRECTIONS[tap.direction],
        tapped_at=to_timestamp(tap.tapped_at),
        offline_amount=to_money(from_cents(tap.offline_amount_cents)),
    )


def _result(r: journey_pb2.OfflineTapResult) -> Result:
    change: Decimal | None = from_money(r.price_change) if r.HasField("price_change") else None
    return Result(
        tap_id=r.tap_id,
        outcome=OUTCOMES[r.outcome],
        reason=r.reason,
        price_change_cents=None if change is None else to_cents(change),
    )
