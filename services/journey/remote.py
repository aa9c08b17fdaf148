"""Calls to the user and fare services: within the gate's deadline, and with their failures
turned into the errors a gate understands. A dependency that is down or too slow makes the
tap answer UNAVAILABLE at once (the gate falls back to offline mode); a business refusal
passes through as FAILED_PRECONDITION with its reason."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message
from grpc import aio

from libs import remote_errors
from libs.errors import TiketError, Unavailable

R = TypeVar("R", bound=Message)
# Kept back from the caller's deadline to write and send our own answer.
ANSWER_MARGIN = 0.1
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
    return remote_errors.translate(error, what, "journey")
