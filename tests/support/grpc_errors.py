"""Reading the google.rpc details of a failed call."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2


def status_bytes(error: grpc.aio.AioRpcError) -> bytes:
    """The serialized google.rpc.Status a failed call carried (b"" when none)."""
    return dict(error.trailing_metadata() or ()).get("grpc-status-details-bin", b"")


def bad_request_fields(error: grpc.aio.AioRpcError) -> list[str]:
    """Field names in the google.rpc.BadRequest detail of `error`."""
    raw = status_bytes(error)
    assert raw, "INVALID_ARGUMENT must carry google.rpc.BadRequest details"
    status = status_pb2.Status.FromString(raw)
    detail = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(detail)
    return [v.field for v in detail.field_violations]


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The google.rpc.ErrorInfo reason of a refusal ("" when it carries none)."""
    raw = status_bytes(error)
    if not raw:
        return ""
    info = error_details_pb2.ErrorInfo()
    for detail in status_pb2.Status.FromString(raw).details:
        if detail.Unpack(info):
            return info.reason
    return ""
