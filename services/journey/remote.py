"""Calls to the user and fare services: within the gate's deadline, and with their failures
turned into the errors a gate understands. A dependency that is down or too slow makes the
tap answer UNAVAILABLE at once (the gate falls back to offline mode); a business refusal
passes through as FAILED_PRECONDITION with its reason."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

from libs.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    TiketError,
    Unavailable,
)

R = TypeVar("R", bound=Message)
# Kept back from the caller's deadline to write and send our own answer.
ANSWER_MARGIN = 0.1
GONE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)
# Our token refused: a configuration fault of this deployment, not the rider's; the gate
# can do nothing but go offline.
MISCONFIGURED = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "journey_deadline", default=None
)


def set_deadline(time_remaining: float | None) -> None:
    """Bound every dependency call of the current request by the caller's deadline."""
    _deadline.set(None if time_remaining is None else time.monotonic() + time_remaining)


def timeout(default: float) -> float:
    """Seconds the next call may take: `default`, or less when the caller's deadline is
    nearer. Unavailable when no time is left."""
    deadline = _deadline.get()
    if deadline is None:
        return default
    left = deadline - time.monotonic() - ANSWER_MARGIN
    if left <= 0:
        raise Unavailable("the gate's deadline passed before the wallet could answer")
    return min(default, left)


async def call(
    method: Callable[..., Awaitable[R]], request: Message, what: str, default_timeout: float
) -> R:
    """`await method(request)` with the deadline applied and errors translated."""
    try:
        return await method(request, timeout=timeout(default_timeout))
    except aio.AioRpcError as error:
        raise translate(error, what) from None


def translate(error: aio.AioRpcError, what: str) -> TiketError:
    code, details = error.code(), error.details() or ""
    if code in GONE:
        return Unavailable(f"{what} is unavailable ({code.name}: {details}); retry shortly")
    if code in MISCONFIGURED:
        return Unavailable(f"{what} refused the journey service's token ({code.name}): {details}")
    if code is grpc.StatusCode.NOT_FOUND:
        return NotFound(details)
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(reason_of(error), details)
    if code is grpc.StatusCode.ALREADY_EXISTS:
        return AlreadyExists(details)
    if code is grpc.StatusCode.ABORTED:
        return Aborted(details)
    return InvalidArgument.field("request", f"{what} refused it: {details}")


def reason_of(error: aio.AioRpcError) -> str:
    """google.rpc.ErrorInfo.reason from the error's details, or a generic one."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return "REFUSED"
