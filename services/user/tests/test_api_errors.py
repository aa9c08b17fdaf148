"""Bad input, missing tokens and wrong roles get the documented status, and write nothing."""

from __future__ import annotations

import uuid
from decimal import Decimal

import grpc
import pytest
from google.type import money_pb2
from tiket.user.v1 import user_pb2

from libs.auth import Role
from services.user.tests.helpers import idr, new_user, wallet
from tests.support.grpc_errors import bad_request_fields

INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def row_counts(db) -> tuple[int, ...]:
    cur = await db.execute(
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM ledger_entries),"
        " (SELECT count(*) FROM holds), (SELECT count(*) FROM outbox), (SELECT count(*) FROM pets)"
    )
    return await cur.fetchone()


@pytest.mark.parametrize(
    ("method", "request_factory", "field"),
    [
        (
            "CreateUser",
            lambda u: user_pb2.CreateUserRequest(card_id="card-1", full_name="X"),
            "card_id",
        ),
        (
            "CreateUser",
            lambda u: user_pb2.CreateUserRequest(card_id="ABC", full_name="X"),
            "card_id",
        ),
        (
            "CreateUser",
            lambda u: user_pb2.CreateUserRequest(card_id="ABCDEFGH", full_name=""),
            "full_name",
        ),
        (
            "CreateUser",
            lambda u: user_pb2.CreateUserRequest(card_id="ABCDEFGH", full_name="x" * 256),
            "full_name",
        ),
        (
            "CreateUser",
            lambda u: user_pb2.CreateUserRequest(card_id="ABCDEFGH", full_name="X", email="nope"),
            "email",
        ),
        (
            "TopUp",
            lambda u: user_pb2.TopUpRequest(user_id=u, amount=idr(0), idempotency_key="k"),
            "amount",
        ),
        (
            "TopUp",
            lambda u: user_pb2.TopUpRequest(user_id=u, amount=idr(-5), idempotency_key="k"),
            "amount",
        ),
        ("TopUp", lambda u: user_pb2.TopUpRequest(user_id=u, amount=idr(5)), "idempotency_key"),
        (
            "TopUp",
            lambda u: user_pb2.TopUpRequest(user_id=u, amount=idr(5), idempotency_key="k" * 101),
            "idempotency_key",
        ),
        (
            "TopUp",
            lambda u: user_pb2.TopUpRequest(
                user_id=u,
                amount=money_pb2.Money(currency_code="USD", units=5),
                idempotency_key="k",
            ),
            "amount.currency_code",
        ),
        ("GetWallet", lambda u: user_pb2.GetWalletRequest(user_id="not-a-uuid"), "user_id"),
        ("GetUser", lambda u: user_pb2.GetUserRequest(), "key"),
        (
            "PlaceHold",
            lambda u: user_pb2.PlaceHoldRequest(user_id=u, amount=idr(5), reference=""),
            "reference",
        ),
        ("CaptureHold", lambda u: user_pb2.CaptureHoldRequest(final_amount=idr(5)), "hold"),
        (
            "CaptureHold",
            lambda u: user_pb2.CaptureHoldRequest(hold=user_pb2.HoldSelector(reference="x")),
            "final_amount",
        ),
        (
            "ChangeUserStatus",
            lambda u: user_pb2.ChangeUserStatusRequest(
                user_id=u, status=user_pb2.USER_STATUS_BLOCKED
            ),
            "reason",
        ),
        (
            "ListUsers",
            lambda u: user_pb2.ListUsersRequest(page_token="garbage"),
            "page_token",
        ),
        ("ListUsers", lambda u: user_pb2.ListUsersRequest(page_size=501), "page_size"),
    ],
)
async def test_bad_input_names_the_field_and_writes_nothing(
    users, db, method, request_factory, field
):
    user = await new_user(users, balance=10_000)
    before = await row_counts(db)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await users.call(method, request_factory(user.id))
    assert err.value.code() == INVALID
    assert field in bad_request_fields(err.value)
    assert await row_counts(db) == before


async def test_unknown_ids_are_not_found(users, db):
    before = await row_counts(db)
    missing = str(uuid.uuid4())
    calls = [
        ("GetUser", user_pb2.GetUserRequest(user_id=missing)),
        ("GetUser", user_pb2.GetUserRequest(card_id="NOSUCHCARD")),
        ("GetWallet", user_pb2.GetWalletRequest(user_id=missing)),
        ("TopUp", user_pb2.TopUpRequest(user_id=missing, amount=idr(5), idempotency_key="k")),
        ("PlaceHold", user_pb2.PlaceHoldRequest(user_id=missing, amount=idr(5), reference="r")),
        (
            "CaptureHold",
            user_pb2.CaptureHoldRequest(
                hold=user_pb2.HoldSelector(hold_id=missing), final_amount=idr(1)
            ),
        ),
        ("AddPet", user_pb2.AddPetRequest(user_id=missing, name="Milo", species="cat")),
    ]
    for method, request in calls:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await users.call(method, request)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND, method
    assert await row_counts(db) == before


async def test_duplicate_card_is_already_exists(users):
    await new_user(users, card_id="DUPCARD01")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await new_user(users, card_id="DUPCARD01")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "DUPCARD01" in err.value.details()


async def test_missing_or_bad_token_is_unauthenticated(users, db):
    before = await row_counts(db)
    request = user_pb2.CreateUserRequest(card_id="NOTOKEN01", full_name="X")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await users.stub.CreateUser(request)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await users.stub.CreateUser(request, metadata=[("authorization", "Bearer not.a.jwt")])
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await row_counts(db) == before


