"""Users, pets, listing, the gates' offline export, the hold sweeper and the events the
service writes."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.type import date_pb2
from tiket.events.v1 import wallet_pb2
from tiket.user.v1 import user_pb2

from services.user.tests.helpers import idr, new_card, new_user, wallet


async def test_create_is_idempotent_by_request_id(users):
    request = user_pb2.CreateUserRequest(card_id=new_card(), full_name="Siti", request_id="req-1")
    first, second = await asyncio.gather(
        users.call("CreateUser", request), users.call("CreateUser", request)
    )
    assert first.id == second.id
    assert first.status == user_pb2.USER_STATUS_ACTIVE


async def test_a_create_retry_with_other_fields_is_refused(users):
    """A request_id names one request: the same id with any other field changed is a
    different request, refused, never answered with the first user."""
    first = user_pb2.CreateUserRequest(
        card_id=new_card(), full_name="Siti", email="siti@example.com", request_id="req-2"
    )
    created = await users.call("CreateUser", first)
    for change in ({"full_name": "Budi"}, {"email": "budi@example.com"}, {"phone": "0812"}):
        other = user_pb2.CreateUserRequest()
        other.CopyFrom(first)
        for field, value in change.items():
            setattr(other, field, value)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await users.call("CreateUser", other)
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "request_id 'req-2'" in err.value.details()
        assert next(iter(change)) in err.value.details()
    assert (await users.call("CreateUser", first)).id == created.id


async def test_get_by_id_and_card_and_status_change_shows_through_the_cache(users):
    user = await new_user(users)
    by_id = await users.call("GetUser", user_pb2.GetUserRequest(user_id=user.id))
    by_card = await users.call("GetUser", user_pb2.GetUserRequest(card_id=user.card_id))
    assert by_id == by_card == user
    await users.call(
        "ChangeUserStatus",
        user_pb2.ChangeUserStatusRequest(
            user_id=user.id, status=user_pb2.USER_STATUS_SUSPENDED, reason="fraud check"
        ),
    )
    after = await users.call("GetUser", user_pb2.GetUserRequest(user_id=user.id))
    assert after.status == user_pb2.USER_STATUS_SUSPENDED
    assert after.status_reason == "fraud check"


async def test_list_users_pages_and_filters_by_status(users):
    created = [await new_user(users) for _ in range(5)]
    await users.call(
        "ChangeUserStatus",
        user_pb2.ChangeUserStatusRequest(
            user_id=created[0].id, status=user_pb2.USER_STATUS_BLOCKED, reason="lost"
        ),
    )
    seen, token = [], ""
    while True:
        page = await users.call(
            "ListUsers", user_pb2.ListUsersRequest(page_size=2, page_token=token)
        )
        seen += [u.id for u in page.users]
        token = page.next_page_token
        if not token:
            break
    assert seen == [u.id for u in created]
    blocked = await users.call(
        "ListUsers", user_pb2.ListUsersRequest(status=user_pb2.USER_STATUS_BLOCKED)
    )
    assert [u.id for u in blocked.users] == [created[0].id]


async def test_pets_are_added_once_and_listed(users):
    user = await new_user(users)
    request = user_pb2.AddPetRequest(
        user_id=user.id,
        name="Milo",
        species="cat",
        breed="Persian",
        birth_date=date_pb2.Date(year=2021, month=3, day=14),
        request_id="pet-1",
    )
    first = await users.call("AddPet", request)
    again = await users.call("AddPet", request)
    assert first.id == again.id
    pets = await users.call("ListPets", user_pb2.ListPetsRequest(user_id=user.id))
    assert [(p.name, p.birth_date.year) for p in pets.pets] == [("Milo", 2021)]


async def test_an_add_pet_retry_with_other_fields_is_refused(users):
    user = await new_user(users)
    first = user_pb2.AddPetRequest(user_id=user.id, name="Milo", species="cat", request_id="p-2")
    added = await users.call("AddPet", first)
    for change in ({"species": "dog"}, {"breed": "Persian"}, {"name": "Luna"}):
        other = user_pb2.AddPetRequest()
        other.CopyFrom(first)
        for field, value in change.items():
            setattr(other, field, value)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await users.call("AddPet", other)
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert next(iter(change)) in err.value.details()
    other = user_pb2.AddPetRequest()
    other.CopyFrom(first)
    other.birth_date.CopyFrom(date_pb2.Date(year=2020, month=1, day=2))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await users.call("AddPet", other)
    assert "birth_date" in err.value.details()
    assert (await users.call("AddPet", first)).id == added.id
    pets = await users.call("ListPets", user_pb2.ListPetsRequest(user_id=user.id))
    assert [p.id for p in pets.pets] == [added.id]


async def test_export_gives_everyone_then_only_changes_since_the_watermark(users):
    a = await new_user(users, balance=10_000)
    b = await new_user(users, balance=20_000)

    async def export(since=None):
        request = user_pb2.ExportUsersRequest()
        if since is not None:
            request.since.CopyFrom(since)
        items = [i async for i in users.stub.ExportUsers(request, metadata=users.metadata())]
        return {i.user.card_id: i.user for i in items[:-1]}, items[-1].next_since

    everyone, watermark = await export()
    assert {a.card_id, b.card_id} <= set(everyone)
    assert everyone[a.card_id].available.units == 10_000
    # The watermark is the start of the oldest transaction open during the export (the
    # outbox relay's, say), so a delta may repeat recent rows — never miss one. Once
    # nothing changes, deltas come back empty.
    for _ in range(50):
        repeated, watermark = await export(watermark)
        if not repeated:
            break
        await asyncio.sleep(0.05)
    assert repeated == {}

    await users.call(
        "PlaceHold", user_pb2.PlaceHoldRequest(user_id=b.id, amount=idr(5_000), reference="E-1")
    )
    changed, _ = await export(watermark)
    assert b.card_id in changed
    assert a.card_id not in changed
    assert changed[b.card_id].available.units == 15_000


async def test_sweeper_releases_expired_holds_and_emits_the_event(users, db):
    user = await new_user(users, balance=10_000)
    await users.call(
        "PlaceHold",
        user_pb2.PlaceHoldRequest(
            user_id=user.id,
            amount=idr(4_000),
            reference="X-1",
            expires_in=Duration(nanos=int(timedelta(milliseconds=300).total_seconds() * 1e9)),
        ),
    )
    assert (await wallet(users, user.id))[1] == 4_000
    for _ in range(100):  # the sweeper runs every TIKET_SWEEP_INTERVAL_SECONDS (5 s default)
        hold = await users.call(
            "GetHold", user_pb2.GetHoldRequest(hold=user_pb2.HoldSelector(reference="X-1"))
        )
        if hold.status == user_pb2.HOLD_STATUS_RELEASED:
            break
        await asyncio.sleep(0.1)
    assert hold.status == user_pb2.HOLD_STATUS_RELEASED
    assert hold.release_reason == "expired"
    assert (await wallet(users, user.id))[1] == 0
    types = [
        row[0]
        for row in await (await db.execute("SELECT event_type FROM outbox ORDER BY seq")).fetchall()
    ]
    assert types == [
        "user.created",
        "wallet.topped_up",
        "wallet.hold_placed",
        "wallet.hold_released",
    ]


async def test_every_change_writes_its_event_in_the_same_transaction(users, db):
    user = await new_user(users, balance=10_000)
    await users.call(
        "PlaceHold", user_pb2.PlaceHoldRequest(user_id=user.id, amount=idr(3_000), reference="V-1")
    )
    await users.call(
        "CaptureHold",
        user_pb2.CaptureHoldRequest(
            hold=user_pb2.HoldSelector(reference="V-1"), final_amount=idr(2_000)
        ),
    )
    await users.call(
        "Charge",
        user_pb2.ChargeRequest(
            user_id=user.id, amount=idr(1_000), idempotency_key="c", reference="b"
        ),
    )
    await users.call(
        "Refund",
        user_pb2.RefundRequest(
            user_id=user.id, amount=idr(500), idempotency_key="r", reference="b"
        ),
    )
    await users.call(
        "ChangeUserStatus",
        user_pb2.ChangeUserStatusRequest(
            user_id=user.id, status=user_pb2.USER_STATUS_BLOCKED, reason="lost"
        ),
    )
    rows = await (await db.execute("SELECT event_type, body FROM outbox ORDER BY seq")).fetchall()
    assert [r[0] for r in rows] == [
        "user.created",
        "wallet.topped_up",
        "wallet.hold_placed",
        "wallet.hold_captured",
        "wallet.charged",
        "wallet.refunded",
        "user.status_changed",
    ]
    captured = rows[3][1]
    assert captured["type"] == "wallet.hold_captured"
    assert captured["source"] == "/tiket/user"
    assert captured["subject"] == user.id
    assert captured["data"]["finalAmount"]["units"] == "2000"
    assert captured["data"]["availableAfter"]["units"] == "8000"


async def test_the_hold_placed_event_is_the_one_the_python_builder_would_write(users, db):
    user = await new_user(users, balance=10_000)
    hold = await users.call(
        "PlaceHold",
        user_pb2.PlaceHoldRequest(user_id=user.id, amount=idr("3000.50"), reference="P-1"),
    )
    event_id, body = await (
        await db.execute(
            "SELECT event_id, body FROM outbox WHERE event_type = 'wallet.hold_placed'"
        )
    ).fetchone()
    assert (body["id"], body["type"], body["source"]) == (
        str(event_id),
        "wallet.hold_placed",
        "/tiket/user",
    )
    assert body["subject"] == user.id
    assert body["data"] == json_format.MessageToDict(
        wallet_pb2.WalletHoldChanged(
            user_id=user.id,
            hold_id=hold.id,
            reference="P-1",
            amount=idr("3000.50"),
            available_after=idr("6999.50"),
            reason="Trip fare hold",
            expires_at=hold.expires_at,
        )
    )
