"""Failures of a call to another tiket service, turned into the errors of the caller: a
dependency that is down, too slow or refusing our own token is UNAVAILABLE (the caller may
retry); a business refusal passes through as FAILED_PRECONDITION with its reason."""

from __future__ import annotations

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

M = TypeVar("M", bound=Message)  # a google.rpc detail type

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
# Our token refused: a configuration fault of this deployment, not the caller's.
MISCONFIGURED = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})


def translate(error: aio.AioRpcError, what: str, caller: str) -> TiketError:
    """The error to raise when `what` (e.g. "the wallet (user service)") answered `error` to
    a call of the `caller` service."""
    code, details = error.code(), error.details() or ""
    if code in GONE:
        return Unavailable(f"{what} is unavailable ({code.name}: {details}); retry shortly")
    if code in MISCONFIGURED:
        return Unavailable(f"{what} refused the {caller} service's token ({code.name}): {details}")
    if code is grpc.StatusCode.NOT_FOUND:
        info = resource_of(error) or error_details_pb2.ResourceInfo()
        return NotFound(details, resource_type=info.resource_type, resource_name=info.resource_name)
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(reason_of(error), details)
    if code is grpc.StatusCode.ALREADY_EXISTS:
        return AlreadyExists(details)
    if code is grpc.StatusCode.ABORTED:
        return Aborted(details)
    return InvalidArgument.field("request", f"{what} refused it: {details}")


def reason_of(error: aio.AioRpcError) -> str:
    """google.rpc.ErrorInfo.reason from the error's details, or a generic one."""
    info = _detail(error, error_details_pb2.ErrorInfo)
    return info.reason if info is not None else "REFUSED"


def resource_of(error: aio.AioRpcError) -> error_details_pb2.ResourceInfo | None:
    """What a NOT_FOUND says was not found (google.rpc.ResourceInfo), when it says."""
    return _detail(error, error_details_pb2.ResourceInfo)


def bad_fields(error: aio.AioRpcError) -> list[str]:
    """The fields an INVALID_ARGUMENT names (google.rpc.BadRequest), if it names any."""
    bad = _detail(error, error_details_pb2.BadRequest)
    return [] if bad is None else [v.field for v in bad.field_violations]


def _detail(error: aio.AioRpcError, kind: type[M]) -> M | None:
    """The first detail of type `kind` in the error's google.rpc.Status, if any."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                found = kind()
                if detail.Unpack(found):
                    return found
    return None