async def test_roles_are_enforced(users, db):
    user = await new_user(users, balance=10_000)
    other = await new_user(users)
    before = await row_counts(db)
    denied = [
        (
            "CreateUser",
            user_pb2.CreateUserRequest(card_id="ROLECARD1", full_name="X"),
            Role.USER,
            user.id,
        ),
        (
            "CreateUser",
            user_pb2.CreateUserRequest(card_id="ROLECARD1", full_name="X"),
            Role.GATE,
            "A/A-ENTRY-01",
        ),
        ("GetWallet", user_pb2.GetWalletRequest(user_id=other.id), Role.USER, user.id),
        (
            "TopUp",
            user_pb2.TopUpRequest(user_id=other.id, amount=idr(5), idempotency_key="k"),
            Role.USER,
            user.id,
        ),
        (
            "PlaceHold",
            user_pb2.PlaceHoldRequest(user_id=user.id, amount=idr(5), reference="r"),
            Role.USER,
            user.id,
        ),
        ("ListUsers", user_pb2.ListUsersRequest(), Role.GATE, "A/A-ENTRY-01"),
        # Personal data: a gate learns what it needs from ExportUsers.
        ("GetUser", user_pb2.GetUserRequest(user_id=user.id), Role.GATE, "A/A-ENTRY-01"),
        ("GetUser", user_pb2.GetUserRequest(card_id=user.card_id), Role.GATE, "A/A-ENTRY-01"),
    ]
    for method, request, role, sub in denied:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await users.call(method, request, role=role, sub=sub)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, (method, role)
    assert await row_counts(db) == before


async def test_a_user_sees_only_their_own_wallet_and_may_not_top_it_up(users, db):
    user = await new_user(users, balance=5_000)
    before = await row_counts(db)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await users.call(
            "TopUp",
            user_pb2.TopUpRequest(user_id=user.id, amount=idr(5_000), idempotency_key="self"),
            role=Role.USER,
            sub=user.id,
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await row_counts(db) == before
    wallet = await users.call(
        "GetWallet", user_pb2.GetWalletRequest(user_id=user.id), role=Role.USER, sub=user.id
    )
    assert wallet.balance.units == 5_000


def money_calls(user_id: str, tag: str) -> list[tuple[str, object]]:
    """Each RPC that reserves, moves or reads held money, in an order that succeeds for a
    caller allowed to make them: hold, read, capture; hold, release; charge, refund."""
    held = user_pb2.HoldSelector(reference=f"hold-{tag}")
    released = user_pb2.HoldSelector(reference=f"release-{tag}")
    charge = f"charge-{tag}"
    return [
        (
            "PlaceHold",
            user_pb2.PlaceHoldRequest(user_id=user_id, amount=idr(5), reference=held.reference),
        ),
        ("GetHold", user_pb2.GetHoldRequest(hold=held)),
        ("CaptureHold", user_pb2.CaptureHoldRequest(hold=held, final_amount=idr(3))),
        (
            "PlaceHold",
            user_pb2.PlaceHoldRequest(user_id=user_id, amount=idr(5), reference=released.reference),
        ),
        ("ReleaseHold", user_pb2.ReleaseHoldRequest(hold=released)),
        (
            "Charge",
            user_pb2.ChargeRequest(
                user_id=user_id, amount=idr(2), reference=charge, idempotency_key=charge
            ),
        ),
        (
            "Refund",
            user_pb2.RefundRequest(
                user_id=user_id, amount=idr(1), reference=charge, idempotency_key=f"re-{tag}"
            ),
        ),
    ]


async def test_only_journey_and_booking_move_money_and_only_booking_tops_up(users, db):
    user = await new_user(users, balance=10_000)
    top_up = user_pb2.TopUpRequest(user_id=user.id, amount=idr(5), idempotency_key="svc")
    before = await row_counts(db)
    for caller in ("tests", "notification", "analytics", "fare", "user"):
        for method, request in [*money_calls(user.id, caller), ("TopUp", top_up)]:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await users.call(method, request, role=Role.SERVICE, sub=caller)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, (method, caller)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await users.call("TopUp", top_up, role=Role.SERVICE, sub="journey")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await row_counts(db) == before

    for caller in ("journey", "booking"):
        for method, request in money_calls(user.id, caller):
            await users.call(method, request, role=Role.SERVICE, sub=caller)
    entry = await users.call("TopUp", top_up, role=Role.SERVICE, sub="booking")
    assert entry.amount.units == 5
    # 10 000, then per caller: -3 captured, -2 charged, +1 refunded; +5 topped up.
    assert await wallet(users, user.id) == (Decimal(9_997), 0, Decimal(9_997))


async def test_gates_may_export_the_offline_list(users):
    user = await new_user(users, balance=1_000, email="rider@example.com")
    call = users.stub.ExportUsers(
        user_pb2.ExportUsersRequest(), metadata=users.metadata(Role.GATE, "A/A-ENTRY-01")
    )
    items = [item async for item in call]
    assert items[-1].WhichOneof("item") == "next_since"
    assert [(i.user.card_id, i.user.available.units) for i in items[:-1]] == [(user.card_id, 1_000)]


def test_the_offline_list_carries_no_personal_data():
    """A gate needs card, status and spendable balance to decide a tap; not who the rider is."""
    fields = {f.name for f in user_pb2.UserSnapshot.DESCRIPTOR.fields}
    assert fields == {"card_id", "status", "available", "updated_at"}
