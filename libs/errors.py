"""Domain errors. Raised by domain and store code; the server maps each to a gRPC status
(libs/server/errors.py), so no layer below the API has to know about gRPC."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import Message


class TiketError(Exception):
    """Base of every error a caller is meant to see."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class InvalidArgument(TiketError):
    """Bad input; names each offending field (google.rpc.BadRequest)."""

    def __init__(self, *violations: FieldViolation) -> None:
        self.violations = violations
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))

    @classmethod
    def field(cls, name: str, description: str) -> InvalidArgument:
        return cls(FieldViolation(name, description))


class NotFound(TiketError):
    """Nothing by that name, or nothing the caller may see. `resource_type` and
    `resource_name` say what was looked for (google.rpc.ResourceInfo), so a caller tells an
    unknown card from an unknown gate without reading the message."""

    def __init__(self, message: str, *, resource_type: str = "", resource_name: str = "") -> None:
        super().__init__(message)
        self.resource_type = resource_type
        self.resource_name = resource_name


T = TypeVar("T")


def not_found(resource_type: str, resource_name: object = "", within: str = "") -> NotFound:
    """NOT_FOUND "<resource_type> <resource_name> not found[ in <within>]", with its
    ResourceInfo."""
    name = str(resource_name)
    what = f"{resource_type} {name}" if name else resource_type
    where = f" in {within}" if within else ""
    return NotFound(f"{what} not found{where}", resource_type=resource_type, resource_name=name)


def found(value: T | None, resource_type: str, resource_name: object = "") -> T:
    """`value`, or not_found(resource_type, resource_name) when it is None."""
    if value is None:
        raise not_found(resource_type, resource_name)
    return value


class AlreadyExists(TiketError):
    pass


class FailedPrecondition(TiketError):
    """A business refusal. `reason` is a stable UPPER_SNAKE code a client can switch on
    (google.rpc.ErrorInfo.reason); the message is what a person reads. `details`: messages
    packed into google.rpc.Status.details after the ErrorInfo (what the refusal is about)."""

    def __init__(self, reason: str, message: str, details: Sequence[Message] = ()) -> None:
        super().__init__(message)
        self.reason = reason
        self.details = tuple(details)


class Aborted(TiketError):
    """Lost an optimistic-lock race; the caller may retry."""


class Unauthenticated(TiketError):
    pass


class PermissionDenied(TiketError):
    pass


class ResourceExhausted(TiketError):
    """A quota or rate limit is used up. `retry_after_seconds`, when known, is how long until
    a retry may succeed (google.rpc.RetryInfo); `subject` names what ran out, e.g.
    "user:<id>" (google.rpc.QuotaFailure)."""

    def __init__(
        self, message: str, *, retry_after_seconds: float | None = None, subject: str = ""
    ) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
        self.subject = subject


class Unavailable(TiketError):
    """A dependency is down; the caller may retry or fall back."""


class Unimplemented(TiketError):
    """An RPC of the contract that is not built yet."""
