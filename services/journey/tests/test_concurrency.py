"""200 gates tapping random cards in and out at once — the same card often at several gates
at the same moment. Afterwards the money must add up for every card: balance = top-ups −
the fares taken, no hold left on a closed journey, never two active journeys."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from dataclasses import replace
from datetime import timedelta

import grpc
import psycopg
import pytest
from tiket.fare.v1 import fare_pb2, fare_pb2_grpc

from libs.auth import Role
from services.journey.tests.audit import audit
from services.journey.tests.mesh import new_rider, sweeper_of, tap_request

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]
GATES = 200
TAPS_PER_GATE = 4
RIDERS = 80
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED}
ANSWERS = {"OK", "FAILED_PRECONDITION"}


async def register_gates(mesh) -> list[tuple[str, str]]:
    stub = fare_pb2_grpc.FareServiceStub(mesh.channels["fare"])
    gates = [(t, f"{t}-G-{n:03d}") for n in range(GATES // 5) for t in "ABCDE"]
    for terminal, code in gates:
        await stub.RegisterGate(
            fare_pb2.RegisterGateRequest(
                terminal_code=terminal, gate_code=code, type=fare_pb2.GATE_TYPE_BIDIRECTIONAL
            ),
            metadata=mesh.metadata(),
        )
    return gates


async def gate_worker(mesh, terminal: str, gate: str, cards: list[str], seen: Counter) -> None:
    """A gate: each tap retried with its tap id while the answer is 'try again'."""
    rng = random.Random(gate)
    metadata = mesh.metadata(Role.GATE, f"{terminal}/{gate}")
    for _ in range(TAPS_PER_GATE):
        kind = rng.choice(("in", "out"))
        request = tap_request(kind, rng.choice(cards), terminal, gate, str(uuid.uuid4()))
        call = mesh.journeys.CheckIn if kind == "in" else mesh.journeys.CheckOut
        for attempt in range(6):
            try:
                await call(request, metadata=metadata, timeout=15)
                seen["OK"] += 1
                break
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE or attempt == 5:
                    seen[exc.code().name] += 1
                    break
                await asyncio.sleep(0.05 * (attempt + 1))


async def test_200_gates_tapping_random_cards_keep_every_rupiah(mesh):
    gates = await register_gates(mesh)
    cards = [(await new_rider(mesh, 60_000))[1] for _ in range(RIDERS)]
    seen: Counter[str] = Counter()
    await asyncio.gather(*(gate_worker(mesh, t, g, cards, seen) for t, g in gates))
    assert set(seen) <= ANSWERS, seen
    assert seen["OK"] > GATES * TAPS_PER_GATE // 2

    # Anything a crash-free run could leave unfinished is the sweeper's to finish.
    finish = replace(mesh.config, settle_after=timedelta(0), orphan_after=timedelta(0))
    async with sweeper_of(mesh, finish) as sweeper:
        await sweeper.sweep()
    assert await audit(mesh.database_url("user"), mesh.database_url("journey")) == []
    async with await psycopg.AsyncConnection.connect(mesh.database_url("journey")) as conn:
        cur = await conn.execute(
            "SELECT status::text, count(*) FROM journey_history GROUP BY status"
        )
        statuses = dict(await cur.fetchall())
    assert {"active", "completed", "abandoned", "incomplete"} <= set(statuses), statuses
