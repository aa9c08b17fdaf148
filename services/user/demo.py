"""Demo data: seed 004's riders, with valid card ids (the seed's CARD001 is too short for
^[A-Z0-9]{8,20}$) and the balances its examples imply (John Doe: Rp 150.000, seed 004 Redis
example; Dewi: Rp 50.000, so her A->B trip leaves Rp 45.000 as in the notification sample).
Loaded through the public API, idempotently: running it again (every `make run`) changes
nothing, and undoes nothing staff did since: a card is blocked only while nobody has changed
its status yet, and the lines printed show each rider's status and balance as they are."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from grpc import aio
from tiket.user.v1 import user_pb2, user_pb2_grpc

from libs.money import from_money, rupiah, to_money

DEMO_USERS = [
    # card_id, full_name, email, phone, balance, status
    ("CARD0001", "John Doe", "john.doe@example.com", "+6281100000001", 150_000, "active"),
    ("CARD0002", "Siti Rahayu", "siti.rahayu@example.com", "+6281100000002", 100_000, "active"),
    ("CARD0003", "Budi Santoso", "budi.santoso@example.com", "+6281100000003", 75_000, "active"),
    ("CARD0004", "Dewi Lestari", "dewi.lestari@example.com", "+6281100000004", 50_000, "active"),
    ("CARD0005", "Agus Wijaya", "agus.wijaya@example.com", "+6281100000005", 200_000, "active"),
    ("CARD0006", "Rina Kartika", "rina.kartika@example.com", "+6281100000006", 20_000, "blocked"),
]


async def load(
    channel: aio.Channel, metadata: list[tuple[str, str]], out: Callable[[str], None]
) -> list[str]:
    """Create the riders; their user ids, in DEMO_USERS' order."""
    stub = user_pb2_grpc.UserServiceStub(channel)
    riders: list[str] = []
    for card_id, name, email, phone, balance, status in DEMO_USERS:
        user = await stub.CreateUser(
            user_pb2.CreateUserRequest(
                card_id=card_id,
                full_name=name,
                email=email,
                phone=phone,
                request_id=f"demo-user-{card_id}",
            ),
            metadata=metadata,
        )
        await stub.TopUp(
            user_pb2.TopUpRequest(
                user_id=user.id,
                amount=to_money(Decimal(balance)),
                idempotency_key=f"demo-topup-{card_id}",
                description="Demo balance",
            ),
            metadata=metadata,
        )
        if status == "blocked" and not user.status_reason:  # no status change made yet
            user = await stub.ChangeUserStatus(
                user_pb2.ChangeUserStatusRequest(
                    user_id=user.id, status=user_pb2.USER_STATUS_BLOCKED, reason="Kartu hilang"
                ),
                metadata=metadata,
            )
        wallet = await stub.GetWallet(user_pb2.GetWalletRequest(user_id=user.id), metadata=metadata)
        now = user_pb2.UserStatus.Name(user.status).removeprefix("USER_STATUS_").lower()
        balance_now = rupiah(from_money(wallet.balance))
        out(f"  user {card_id}  {name:<14} {balance_now:>12}  {now}  id={user.id}")
        riders.append(user.id)
    return riders
