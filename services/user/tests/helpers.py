"""Small builders shared by the user service tests."""

from __future__ import annotations

import itertools
import uuid
from decimal import Decimal

from tiket.user.v1 import user_pb2

from libs.money import from_money, to_money

_cards = itertools.count(1)


def new_card() -> str:
    return f"T{uuid.uuid4().hex[:8].upper()}{next(_cards):04d}"


def idr(amount: int | str) -> object:
    return to_money(Decimal(amount))


def amount_of(money) -> Decimal:
    return from_money(money)


async def new_user(users, balance: int = 0, **fields) -> user_pb2.User:
    user = await users.call(
        "CreateUser",
        user_pb2.CreateUserRequest(
            card_id=fields.pop("card_id", new_card()), full_name="Rider", **fields
        ),
    )
    if balance:
        await users.call(
            "TopUp",
            user_pb2.TopUpRequest(
                user_id=user.id, amount=idr(balance), idempotency_key=f"init-{user.id}"
            ),
        )
    return user


async def wallet(users, user_id: str) -> tuple[Decimal, Decimal, Decimal]:
    w = await users.call("GetWallet", user_pb2.GetWalletRequest(user_id=user_id))
    return amount_of(w.balance), amount_of(w.held), amount_of(w.available)
