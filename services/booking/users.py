"""The booking service's client of the user service: a booking's pet must be the rider's
(issue 14), and a booking is paid from and refunded to the rider's wallet. Calls go through
libs/clients.service_channel (seed 001 §3.1: 1 s, two retries of UNAVAILABLE, circuit
breaker), signed as the booking service. Every money move is idempotent by its key, so a
step repeated after a crash or by the sweeper takes effect once."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from google.protobuf.message import Message
from grpc import aio
from tiket.user.v1 import user_pb2, user_pb2_grpc

from libs import remote_errors
from libs.errors import FailedPrecondition, NotFound
from libs.money import to_money

WHAT = "the user service"


class Users:
    def __init__(self, channel: aio.Channel) -> None:
        self.stub = user_pb2_grpc.UserServiceStub(channel)

    async def require_pet_owned(self, user_id: uuid.UUID, pet_id: uuid.UUID) -> None:
        """FAILED_PRECONDITION PET_NOT_OWNED unless the user service lists `pet_id` among
        the pets of `user_id`; UNAVAILABLE when it cannot say."""
        refused = FailedPrecondition(
            "PET_NOT_OWNED", f"pet {pet_id} is not a pet of user {user_id}"
        )
        try:
            listed = await self._call(
                self.stub.ListPets, user_pb2.ListPetsRequest(user_id=str(user_id))
            )
        except NotFound:  # no such user: no such pet either
            raise refused from None
        if str(pet_id) not in {pet.id for pet in listed.pets}:
            raise refused

    async def charge(
        self, user_id: uuid.UUID, amount: Decimal, key: str, reference: str, description: str
    ) -> None:
        """Take `amount` from the wallet once per `key`; FAILED_PRECONDITION with the
        wallet's reason (INSUFFICIENT_BALANCE, USER_NOT_ACTIVE …) when it refuses."""
        request = user_pb2.ChargeRequest(reference=reference)
        await self._move(self.stub.Charge, request, user_id, amount, key, description)

    async def refund(
        self, user_id: uuid.UUID, amount: Decimal, key: str, reference: str, description: str
    ) -> None:
        """Credit back `amount` of what was charged under `reference`, once per `key`."""
        request = user_pb2.RefundRequest(reference=reference)
        await self._move(self.stub.Refund, request, user_id, amount, key, description)

    async def top_up(self, user_id: uuid.UUID, amount: Decimal, key: str, description: str) -> None:
        """Credit money a payment provider confirmed, once per `key` (the booking service
        is the one caller the user service lets credit a rider's wallet this way)."""
        request = user_pb2.TopUpRequest()
        await self._move(self.stub.TopUp, request, user_id, amount, key, description)

    async def _move(
        self,
        method: Callable[..., Awaitable[Message]],
        request: user_pb2.ChargeRequest | user_pb2.RefundRequest | user_pb2.TopUpRequest,
        user_id: uuid.UUID,
        amount: Decimal,
        key: str,
        description: str,
    ) -> None:
        """A money move of the wallet: every request of the three has these fields."""
        request.user_id = str(user_id)
        request.amount.CopyFrom(to_money(amount))
        request.idempotency_key = key
        request.description = description
        await self._call(method, request)

    async def _call(self, method: Callable[..., Awaitable[Message]], request: Message) -> Any:
        try:
            return await method(request)
        except aio.AioRpcError as error:
            raise remote_errors.translate(error, WHAT, "booking") from None
