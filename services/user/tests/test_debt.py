"""Debt (ChargeRequest.allow_debt, domain.debt_change) through the real service: a ride
already taken is charged whole, a card in debt is suspended in the same transaction, a
top-up repays the debt first and lifts that suspension (not an operator's), retries apply
once, and racing moves leave the status the final balance says. The fixture checks
balance = sum(ledger) after every test."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

import grpc
import psycopg
import pytest
from tiket.user.v1 import user_pb2

from libs.auth import Role
from services.fare.tests.helpers import error_reason
from services.user import domain
from services.user.domain import DEBT_REASON, UserStatus, Wallet
from services.user.tests.helpers import amount_of, idr, new_user, wallet

SUSPENDED, ACTIVE = user_pb2.USER_STATUS_SUSPENDED, user_pb2.USER_STATUS_ACTIVE


async def debt_charge(users, user_id: str, amount: int, key: str) -> user_pb2.LedgerEntry:
    request = user_pb2.ChargeRequest(
        user_id=user_id, amount=idr(amount), idempotency_key=key, reference=f"journey-{key}"
    )
    request.allow_debt = True
    return await users.call("Charge", request, Role.SERVICE, "journey")


async def top_up(users, user_id: str, amount: int, key: str) -> user_pb2.LedgerEntry:
    request = user_pb2.TopUpRequest(user_id=user_id, amount=idr(amount), idempotency_key=key)
    return await users.call("TopUp", request)


async def status(users, user_id: str) -> tuple[int, str]:
    user = await users.call("GetUser", user_pb2.GetUserRequest(user_id=user_id))
    return user.status, user.status_reason


async def ledger_sum(db, user_id: str) -> Decimal:
    cur = await db.execute(
        "SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE user_id = %s", (user_id,)
    )
    return (await cur.fetchone())[0]


async def status_events(db, user_id: str) -> list[dict]:
    cur = await db.execute(
        """SELECT body -> 'data' FROM outbox
            WHERE event_type = 'user.status_changed' AND body ->> 'subject' = %s ORDER BY seq""",
        (user_id,),
    )
    return [row[0] for row in await cur.fetchall()]


async def refused(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


async def refusal(call) -> str:
    """The ErrorInfo reason of a FAILED_PRECONDITION."""
    error = await refused(call)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
    return error_reason(error)


def test_the_debt_rule():
    def wallet_of(balance: int, held: int, status: UserStatus, reason: str | None = None):
        return Wallet(None, status, Decimal(balance), Decimal(held), None, reason)  # type: ignore[arg-type]

    active, suspended = UserStatus.ACTIVE, UserStatus.SUSPENDED
    change = domain.debt_change(wallet_of(3_000, 0, active), Decimal(-12_000))
    assert change == domain.StatusChange(suspended, DEBT_REASON) and change.suspends
    assert domain.debt_change(wallet_of(15_000, 12_000, active), Decimal(-4_000)) is not None
    assert domain.debt_change(wallet_of(3_000, 0, active), Decimal(-3_000)) is None
    in_debt = wallet_of(-9_000, 0, suspended, DEBT_REASON)
    assert domain.debt_change(in_debt, Decimal(8_999)) is None
    assert domain.debt_change(in_debt, Decimal(9_000)) == domain.StatusChange(active, None)
    assert domain.debt_change(wallet_of(-9_000, 0, suspended, "fraud"), Decimal(9_000)) is None
    blocked = wallet_of(-9_000, 0, UserStatus.BLOCKED, DEBT_REASON)
    assert domain.debt_change(blocked, Decimal(-1_000)) is None
    assert domain.debt_change(blocked, Decimal(10_000)) is None


async def test_a_ride_beyond_the_balance_is_a_debt_and_suspends_the_card(users, db):
    user = await new_user(users, balance=3_000)
    entry = await debt_charge(users, user.id, 12_000, "ride-1")
    assert amount_of(entry.balance_after) == Decimal(-9_000)
    assert await wallet(users, user.id) == (Decimal(-9_000), 0, Decimal(-9_000))
    assert await ledger_sum(db, user.id) == Decimal(-9_000)
    assert await status(users, user.id) == (SUSPENDED, DEBT_REASON)
    [suspended] = await status_events(db, user.id)
    assert suspended["oldStatus"] == "active" and suspended["newStatus"] == "suspended"
    assert suspended["reason"] == DEBT_REASON and suspended["debt"] is True
    assert suspended["available"]["units"] == "-9000"
    cur = await db.execute(
        "SELECT event_type FROM outbox WHERE body ->> 'subject' = %s ORDER BY seq", (user.id,)
    )
    assert [r[0] for r in await cur.fetchall()][-2:] == ["user.status_changed", "wallet.charged"]

    # The card pays for nothing more until the debt is repaid.
    hold = user_pb2.PlaceHoldRequest(user_id=user.id, amount=idr(1_000), reference="J-debt")
    assert await refusal(users.call("PlaceHold", hold)) == "USER_NOT_ACTIVE"
    shop = user_pb2.ChargeRequest(
        user_id=user.id, amount=idr(1_000), idempotency_key="shop", reference="shop-1"
    )
    assert await refusal(users.call("Charge", shop)) == "USER_NOT_ACTIVE"
    # A further ride already taken is still recorded: the debt grows, one suspension.
    await debt_charge(users, user.id, 2_000, "ride-2")
    assert await wallet(users, user.id) == (Decimal(-11_000), 0, Decimal(-11_000))
    assert len(await status_events(db, user.id)) == 1


async def test_only_a_service_may_charge_into_debt(users):
    user = await new_user(users, balance=3_000)
    request = user_pb2.ChargeRequest(
        user_id=user.id, amount=idr(12_000), idempotency_key="k", reference="r", allow_debt=True
    )
    for role in (Role.ADMIN, Role.OPERATOR):
        error = await refused(users.call("Charge", request, role))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    without = user_pb2.ChargeRequest(
        user_id=user.id, amount=idr(12_000), idempotency_key="k", reference="r"
    )
    reason = await refusal(users.call("Charge", without, Role.SERVICE, "journey"))
    assert reason == "INSUFFICIENT_BALANCE"
    assert await wallet(users, user.id) == (Decimal(3_000), 0, Decimal(3_000))
    assert await status(users, user.id) == (ACTIVE, "")


async def test_a_top_up_repays_the_debt_first_and_lifts_the_suspension_once_repaid(users, db):
    user = await new_user(users, balance=3_000)
    await debt_charge(users, user.id, 12_000, "ride")
    await top_up(users, user.id, 5_000, "part")
    assert await wallet(users, user.id) == (Decimal(-4_000), 0, Decimal(-4_000))
    assert await status(users, user.id) == (SUSPENDED, DEBT_REASON)
    activate = user_pb2.ChangeUserStatusRequest(user_id=user.id, status=ACTIVE)
    assert await refusal(users.call("ChangeUserStatus", activate, Role.OPERATOR)) == "CARD_IN_DEBT"

    await top_up(users, user.id, 6_000, "rest")
    assert await wallet(users, user.id) == (Decimal(2_000), 0, Decimal(2_000))
    assert await status(users, user.id) == (ACTIVE, "")
    _, lifted = await status_events(db, user.id)
    assert (lifted["oldStatus"], lifted["newStatus"], lifted["debt"]) == (
        "suspended",
        "active",
        True,
    )
    assert lifted["available"]["units"] == "2000"
    hold = user_pb2.PlaceHoldRequest(user_id=user.id, amount=idr(2_000), reference="J-after")
    assert (await users.call("PlaceHold", hold)).status == user_pb2.HOLD_STATUS_HELD


@pytest.mark.parametrize("operator_status", [SUSPENDED, user_pb2.USER_STATUS_BLOCKED])
async def test_a_top_up_does_not_lift_what_an_operator_set(users, db, operator_status):
    user = await new_user(users, balance=3_000)
    await users.call(
        "ChangeUserStatus",
        user_pb2.ChangeUserStatusRequest(user_id=user.id, status=operator_status, reason="fraud"),
        Role.OPERATOR,
    )
    await debt_charge(users, user.id, 12_000, "ride")  # a ride taken before the change reached
    assert await wallet(users, user.id) == (Decimal(-9_000), 0, Decimal(-9_000))
    await top_up(users, user.id, 20_000, "repay")
    assert await wallet(users, user.id) == (Decimal(11_000), 0, Decimal(11_000))
    assert await status(users, user.id) == (operator_status, "fraud")
    assert [e.get("debt", False) for e in await status_events(db, user.id)] == [False]


async def test_a_debt_suspension_an_operator_changed_is_not_lifted(users):
    user = await new_user(users, balance=1_000)
    await debt_charge(users, user.id, 5_000, "ride")
    await users.call(
        "ChangeUserStatus",
        user_pb2.ChangeUserStatusRequest(user_id=user.id, status=SUSPENDED, reason="card lost"),
        Role.OPERATOR,
    )
    await top_up(users, user.id, 10_000, "repay")
    assert await status(users, user.id) == (SUSPENDED, "card lost")


async def test_retried_charges_and_top_ups_apply_once(users, db):
    user = await new_user(users, balance=3_000)
    first, *again = await asyncio.gather(
        *(debt_charge(users, user.id, 12_000, "ride") for _ in range(4))
    )
    assert all(e.id == first.id for e in again)
    first, *again = await asyncio.gather(
        *(top_up(users, user.id, 10_000, "repay") for _ in range(4))
    )
    assert all(e.id == first.id for e in again)
    assert await wallet(users, user.id) == (Decimal(1_000), 0, Decimal(1_000))
    assert [e["newStatus"] for e in await status_events(db, user.id)] == ["suspended", "active"]
    assert await status(users, user.id) == (ACTIVE, "")


async def test_a_capture_after_a_debt_keeps_the_money_right(users):
    """An online journey's hold, then a debt: the capture takes at most what was held."""
    user = await new_user(users, balance=15_000)
    hold = user_pb2.PlaceHoldRequest(user_id=user.id, amount=idr(12_000), reference="J-on")
    await users.call("PlaceHold", hold)
    await debt_charge(users, user.id, 10_000, "offline")
    assert await wallet(users, user.id) == (Decimal(5_000), Decimal(12_000), Decimal(-7_000))
    assert await status(users, user.id) == (SUSPENDED, DEBT_REASON)
    capture = user_pb2.CaptureHoldRequest(
        hold=user_pb2.HoldSelector(reference="J-on"), final_amount=idr(8_000)
    )
    await users.call("CaptureHold", capture)
    assert await wallet(users, user.id) == (Decimal(-3_000), 0, Decimal(-3_000))
    await top_up(users, user.id, 3_000, "repay")
    assert await status(users, user.id) == (ACTIVE, "")


