"""The demo riders (`tiket seed`, so every `make run`): loaded again, they leave alone what
staff did since, and what is printed is each rider as they are now."""

from __future__ import annotations

from decimal import Decimal

from grpc import aio
from tiket.user.v1 import user_pb2

from libs.money import from_money, to_money
from services.user import demo


async def test_loading_again_undoes_no_status_change_and_prints_the_riders_as_they_are(
    user_service, users
):
    async with aio.insecure_channel(f"127.0.0.1:{user_service.port}") as channel:
        first: list[str] = []
        riders = await demo.load(channel, users.metadata(), first.append)
        assert "blocked" in next(line for line in first if "CARD0006" in line)
        rina, john = riders[5], riders[0]
        await users.call(
            "ChangeUserStatus",
            user_pb2.ChangeUserStatusRequest(
                user_id=rina, status=user_pb2.USER_STATUS_ACTIVE, reason="Kartu ditemukan"
            ),
        )
        await users.call(
            "TopUp",
            user_pb2.TopUpRequest(
                user_id=john, amount=to_money(Decimal(5_000)), idempotency_key="counter-1"
            ),
        )

        again: list[str] = []
        assert await demo.load(channel, users.metadata(), again.append) == riders

    rina_now = await users.call("GetUser", user_pb2.GetUserRequest(user_id=rina))
    assert rina_now.status == user_pb2.USER_STATUS_ACTIVE
    assert rina_now.status_reason == "Kartu ditemukan"
    assert "active" in next(line for line in again if "CARD0006" in line)
    wallet = await users.call("GetWallet", user_pb2.GetWalletRequest(user_id=john))
    assert from_money(wallet.balance) == 155_000
    assert "  Rp 155.000  active" in next(line for line in again if "CARD0001" in line)
