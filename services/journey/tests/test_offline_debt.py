"""Debt from offline taps, against the real user, fare and journey services: an offline trip
the balance cannot cover is charged whole (ChargeRequest.allow_debt), the card is suspended
in the same transaction, online taps are then refused, and top-ups repay the debt first and
lift the suspension — also when they race the settlement. After every test the system
settles and the money audit (balance = sum(ledger) among it) must hold."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import psycopg
import pytest
from tiket.journey.v1 import journey_pb2
from tiket.user.v1 import user_pb2

from services.journey.tests.mesh import (
    idr,
    journeys_of,
    new_rider,
    offline_tap,
    refusal_of,
    settle,
    sync,
    tap_in,
    wallet,
)
from services.user.domain import DEBT_REASON

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.usefixtures("audited")]
J = journey_pb2
MINUTE = timedelta(minutes=1)
FARE_A_E = 12_000


async def offline_entry(mesh, card: str) -> datetime:
    """An entry at A decided offline, uploaded; its time."""
    t = datetime.now(UTC) + MINUTE  # fares start when the mesh seeds them: run ahead
    await sync(mesh, "A", "A-ENTRY-01", [offline_tap("in", card, t, FARE_A_E)])
    return t


async def offline_exit(mesh, card: str, entered: datetime) -> J.SyncOfflineTapsResponse:
    """The exit at E, 20 minutes after `entered`, decided offline and uploaded: A→E."""
    return await sync(mesh, "E", "E-EXIT-01", [offline_tap("out", card, entered + 20 * MINUTE)])


async def top_up(mesh, user_id: str, amount: int, key: str) -> None:
    request = user_pb2.TopUpRequest(user_id=user_id, amount=idr(amount), idempotency_key=key)
    await mesh.users.TopUp(request, metadata=mesh.metadata())


async def status(mesh, user_id: str) -> tuple[int, str]:
    user = await mesh.users.GetUser(
        user_pb2.GetUserRequest(user_id=user_id), metadata=mesh.metadata()
    )
    return user.status, user.status_reason


async def books(mesh, user_id: str) -> tuple[Decimal, list[str]]:
    """(sum of the ledger, the new statuses of the card's user.status_changed events)."""
    async with await psycopg.AsyncConnection.connect(mesh.database_url("user")) as conn:
        cur = await conn.execute(
            "SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE user_id = %s", (user_id,)
        )
        (total,) = await cur.fetchone()
        cur = await conn.execute(
            """SELECT body -> 'data' ->> 'newStatus' FROM outbox
                WHERE event_type = 'user.status_changed' AND body ->> 'subject' = %s
                ORDER BY seq""",
            (user_id,),
        )
        return total, [row[0] for row in await cur.fetchall()]


async def check_in_refusal(mesh, card: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await tap_in(mesh, card)
    return refusal_of(err.value)[0]


SUSPENDED, ACTIVE = user_pb2.USER_STATUS_SUSPENDED, user_pb2.USER_STATUS_ACTIVE


async def test_an_offline_trip_beyond_the_balance_is_a_debt_until_a_top_up_repays_it(mesh):
    user_id, card = await new_rider(mesh, 3_000)
    answer = await offline_exit(mesh, card, await offline_entry(mesh, card))
    assert answer.results[0].outcome == J.TAP_OUTCOME_APPLIED
    await settle(mesh)
    (journey,) = await journeys_of(mesh, user_id)
    assert (journey.status, journey.settlement) == (J.JOURNEY_STATUS_COMPLETED, J.SETTLEMENT_PAID)
    assert await wallet(mesh, user_id) == (Decimal(-9_000), 0, Decimal(-9_000))
    assert await books(mesh, user_id) == (Decimal(-9_000), ["suspended"])
    assert await status(mesh, user_id) == (SUSPENDED, DEBT_REASON)
    assert await check_in_refusal(mesh, card) == "USER_NOT_ACTIVE"

    await top_up(mesh, user_id, 5_000, "part")  # repays part of the debt: still suspended
    assert await wallet(mesh, user_id) == (Decimal(-4_000), 0, Decimal(-4_000))
    assert await status(mesh, user_id) == (SUSPENDED, DEBT_REASON)
    assert await check_in_refusal(mesh, card) == "USER_NOT_ACTIVE"

    await top_up(mesh, user_id, 16_000, "rest")  # repays it and lifts the suspension
    assert await status(mesh, user_id) == (ACTIVE, "")
    assert await books(mesh, user_id) == (Decimal(12_000), ["suspended", "active"])
    entered = await tap_in(mesh, card)  # online again: the hold needs the balance
    assert entered.journey.status == J.JOURNEY_STATUS_ACTIVE
    assert await wallet(mesh, user_id) == (Decimal(12_000), Decimal(12_000), 0)


async def test_an_online_check_in_still_needs_the_balance(mesh):
    _, card = await new_rider(mesh, 3_000)
    assert await check_in_refusal(mesh, card) == "INSUFFICIENT_BALANCE"


async def test_top_ups_racing_offline_settlements_leave_the_status_the_balance_says(mesh):
    """Riders whose offline exit is uploaded while their top-ups arrive, all at once: each
    ends with balance = sum(ledger) = start + top-ups - fare, suspended exactly when that is
    below zero, its status events alternating suspended/active."""
    rng = random.Random(16)
    expected: dict[str, int] = {}
    calls = []
    for _ in range(5):
        start, top_ups = rng.choice([0, 3_000]), [rng.choice([2_000, 6_000]) for _ in range(2)]
        user_id, card = await new_rider(mesh, start)
        expected[user_id] = start + sum(top_ups) - FARE_A_E
        calls.append(offline_exit(mesh, card, await offline_entry(mesh, card)))
        calls += [top_up(mesh, user_id, a, f"race-{i}") for i, a in enumerate(top_ups)]
    rng.shuffle(calls)
    await asyncio.gather(*calls)
    await settle(mesh)
    for user_id, balance in expected.items():
        assert await wallet(mesh, user_id) == (Decimal(balance), 0, Decimal(balance))
        total, changes = await books(mesh, user_id)
        assert total == balance
        in_debt = balance < 0
        assert await status(mesh, user_id) == (
            (SUSPENDED, DEBT_REASON) if in_debt else (ACTIVE, "")
        )
        assert changes == ["suspended", "active"] * (len(changes) // 2) + ["suspended"] * in_debt