async def test_the_database_refuses_an_active_card_in_debt_and_a_hold_it_cannot_cover(users, db):
    user = await new_user(users, balance=1_000)
    await debt_charge(users, user.id, 5_000, "ride")
    with pytest.raises(psycopg.errors.CheckViolation):
        await db.execute("UPDATE users SET status = 'active' WHERE id = %s", (user.id,))
    with pytest.raises(psycopg.errors.CheckViolation):
        await db.execute(
            """INSERT INTO holds (user_id, amount, reference, expires_at)
               VALUES (%s, 1, 'raw', now() + interval '1 hour')""",
            (user.id,),
        )


async def test_top_ups_racing_rides_leave_the_status_the_final_balance_says(users, db):
    """Several cards, each with rides charged into debt and top-ups all at once in random
    order: the ledger sums to the balance (the fixture), the balance is what was moved, and
    the card is suspended exactly when it ends in debt, its status events alternating."""
    rng = random.Random(16)
    cards = [await new_user(users, balance=rng.choice([0, 5_000])) for _ in range(6)]
    calls, expected = [], {}
    for n, user in enumerate(cards):
        rides = [rng.choice([3_000, 7_000, 12_000]) for _ in range(4)]
        top_ups = [rng.choice([4_000, 10_000]) for _ in range(3)]
        expected[user.id] = (
            amount_of(
                (await users.call("GetWallet", user_pb2.GetWalletRequest(user_id=user.id))).balance
            )
            - sum(rides)
            + sum(top_ups)
        )
        calls += [debt_charge(users, user.id, a, f"ride-{n}-{i}") for i, a in enumerate(rides)]
        calls += [top_up(users, user.id, a, f"top-{n}-{i}") for i, a in enumerate(top_ups)]
    rng.shuffle(calls)
    await asyncio.gather(*calls)
    for user in cards:
        balance, held, _ = await wallet(users, user.id)
        assert (balance, held) == (expected[user.id], 0)
        assert await ledger_sum(db, user.id) == balance
        in_debt = balance < 0
        assert await status(users, user.id) == (
            (SUSPENDED, DEBT_REASON) if in_debt else (ACTIVE, "")
        )
        changes = [e["newStatus"] for e in await status_events(db, user.id)]
        assert changes == ["suspended", "active"] * (len(changes) // 2) + ["suspended"] * in_debt
