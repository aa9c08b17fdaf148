"""What the `tiket demo` scenarios share: a short-lived development token, the wallet's
available balance, money as Indonesians read it."""

from __future__ import annotations

from decimal import Decimal

from tiket.user.v1 import user_pb2, user_pb2_grpc

from cli import keys
from libs import auth
from libs.config import Settings
from libs.money import from_money, rupiah


def metadata(settings: Settings, role: auth.Role, subject: str) -> list[tuple[str, str]]:
    return keys.bearer(keys.dev_cli_token(settings, role, subject, 300))


async def available(users: user_pb2_grpc.UserServiceStub, user_id: str, metadata) -> Decimal:
    wallet = await users.GetWallet(user_pb2.GetWalletRequest(user_id=user_id), metadata=metadata)
    return from_money(wallet.available)


def rp(amount: Decimal) -> str:
    """Rp 12.000, or -Rp 12.000."""
    return ("-" if amount < 0 else "") + rupiah(abs(amount))
