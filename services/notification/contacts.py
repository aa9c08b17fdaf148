"""Where to reach a rider: the email address and phone number the user service holds, cached
in Redis (`notification:user:{id}`, like seed 004's `user:{id}`, for an hour). A changed
address is used once the entry expires; the user service announces no address changes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import grpc
import orjson
from grpc import aio
from tiket.user.v1 import user_pb2, user_pb2_grpc

from libs.cache import Cache
from libs.clients import is_unavailable
from libs.errors import Unavailable


@dataclass(frozen=True)
class Contact:
    email: str | None
    phone: str | None


def cache_key(user_id: uuid.UUID) -> str:
    return f"notification:user:{user_id}"


class Contacts:
    def __init__(self, channel: aio.Channel, cache: Cache, ttl: int) -> None:
        """`channel`: libs.clients.service_channel to the user service (token, deadline)."""
        self.stub = user_pb2_grpc.UserServiceStub(channel)
        self.cache = cache
        self.ttl = ttl

    async def of(self, user_id: uuid.UUID) -> Contact | None:
        """None for a user the user service does not know; Unavailable when it cannot be
        asked."""
        return await self.cache.get_or_load(
            cache_key(user_id), self.ttl, lambda: self._load(user_id), _encode, _decode
        )

    async def _load(self, user_id: uuid.UUID) -> Contact | None:
        request = user_pb2.GetUserRequest(user_id=str(user_id))
        try:
            user = await self.stub.GetUser(request)
        except aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.NOT_FOUND:
                return None
            reason = "unavailable" if is_unavailable(error) else "refused the lookup"
            raise Unavailable(
                f"user service {reason} ({error.code().name}: {error.details()})"
            ) from None
        return Contact(email=user.email or None, phone=user.phone or None)


def _encode(contact: Contact) -> bytes:
    return orjson.dumps({"email": contact.email, "phone": contact.phone})


def _decode(raw: bytes) -> Contact:
    value = orjson.loads(raw)
    return Contact(email=value.get("email"), phone=value.get("phone"))
