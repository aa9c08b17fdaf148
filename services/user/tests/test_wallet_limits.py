"""The wallet's limits where they meet: a refund that would pass the balance cap, and the
database's own rule that a released hold says why."""

from __future__ import annotations

from decimal import Decimal

import grpc
import psycopg
import pytest
from tiket.user.v1 import user_pb2

from services.user.domain import MAX_BALANCE
from services.user.tests.helpers import idr, new_user, wallet


async def money(users, method: str, user_id: str, amount: int, key: str, reference: str = ""):
    request_type = getattr(user_pb2, f"{method}Request")
    fields = {"reference": reference} if reference else {}
    return await users.call(
        method, request_type(user_id=user_id, amount=idr(amount), idempotency_key=key, **fields)
    )


async def test_a_refund_that_would_pass_the_balance_cap_is_refused_and_credits_nothing(users):
    cap = int(MAX_BALANCE)
    user = await new_user(users, balance=cap)
    await money(users, "Charge", user.id, 50_000, "c-1", "booking-1")
    await money(users, "TopUp", user.id, 30_000, "t-1")  # 20 000 short of the cap

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await money(users, "Refund", user.id, 50_000, "r-1", "booking-1")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "at most 20000.00 can be credited now" in err.value.details()
    assert await wallet(users, user.id) == (MAX_BALANCE - 20_000, 0, MAX_BALANCE - 20_000)

    # What fits is credited, and the rest once the rider has spent some.
    await money(users, "Refund", user.id, 20_000, "r-2", "booking-1")
    await money(users, "Charge", user.id, 30_000, "c-2", "booking-2")
    refunded = await money(users, "Refund", user.id, 30_000, "r-3", "booking-1")
    assert refunded.balance_after.units == cap
    assert (await wallet(users, user.id))[0] == Decimal(cap)


async def test_the_database_refuses_a_released_hold_without_a_reason(users, db):
    user = await new_user(users, balance=10_000)
    hold = await users.call(
        "PlaceHold", user_pb2.PlaceHoldRequest(user_id=user.id, amount=idr(1_000), reference="R-1")
    )
    with pytest.raises(psycopg.errors.CheckViolation):
        await db.execute(
            """UPDATE holds SET status = 'released', closed_at = now(), release_reason = NULL
                WHERE id = %s""",
            (hold.id,),
        )
    with pytest.raises(psycopg.errors.CheckViolation):
        await db.execute("UPDATE holds SET release_reason = 'whatever' WHERE id = %s", (hold.id,))
    released = await users.call(
        "ReleaseHold", user_pb2.ReleaseHoldRequest(hold=user_pb2.HoldSelector(hold_id=hold.id))
    )
    assert released.status == user_pb2.HOLD_STATUS_RELEASED
