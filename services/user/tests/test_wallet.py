"""Money through the real service: top-ups, holds, captures, charges, refunds — each
idempotent, none able to overdraw, the ledger always summing to the balance."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import grpc
import psycopg
import pytest
from tiket.user.v1 import user_pb2

from libs.db.database import open_pool
from libs.db.transaction import in_statement
from services.user import events, store
from services.user.tests.helpers import amount_of, idr, new_user, wallet


async def test_top_up_hold_capture_leaves_the_right_balance(users):
    user = await new_user(users, balance=50_000)
    hold = await users.call(
        "PlaceHold", user_pb2.PlaceHoldRequest(user_id=user.id, amount=idr(12_000), reference="J-1")
    )
    assert hold.status == user_pb2.HOLD_STATUS_HELD
    assert amount_of(hold.available_after) == Decimal(38_000)
    assert await wallet(users, user.id) == (Decimal(50_000), Decimal(12_000), Decimal(38_000))

    captured = await users.call(
        "CaptureHold",
        user_pb2.CaptureHoldRequest(
            hold=user_pb2.HoldSelector(reference="J-1"), final_amount=idr(7_000)
        ),
    )
    assert captured.hold.status == user_pb2.HOLD_STATUS_CAPTURED
    assert amount_of(captured.entry.amount) == Decimal(-7_000)
    assert amount_of(captured.wallet.balance) == Decimal(43_000)
    assert await wallet(users, user.id) == (Decimal(43_000), Decimal(0), Decimal(43_000))


async def test_same_top_up_key_twice_applies_once(users):
    user = await new_user(users)
    request = user_pb2.TopUpRequest(user_id=user.id, amount=idr(10_000), idempotency_key="tu-1")
    first, second = await asyncio.gather(users.call("TopUp", request), users.call("TopUp", request))
    assert first.id == second.id
    assert await wallet(users, user.id) == (Decimal(10_000), 0, Decimal(10_000))


async def test_same_key_for_another_amount_is_refused(users):
    user = await new_user(users)
    await users.call(
        "TopUp", user_pb2.TopUpRequest(user_id=user.id, amount=idr(10_000), idempotency_key="k")
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await users.call(
            "TopUp", user_pb2.TopUpRequest(user_id=user.id, amount=idr(99), idempotency_key="k")
        )
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert (await wallet(users, user.id))[0] == Decimal(10_000)


async def test_same_hold_reference_twice_places_one_hold(users, db):
    user = await new_user(users, balance=30_000)
    request = user_pb2.PlaceHoldRequest(user_id=user.id, amount=idr(12_000), reference="J-dup")
    holds = await asyncio.gather(*(users.call("PlaceHold", request) for _ in range(5)))
    assert len({h.id for h in holds}) == 1
    assert await wallet(users, user.id) == (Decimal(30_000), Decimal(12_000), Decimal(18_000))
    count = await (await db.execute("SELECT count(*) FROM holds")).fetchone()
    assert count == (1,)


async def test_same_charge_key_twice_applies_once(users):
    user = await new_user(users, balance=30_000)
    request = user_pb2.ChargeRequest(
        user_id=user.id, amount=idr(20_000), idempotency_key="c-1", reference="booking-1"
    )
    first, second = await asyncio.gather(
        users.call("Charge", request), users.call("Charge", request)
    )
    assert first.id == second.id
    assert await wallet(users, user.id) == (Decimal(10_000), 0, Decimal(10_000))


async def test_hundred_concurrent_holds_never_overdraw(users, db):
    user = await new_user(users, balance=100_000)
    results = await asyncio.gather(
        *(
            users.call(
                "PlaceHold",
                user_pb2.PlaceHoldRequest(user_id=user.id, amount=idr(3_000), reference=f"C-{i}"),
            )
            for i in range(100)
        ),
        return_exceptions=True,
    )
    placed = [r for r in results if isinstance(r, user_pb2.Hold)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(placed) == 33  # 33 x 3,000 = 99,000 <= 100,000 < 34 x 3,000
    assert len(refused) == 67
    assert {r.code() for r in refused} == {grpc.StatusCode.FAILED_PRECONDITION}
    balance, held, available = await wallet(users, user.id)
    assert (balance, held, available) == (Decimal(100_000), Decimal(99_000), Decimal(1_000))
    active = await (await db.execute("SELECT count(*) FROM holds WHERE status = 'held'")).fetchone()
    assert active == (33,)


async def test_capture_retry_returns_first_result_and_other_amount_is_refused(users):
    user = await new_user(users, balance=20_000)
    await users.call(
        "PlaceHold", user_pb2.PlaceHoldRequest(user_id=user.id, amount=idr(12_000), reference="J-2")
    )
    capture = user_pb2.CaptureHoldRequest(
        hold=user_pb2.HoldSelector(reference="J-2"), final_amount=idr(5_000)
    )
    first = await users.call("CaptureHold", capture)
    again = await users.call("CaptureHold", capture)
    assert again.entry.id == first.entry.id
    capture.final_amount.CopyFrom(idr(6_000))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await users.call("CaptureHold", capture)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await wallet(users, user.id) == (Decimal(15_000), 0, Decimal(15_000))


async def test_capture_more_than_held_is_refused_and_changes_nothing(users):
    user = await new_user(users, balance=20_000)
    await users.call(
        "PlaceHold", user_pb2.PlaceHoldRequest(user_id=user.id, amount=idr(5_000), reference="J-3")
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await users.call(
            "CaptureHold",
            user_pb2.CaptureHoldRequest(
                hold=user_pb2.HoldSelector(reference="J-3"), final_amount=idr(5_001)
            ),
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "final_amount" in err.value.details()
    assert await wallet(users, user.id) == (Decimal(20_000), Decimal(5_000), Decimal(15_000))


async def test_release_then_capture_is_refused_so_the_caller_charges_directly(users):
    user = await new_user(users, balance=20_000)
    hold = await users.call(
        "PlaceHold", user_pb2.PlaceHoldRequest(user_id=user.id, amount=idr(5_000), reference="J-4")
    )
    selector = user_pb2.HoldSelector(hold_id=hold.id)
    released = await users.call("ReleaseHold", user_pb2.ReleaseHoldRequest(hold=selector))
    assert released.status == user_pb2.HOLD_STATUS_RELEASED
    again = await users.call("ReleaseHold", user_pb2.ReleaseHoldRequest(hold=selector))
    assert again.closed_at == released.closed_at
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await users.call(
            "CaptureHold", user_pb2.CaptureHoldRequest(hold=selector, final_amount=idr(1_000))
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await wallet(users, user.id) == (Decimal(20_000), 0, Decimal(20_000))


async def test_hold_refused_for_blocked_user_and_for_insufficient_balance(users):
    user = await new_user(users, balance=10_000)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await users.call(
            "PlaceHold",
            user_pb2.PlaceHoldRequest(user_id=user.id, amount=idr(10_001), reference="J-5"),
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "insufficient balance" in err.value.details()
    await users.call(
        "ChangeUserStatus",
        user_pb2.ChangeUserStatusRequest(
            user_id=user.id, status=user_pb2.USER_STATUS_BLOCKED, reason="lost card"
        ),
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await users.call(
            "PlaceHold",
            user_pb2.PlaceHoldRequest(user_id=user.id, amount=idr(1_000), reference="J-6"),
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "blocked" in err.value.details()


async def test_refund_never_exceeds_what_was_charged(users):
    user = await new_user(users, balance=50_000)
    await users.call(
        "Charge",
        user_pb2.ChargeRequest(
            user_id=user.id, amount=idr(30_000), idempotency_key="c", reference="booking-9"
        ),
    )
    await users.call(
        "Refund",
        user_pb2.RefundRequest(
            user_id=user.id, amount=idr(20_000), idempotency_key="r1", reference="booking-9"
        ),
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await users.call(
            "Refund",
            user_pb2.RefundRequest(
                user_id=user.id, amount=idr(10_001), idempotency_key="r2", reference="booking-9"
            ),
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "at most 10000.00" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await users.call(
            "Refund",
            user_pb2.RefundRequest(
                user_id=user.id, amount=idr(1), idempotency_key="r3", reference="never-charged"
            ),
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await wallet(users, user.id) == (Decimal(40_000), 0, Decimal(40_000))


async def test_concurrent_refunds_stay_within_the_charge(users):
    user = await new_user(users, balance=50_000)
    await users.call(
        "Charge",
        user_pb2.ChargeRequest(
            user_id=user.id, amount=idr(10_000), idempotency_key="c", reference="b-1"
        ),
    )
    results = await asyncio.gather(
        *(
            users.call(
                "Refund",
                user_pb2.RefundRequest(
                    user_id=user.id, amount=idr(3_000), idempotency_key=f"r{i}", reference="b-1"
                ),
            )
            for i in range(10)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(r, user_pb2.LedgerEntry) for r in results) == 3
    assert (await wallet(users, user.id))[0] == Decimal(49_000)


async def test_ledger_lists_every_change_newest_first_in_pages(users):
    user = await new_user(users)
    for i in range(5):
        await users.call(
            "TopUp",
            user_pb2.TopUpRequest(
                user_id=user.id, amount=idr(1_000 * (i + 1)), idempotency_key=f"k{i}"
            ),
        )
    first = await users.call(
        "ListLedgerEntries", user_pb2.ListLedgerEntriesRequest(user_id=user.id, page_size=3)
    )
    rest = await users.call(
        "ListLedgerEntries",
        user_pb2.ListLedgerEntriesRequest(
            user_id=user.id, page_size=3, page_token=first.next_page_token
        ),
    )
    amounts = [amount_of(e.amount) for e in [*first.entries, *rest.entries]]
    assert amounts == [
        Decimal(5_000),
        Decimal(4_000),
        Decimal(3_000),
        Decimal(2_000),
        Decimal(1_000),
    ]
    assert rest.next_page_token == ""
    assert amount_of(first.entries[0].balance_after) == Decimal(15_000)


async def test_the_database_refuses_to_edit_money_behind_the_ledger(users, db):
    import psycopg

    user = await new_user(users, balance=10_000)
    with pytest.raises(psycopg.errors.RaiseException):
        await db.execute("UPDATE users SET balance = 1000000 WHERE id = %s", (user.id,))
    with pytest.raises(psycopg.errors.RaiseException):
        await db.execute("DELETE FROM ledger_entries")
    with pytest.raises(psycopg.errors.RaiseException):
        await db.execute("UPDATE ledger_entries SET amount = 1")
    assert (await wallet(users, user.id))[0] == Decimal(10_000)


async def test_concurrent_retries_of_a_hold_that_takes_most_of_the_balance_all_get_it(users, db):
    # The retries that wait for the wallet lock find it short by the first attempt's hold,
    # which their statement's snapshot does not show: they must answer that hold, not
    # INSUFFICIENT_BALANCE.
    for n in range(3):
        user = await new_user(users, balance=20_000)
        request = user_pb2.PlaceHoldRequest(
            user_id=user.id, amount=idr(12_000), reference=f"J-tight-{n}"
        )
        holds = await asyncio.gather(*(users.call("PlaceHold", request) for _ in range(5)))
        assert len({h.id for h in holds}) == 1
        assert {amount_of(h.available_after) for h in holds} == {Decimal(8_000)}
    placed = "SELECT count(*) FROM outbox WHERE event_type = 'wallet.hold_placed'"
    assert await (await db.execute(placed)).fetchone() == (3,)


async def test_a_reference_names_one_hold_whatever_happens_to_the_wallet_after(users, db):
    user = await new_user(users, balance=10_000)
    request = user_pb2.PlaceHoldRequest(user_id=user.id, amount=idr(8_000), reference="J-7")
    first = await users.call("PlaceHold", request)
    await users.call(
        "ChangeUserStatus",
        user_pb2.ChangeUserStatusRequest(
            user_id=user.id, status=user_pb2.USER_STATUS_BLOCKED, reason="lost card"
        ),
    )
    again = await users.call("PlaceHold", request)
    assert again.id == first.id
    assert amount_of(again.available_after) == Decimal(2_000)
    other = await new_user(users, balance=10_000)
    for clash in (
        user_pb2.PlaceHoldRequest(user_id=user.id, amount=idr(1_000), reference="J-7"),
        user_pb2.PlaceHoldRequest(user_id=other.id, amount=idr(8_000), reference="J-7"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await users.call("PlaceHold", clash)
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert await wallet(users, other.id) == (Decimal(10_000), 0, Decimal(10_000))
    placed = "SELECT count(*) FROM outbox WHERE event_type = 'wallet.hold_placed'"
    assert await (await db.execute(placed)).fetchone() == (1,)


async def test_a_refused_hold_writes_neither_hold_nor_event(users, db):
    user = await new_user(users, balance=1_000)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await users.call(
            "PlaceHold",
            user_pb2.PlaceHoldRequest(user_id=user.id, amount=idr(1_001), reference="J-8"),
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await (await db.execute("SELECT count(*) FROM holds")).fetchone() == (0,)
    placed = "SELECT count(*) FROM outbox WHERE event_type = 'wallet.hold_placed'"
    assert await (await db.execute(placed)).fetchone() == (0,)


async def test_a_capture_carries_the_wallet_after_it_in_its_answer_and_its_event(users, db):
    user = await new_user(users, balance=30_000)
    for reference in ("J-10", "J-11"):
        await users.call(
            "PlaceHold",
            user_pb2.PlaceHoldRequest(user_id=user.id, amount=idr(12_000), reference=reference),
        )
    captured = await users.call(
        "CaptureHold",
        user_pb2.CaptureHoldRequest(
            hold=user_pb2.HoldSelector(reference="J-10"), final_amount=idr(7_000)
        ),
    )
    # balance 23 000, the other hold still holds 12 000
    assert (amount_of(captured.wallet.balance), amount_of(captured.wallet.held)) == (
        Decimal(23_000),
        Decimal(12_000),
    )
    assert amount_of(captured.entry.balance_after) == Decimal(23_000)
    assert captured.hold.closed_at.ToDatetime() > captured.hold.created_at.ToDatetime()
    cur = await db.execute(
        "SELECT body->'data' FROM outbox WHERE event_type = 'wallet.hold_captured'"
    )
    [(data,)] = await cur.fetchall()
    assert data["reference"] == "J-10"
    assert Decimal(data["finalAmount"]["units"]) == Decimal(7_000)
    assert Decimal(data["availableAfter"]["units"]) == Decimal(11_000)


async def test_a_capture_of_a_hold_released_after_it_was_read_writes_nothing(
    users, db, user_service
):
    """The fast path's statement checks the hold again: a release that lands between the
    service's read and its statement wins, and the capture leaves no trace."""
    user = await new_user(users, balance=20_000)
    await users.call(
        "PlaceHold",
        user_pb2.PlaceHoldRequest(user_id=user.id, amount=idr(5_000), reference="J-12"),
    )
    seen = await store.hold_by(db, "reference", "J-12")
    assert seen is not None
    await users.call(
        "ReleaseHold",
        user_pb2.ReleaseHoldRequest(hold=user_pb2.HoldSelector(reference="J-12")),
    )

    async def capture(conn: psycopg.AsyncConnection):
        event = events.hold_staged("wallet.hold_captured", seen)
        return await store.capture_hold(conn, seen, Decimal(1_000), event)

    pool = await open_pool(user_service.settings.database_url("user"), min_size=1, max_size=1)
    try:
        assert await in_statement(pool, capture) is None
    finally:
        await pool.close()
    assert await wallet(users, user.id) == (Decimal(20_000), 0, Decimal(20_000))
    written = """SELECT (SELECT count(*) FROM ledger_entries WHERE kind = 'capture'),
                        (SELECT count(*) FROM outbox WHERE event_type = 'wallet.hold_captured')"""
    assert await (await db.execute(written)).fetchone() == (0, 0)


