"""Domain errors -> gRPC status codes with google.rpc error details."""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from libs import errors

DOMAIN = "tiket"

CODES: dict[type[errors.TiketError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
}


def code_of(error: errors.TiketError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in CODES:
            return CODES[cls]
    return grpc.StatusCode.INTERNAL


def rich_status(error: errors.TiketError) -> tuple[grpc.StatusCode, str, bytes]:
    """(code, message, serialized google.rpc.Status) for the grpc-status-details-bin trailer."""
    code = code_of(error)
    status = status_pb2.Status(code=code.value[0], message=error.message)
    for detail in _details(error):
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return code, error.message, status.SerializeToString()


def _details(error: errors.TiketError) -> list[Message]:
    if isinstance(error, errors.InvalidArgument):
        return [
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in error.violations
                ]
            )
        ]
    if isinstance(error, errors.FailedPrecondition):
        return [error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN), *error.details]
    if isinstance(error, errors.ResourceExhausted):
        return _exhausted_details(error)
    if isinstance(error, errors.NotFound) and error.resource_type:
        info = error_details_pb2.ResourceInfo(
            resource_type=error.resource_type,
            resource_name=error.resource_name,
            description=error.message,
        )
        return [info]
    return []


def _exhausted_details(error: errors.ResourceExhausted) -> list[Message]:
    details: list[Message] = []
    if error.retry_after_seconds is not None:
        # Rounded up to the millisecond: retrying after the delay must not be too early.
        millis = max(0, math.ceil(error.retry_after_seconds * 1000))
        delay = duration_pb2.Duration(seconds=millis // 1000, nanos=millis % 1000 * 1_000_000)
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    if error.subject:
        violation = error_details_pb2.QuotaFailure.Violation(
            subject=error.subject, description=error.message
        )
        details.append(error_details_pb2.QuotaFailure(violations=[violation]))
    return details


def internal_status(request_id: str) -> tuple[grpc.StatusCode, str, bytes]:
    message = f"internal error; quote request id {request_id} when reporting it"
    status = status_pb2.Status(code=code_pb2.INTERNAL, message=message)
    return grpc.StatusCode.INTERNAL, message, status.SerializeToString()
