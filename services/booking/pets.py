"""The booking service's client of the user service for pets: a booking's pet must be the
rider's (issue 14). Calls go through libs/clients.service_channel (seed 001 §3.1: 1 s, two
retries of UNAVAILABLE, circuit breaker), signed as the booking service."""

from __future__ import annotations

import uuid

import grpc
from grpc import aio
from tiket.user.v1 import user_pb2, user_pb2_grpc

from libs.errors import FailedPrecondition, Unavailable

# The user service refusing our own token is this deployment's fault, not the rider's.
MISCONFIGURED = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})


class Pets:
    def __init__(self, channel: aio.Channel) -> None:
        self.stub = user_pb2_grpc.UserServiceStub(channel)

    async def require_owned(self, user_id: uuid.UUID, pet_id: uuid.UUID) -> None:
        """FAILED_PRECONDITION PET_NOT_OWNED unless the user service lists `pet_id` among
        the pets of `user_id`; UNAVAILABLE when it cannot say."""
        refused = FailedPrecondition(
            "PET_NOT_OWNED", f"pet {pet_id} is not a pet of user {user_id}"
        )
        try:
            listed = await self.stub.ListPets(user_pb2.ListPetsRequest(user_id=str(user_id)))
        except aio.AioRpcError as error:
            code = error.code()
            if code is grpc.StatusCode.NOT_FOUND:  # no such user: no such pet either
                raise refused from None
            what = "refused the booking service's token" if code in MISCONFIGURED else "failed"
            raise Unavailable(
                f"the user service {what} while checking the pet ({code.name}: "
                f"{error.details()}); retry shortly"
            ) from None
        if str(pet_id) not in {pet.id for pet in listed.pets}:
            raise refused
