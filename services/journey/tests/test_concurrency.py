"""200 gates tapping random cards in and out at once — the same card often at several gates
at the same moment. Once the system has settled (the sweeper finished what attempts given up
left), the money must add up for every card: balance = top-ups − the fares taken, no hold
left on a closed journey, never two active journeys. On a busy machine a tap may end
UNAVAILABLE (a dependency's deadline passed), ABORTED (lost a race every retry) or meet the
gate's own deadline: legitimate outcomes; only the money audit after settling decides."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from datetime import UTC, datetime

import grpc
import psycopg
import pytest
from tiket.fare.v1 import fare_pb2, fare_pb2_grpc

from libs.auth import Role
from libs.errors import TiketError
from services.journey.domain import TapKind, TapRequest
from services.journey.tests.audit import audit
from services.journey.tests.mesh import new_rider, settle, sweeper_of, tap_request

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]
GATES = 200
TAPS_PER_GATE = 4
RIDERS = 80
# What a gate answers by trying the same tap again (DEADLINE_EXCEEDED: its own deadline).
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
ANSWERS = {"OK", "FAILED_PRECONDITION", *(code.name for code in RETRYABLE)}


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
    assert seen["OK"] > 0, seen

    await settle(mesh)  # what attempts given up left is the sweeper's to finish
    assert await audit(mesh.database_url("user"), mesh.database_url("journey")) == []
    async with await psycopg.AsyncConnection.connect(mesh.database_url("journey")) as conn:
        cur = await conn.execute(
            "SELECT status::text, count(*) FROM journey_history GROUP BY status"
        )
        statuses = dict(await cur.fetchall())
    assert {"active", "completed", "abandoned", "incomplete"} <= set(statuses), statuses


SEED_GATES = [
    (TapKind.CHECKIN, "A", "A-ENTRY-01"),
    (TapKind.CHECKIN, "B", "B-ENTRY-01"),
    (TapKind.CHECKIN, "D", "D-BI-01"),
    (TapKind.CHECKOUT, "D", "D-BI-01"),
    (TapKind.CHECKOUT, "E", "E-EXIT-01"),
    (TapKind.CHECKOUT, "B", "B-EXIT-01"),
]


async def test_taps_given_up_half_way_settle_to_a_true_audit(mesh):
    """A journey replica on a machine so busy that every call to the wallet misses its
    deadline: its caches are warm, so taps get as far as the wallet — the tap recorded, a
    hold perhaps placed, a closing claimed — and end UNAVAILABLE there. A legitimate answer;
    once the sweeper has run, the money audit holds all the same."""
    cards = [(await new_rider(mesh, 60_000))[1] for _ in range(20)]
    outcomes: Counter[str] = Counter()
    async with sweeper_of(mesh, mesh.config) as replica:
        app = replica.app
        for card in cards:  # warm: riders, gates, terminals and fares are cached
            await app.wallet.rider(card)
        for kind, terminal, gate in SEED_GATES:
            await app.fares.gate(terminal, gate)
            await app.fares.terminal(terminal)
            if kind is TapKind.CHECKIN:
                await app.fares.max_fare_from(terminal, datetime.now(UTC))
            else:
                await app.fares.max_fare_to(terminal, datetime.now(UTC))
        app.wallet.timeout = 0.002  # now the wallet never answers in time

        async def gate_taps(n: int) -> None:
            rng = random.Random(n)
            for _ in range(6):
                kind, terminal, gate = rng.choice(SEED_GATES)
                request = TapRequest(kind, uuid.uuid4(), rng.choice(cards), terminal, gate, None)
                tap = app.check_in if kind is TapKind.CHECKIN else app.check_out
                try:
                    await tap(request)
                    outcomes["OK"] += 1
                except TiketError as exc:
                    outcomes[type(exc).__name__] += 1

        await asyncio.gather(*(gate_taps(n) for n in range(30)))
    assert outcomes["Unavailable"] > 0, outcomes
    await settle(mesh)
    assert await audit(mesh.database_url("user"), mesh.database_url("journey")) == []
