"""A tap decided by the journey service, within the gate's deadline. A refusal is a decision
(CLOSED with the server's reason); no answer in time, or no usable answer, is not: the
caller decides offline."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from decimal import Decimal

import grpc
from grpc import aio
from tiket.journey.v1 import journey_pb2

from gate.decide import Direction
from gate.local_taps import Tap
from gate.mesh import Mesh
from libs.money import from_money
from libs.remote_errors import bad_fields, reason_of, resource_of
from libs.timestamps import to_timestamp

INVALID = grpc.StatusCode.INVALID_ARGUMENT
# What the journey service may not find of the gate itself (google.rpc.ResourceInfo).
NOT_REGISTERED = frozenset({"gate", "terminal"})


class NoAnswer(Exception):
    """The server did not decide in time (or could not: down, overloaded, our token refused)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code


@dataclass(frozen=True)
class OnlineAnswer:
    open: bool
    reason: str = ""
    # held at a check-in, the fare at a check-out
    amount: Decimal | None = None
    available: Decimal | None = None
    # the server's words for a refusal, for the log
    detail: str = ""
    # why the server refused the gate's own time for this tap (it then timed the tap itself)
    clock_refused: str = ""


async def tap_online(mesh: Mesh, tap: Tap, timeout: float) -> OnlineAnswer:
    """CheckIn or CheckOut for `tap`; NoAnswer when the server gave no decision. A
    tapped_at the server refuses (this gate's clock is off by more than it allows) is the
    gate's fault, not the rider's: the tap is asked again without it, within the same
    deadline, for the server's clock to time it, and the answer says why (clock_refused)."""
    deadline = time.monotonic() + timeout
    try:
        return await _ask(mesh, tap, timeout, send_time=True)
    except aio.AioRpcError as error:
        if not (error.code() is INVALID and "tapped_at" in bad_fields(error)):
            return _refused(error)
        refused_time = error.details() or ""
    left = deadline - time.monotonic()
    if left <= 0:
        raise NoAnswer(grpc.StatusCode.DEADLINE_EXCEEDED, "no time left to ask again")
    try:
        answer = await _ask(mesh, tap, left, send_time=False)
    except aio.AioRpcError as error:
        answer = _refused(error)
    return replace(answer, clock_refused=refused_time)


async def _ask(mesh: Mesh, tap: Tap, timeout: float, send_time: bool) -> OnlineAnswer:
    fields = {
        "card_id": tap.card_id,
        "terminal_code": tap.terminal_code,
        "gate_code": tap.gate_code,
        "tap_id": tap.tap_id,
    }
    if send_time:
        fields["tapped_at"] = to_timestamp(tap.tapped_at)
    if tap.direction is Direction.CHECK_IN:
        entered = await mesh.journeys.CheckIn(
            journey_pb2.CheckInRequest(**fields), timeout=timeout, metadata=mesh.metadata()
        )
        return OnlineAnswer(
            True, "", from_money(entered.held_amount), from_money(entered.available_balance)
        )
    left = await mesh.journeys.CheckOut(
        journey_pb2.CheckOutRequest(**fields), timeout=timeout, metadata=mesh.metadata()
    )
    return OnlineAnswer(True, "", from_money(left.fare), from_money(left.remaining_balance))


def _refused(error: aio.AioRpcError) -> OnlineAnswer:
    """The decision a failed call carries; NoAnswer when it carries none."""
    code = error.code()
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return OnlineAnswer(False, reason_of(error))
    if code is grpc.StatusCode.NOT_FOUND:
        return OnlineAnswer(False, _not_found_reason(error), detail=error.details() or "")
    if code is INVALID:
        return OnlineAnswer(False, "REFUSED", detail=error.details() or "")
    raise NoAnswer(code, error.details() or "") from error


def _not_found_reason(error: aio.AioRpcError) -> str:
    """The rider's card is unknown (UNKNOWN_CARD), or this gate or its terminal is
    (GATE_NOT_REGISTERED: a configuration fault for staff, not the rider's); a server
    that does not say what it missed is taken to mean the card."""
    info = resource_of(error)
    if info is None or info.resource_type == "card":
        return "UNKNOWN_CARD"
    if info.resource_type in NOT_REGISTERED:
        return "GATE_NOT_REGISTERED"
    return "REFUSED"