async def test_racing_captures_and_releases_settle_each_hold_exactly_once(users, db):
    user = await new_user(users, balance=100_000)
    references = [f"J-race-{n}" for n in range(20)]
    for reference in references:
        await users.call(
            "PlaceHold",
            user_pb2.PlaceHoldRequest(user_id=user.id, amount=idr(5_000), reference=reference),
        )

    async def settle(reference: str) -> tuple[bool, bool]:
        selector = user_pb2.HoldSelector(reference=reference)
        capture = users.call(
            "CaptureHold", user_pb2.CaptureHoldRequest(hold=selector, final_amount=idr(3_000))
        )
        release = users.call("ReleaseHold", user_pb2.ReleaseHoldRequest(hold=selector))
        outcomes = await asyncio.gather(capture, release, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                assert isinstance(outcome, grpc.aio.AioRpcError), outcome
                assert outcome.code() == grpc.StatusCode.FAILED_PRECONDITION
        captured, released = (not isinstance(o, Exception) for o in outcomes)
        return captured, released

    results = await asyncio.gather(*(settle(r) for r in references))
    assert all(captured != released for captured, released in results)
    captures = sum(captured for captured, _ in results)
    balance = Decimal(100_000 - 3_000 * captures)
    assert await wallet(users, user.id) == (balance, 0, balance)
    written = """SELECT (SELECT count(*) FROM ledger_entries WHERE kind = 'capture'),
                        (SELECT count(*) FROM outbox WHERE event_type = 'wallet.hold_captured')"""
    assert await (await db.execute(written)).fetchone() == (captures, captures)
