"""libs.server.interceptor on a real in-process grpc.aio server: authentication, the access
policy, domain errors -> status codes with google.rpc details, INTERNAL without leaks,
request ids and metrics."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from prometheus_client import REGISTRY

from libs.auth import Role
from libs.auth.service_identity import ServiceIdentity
from libs.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    not_found,
)
from libs.remote_errors import translate
from libs.server.access import Policy
from libs.server.interceptor import DETAILS_KEY, ServiceInterceptor
from tests.support import keys
from tests.support.fake_service import SERVICE, Request, Response, serving
from tests.support.settings import isolated_settings

pytestmark = pytest.mark.timeout(30)

SETTINGS = isolated_settings()


async def ok(request, context):
    return Response(user_id=request.user_id)


async def invalid(request, context):
    raise InvalidArgument(
        FieldViolation("user_id", "is not a UUID"), FieldViolation("amount.nanos", "whole cents")
    )


async def refused(request, context):
    raise FailedPrecondition("INSUFFICIENT_BALANCE", "insufficient balance: 5 needed")


async def missing(request, context):
    raise NotFound("user 42 not found")


async def missing_card(request, context):
    raise not_found("card", "CARD0001")


async def crash(request, context):
    raise RuntimeError("secret stack")


async def aborts(request, context):
    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down")


async def limited(request, context):
    raise ResourceExhausted("60 requests per minute")


async def stream_then_fail(request, context):
    yield Response(user_id="1")
    yield Response(user_id="2")
    raise FailedPrecondition("EXPORT_BROKEN", "stopped")


async def stream_crash(request, context):
    yield Response(user_id="1")
    raise KeyError("secret stack")


STAFF = frozenset({Role.ADMIN, Role.OPERATOR})
STAFF_OR_SELF = Policy(
    roles=STAFF, self_roles=frozenset({Role.USER}), owner_field="user_id", public=False
)
UNARY = {
    "Ok": ok,
    "Invalid": invalid,
    "Refused": refused,
    "Missing": missing,
    "MissingCard": missing_card,
    "Crash": crash,
    "Aborts": aborts,
    "Limited": limited,
    "Public": ok,
    "Undeclared": ok,
}
STREAMS = {"Stream": stream_then_fail, "StreamCrash": stream_crash}
POLICIES = {f"/{SERVICE}/{name}": STAFF_OR_SELF for name in [*UNARY, *STREAMS]}
POLICIES[f"/{SERVICE}/Public"] = Policy(frozenset(), frozenset(), "", public=True)
del POLICIES[f"/{SERVICE}/Undeclared"]


@pytest.fixture
async def channel() -> AsyncIterator[aio.Channel]:
    async with serving(ServiceInterceptor(POLICIES, verifier()), UNARY, STREAMS) as channel:
        yield channel


def verifier():
    return ServiceIdentity.load("user", SETTINGS).verifier()


def auth(role: Role = Role.ADMIN, sub: str = "tests") -> list:
    return keys.bearer(SETTINGS, role, sub)


async def call(channel: aio.Channel, method: str, request=None, metadata=None):
    stub = channel.unary_unary(
        f"/{SERVICE}/{method}",
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )
    return await stub(
        request or Request(user_id="u1"), metadata=auth() if metadata is None else metadata
    )


async def failure(
    channel: aio.Channel, method: str, request=None, metadata=None
) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as caught:
        await call(channel, method, request, metadata)
    return caught.value


def trailers(error: aio.AioRpcError) -> dict:
    return dict(error.trailing_metadata() or ())


def rich_status(error: aio.AioRpcError) -> status_pb2.Status:
    raw = trailers(error).get(DETAILS_KEY)
    assert raw, f"{error.code()} must carry {DETAILS_KEY}"
    status = status_pb2.Status.FromString(raw)
    assert status.code == error.code().value[0]
    assert status.message == error.details()
    return status


async def counted(method: str, code: str, *rest) -> None:
    """Wait until the handled counter of `method`/`code` reaches the expected value: the
    server counts in the `finally` after it sent the status, so the client may be first."""
    *kind, expected = rest
    for _ in range(100):
        if handled(method, code, *kind) == expected:
            return
        await asyncio.sleep(0.01)
    assert handled(method, code, *kind) == expected


def handled(method: str, code: str, kind: str = "unary") -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": method, "grpc_type": kind, "grpc_code": code}
    return REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0


# --- success and request ids ---------------------------------------------------------


async def test_success_passes_through_and_echoes_the_request_id(channel: aio.Channel) -> None:
    request_id = f"req-{uuid.uuid4().hex}"
    call_ = channel.unary_unary(
        f"/{SERVICE}/Ok",
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )(Request(user_id="u7"), metadata=[*auth(), ("x-request-id", request_id)])

    assert (await call_).user_id == "u7"
    assert dict(await call_.trailing_metadata())["x-request-id"] == request_id


async def test_a_request_id_is_made_when_none_is_sent(channel: aio.Channel) -> None:
    call_ = channel.unary_unary(
        f"/{SERVICE}/Ok",
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )(Request(), metadata=auth())
    await call_
    rid = dict(await call_.trailing_metadata())["x-request-id"]
    assert len(rid) == 16 and int(rid, 16) >= 0


async def test_errors_echo_the_request_id(channel: aio.Channel) -> None:
    error = await failure(channel, "Refused", metadata=[*auth(), ("x-request-id", "abc-123")])
    assert trailers(error)["x-request-id"] == "abc-123"


# --- authentication and access -------------------------------------------------------


@pytest.mark.parametrize(
    "metadata",
    [
        [],
        [("authorization", "Bearer nonsense")],
        [("authorization", "Basic Zm9vOmJhcg==")],
        *([("authorization", f"Bearer {bad}")] for bad in keys.bad_tokens(SETTINGS).values()),
    ],
)
async def test_unauthenticated(channel: aio.Channel, metadata: list) -> None:
    before = handled("Ok", "UNAUTHENTICATED")
    error = await failure(channel, "Ok", metadata=metadata)
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    await counted("Ok", "UNAUTHENTICATED", before + 1)


async def test_policy_allows_self_and_denies_others(channel: aio.Channel) -> None:
    me = str(uuid.uuid4())
    assert (await call(channel, "Ok", Request(user_id=me), auth(Role.USER, me))).user_id == me

    error = await failure(channel, "Ok", Request(user_id=str(uuid.uuid4())), auth(Role.USER, me))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "own user_id" in error.details()

    error = await failure(channel, "Ok", Request(user_id=me), auth(Role.GATE, "A/A-ENTRY-01"))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_the_behaviour_does_not_run_when_access_is_denied(channel: aio.Channel) -> None:
    # Crash would answer INTERNAL; a denied call never reaches it.
    error = await failure(channel, "Crash", metadata=auth(Role.SERVICE, "tests"))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    error = await failure(channel, "Crash", metadata=[])
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_public_methods_need_no_token(channel: aio.Channel) -> None:
    assert (await call(channel, "Public", Request(user_id="p"), metadata=[])).user_id == "p"


# --- domain errors -------------------------------------------------------------------


async def test_invalid_argument_carries_bad_request_details(channel: aio.Channel) -> None:
    before = handled("Invalid", "INVALID_ARGUMENT")

    error = await failure(channel, "Invalid")

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "user_id: is not a UUID; amount.nanos: whole cents"
    status = rich_status(error)
    (packed,) = status.details
    detail = error_details_pb2.BadRequest()
    assert packed.Unpack(detail)
    assert [(v.field, v.description) for v in detail.field_violations] == [
        ("user_id", "is not a UUID"),
        ("amount.nanos", "whole cents"),
    ]
    await counted("Invalid", "INVALID_ARGUMENT", before + 1)


async def test_failed_precondition_carries_error_info(channel: aio.Channel) -> None:
    before = handled("Refused", "FAILED_PRECONDITION")
    refusals = {"grpc_service": SERVICE, "grpc_method": "Refused", "reason": "INSUFFICIENT_BALANCE"}
    refused_before = REGISTRY.get_sample_value("tiket_refusals_total", refusals) or 0.0

    error = await failure(channel, "Refused")

    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == "insufficient balance: 5 needed"
    (packed,) = rich_status(error).details
    info = error_details_pb2.ErrorInfo()
    assert packed.Unpack(info)
    assert (info.reason, info.domain) == ("INSUFFICIENT_BALANCE", "tiket")
    await counted("Refused", "FAILED_PRECONDITION", before + 1)
    # Counted by its reason before the status is sent.
    assert REGISTRY.get_sample_value("tiket_refusals_total", refusals) == refused_before + 1


@pytest.mark.parametrize(
    ("method", "code"),
    [("Missing", grpc.StatusCode.NOT_FOUND), ("Limited", grpc.StatusCode.RESOURCE_EXHAUSTED)],
)
async def test_other_domain_errors(channel: aio.Channel, method: str, code) -> None:
    before = handled(method, code.name)
    error = await failure(channel, method)
    assert error.code() is code
    assert rich_status(error).details == []
    await counted(method, code.name, before + 1)


async def test_not_found_names_what_was_not_found_and_a_caller_carries_it_on(
    channel: aio.Channel,
) -> None:
    error = await failure(channel, "MissingCard")
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert error.details() == "card CARD0001 not found"
    (packed,) = rich_status(error).details
    info = error_details_pb2.ResourceInfo()
    assert packed.Unpack(info)
    assert (info.resource_type, info.resource_name) == ("card", "CARD0001")
    # A service that called this one raises what it was told, ResourceInfo and all.
    carried = translate(error, "the wallet (user service)", "journey")
    assert isinstance(carried, NotFound)
    assert (carried.resource_type, carried.resource_name) == ("card", "CARD0001")
    assert carried.message == "card CARD0001 not found"
    without = translate(await failure(channel, "Missing"), "the wallet", "journey")
    assert isinstance(without, NotFound) and without.resource_type == ""


async def test_unexpected_exception_is_internal_without_leaks(channel: aio.Channel) -> None:
    before = handled("Crash", "INTERNAL")

    error = await failure(channel, "Crash", metadata=[*auth(), ("x-request-id", "crash-77")])

    assert error.code() is grpc.StatusCode.INTERNAL
    assert "crash-77" in error.details()
    assert "secret stack" not in error.details()
    assert "Traceback" not in error.details()
    assert "RuntimeError" not in error.details()
    raw = trailers(error)[DETAILS_KEY]
    assert b"secret stack" not in raw and b"Traceback" not in raw
    assert rich_status(error).details == []
    assert trailers(error)["x-request-id"] == "crash-77"
    await counted("Crash", "INTERNAL", before + 1)


async def test_aborts_by_the_behaviour_are_counted_with_their_code(channel: aio.Channel) -> None:
    before = handled("Aborts", "RESOURCE_EXHAUSTED")
    error = await failure(channel, "Aborts")
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == "slow down"
    await counted("Aborts", "RESOURCE_EXHAUSTED", before + 1)


async def test_success_is_counted_as_ok(channel: aio.Channel) -> None:
    before = handled("Ok", "OK")
    for _ in range(3):
        await call(channel, "Ok")
    await counted("Ok", "OK", before + 3)


async def test_methods_without_a_policy_are_refused_even_with_a_token(
    channel: aio.Channel,
) -> None:
    # Only health and reflection are open; a servicer registered without a declared policy
    # must not become an open door.
    for metadata in ([], auth(Role.ADMIN)):
        error = await failure(channel, "Undeclared", metadata=metadata)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "declares no access policy" in error.details()


async def test_health_is_open_without_a_token() -> None:
    health = health_aio.HealthServicer()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    server = aio.server(interceptors=[ServiceInterceptor(POLICIES, verifier())])
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    finally:
        await server.stop(None)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# --- server streaming ----------------------------------------------------------------


def stream(channel: aio.Channel, method: str, metadata) -> aio.UnaryStreamCall:
    return channel.unary_stream(
        f"/{SERVICE}/{method}",
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )(Request(user_id="u1"), metadata=metadata)


async def test_stream_error_after_items(channel: aio.Channel) -> None:
    before = handled("Stream", "FAILED_PRECONDITION", "server_stream")
    received = []
    with pytest.raises(aio.AioRpcError) as caught:
        async for item in stream(channel, "Stream", auth()):
            received.append(item.user_id)
    assert received == ["1", "2"]
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    info = error_details_pb2.ErrorInfo()
    assert rich_status(caught.value).details[0].Unpack(info)
    assert info.reason == "EXPORT_BROKEN"
    await counted("Stream", "FAILED_PRECONDITION", "server_stream", before + 1)


async def test_stream_crash_is_internal_without_leaks(channel: aio.Channel) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        async for _ in stream(channel, "StreamCrash", [*auth(), ("x-request-id", "s-1")]):
            pass
    assert caught.value.code() is grpc.StatusCode.INTERNAL
    assert "s-1" in caught.value.details()
    assert "secret stack" not in caught.value.details()


async def test_stream_checks_access_first(channel: aio.Channel) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        async for _ in stream(channel, "Stream", auth(Role.GATE, "A/A-ENTRY-01")):
            pytest.fail("no item may be sent to a caller without access")
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_an_empty_owner_field_is_nobody_not_everyone(channel: aio.Channel) -> None:
    # A rider's list call that names no user would once match every rider's data.
    me = str(uuid.uuid4())
    error = await failure(channel, "Ok", Request(user_id=""), auth(Role.USER, me))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED


# --- the access log ------------------------------------------------------------------


async def test_a_success_is_logged_at_debug_and_a_failure_at_info(
    channel: aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tiket.rpc")
    await call(channel, "Ok")
    await failure(channel, "Refused")

    def lines() -> set[tuple[int, str, str]]:
        return {
            (r.levelno, r.method, r.code)  # type: ignore[attr-defined]
            for r in caplog.records
            if r.name == "tiket.rpc" and r.getMessage() == "rpc"
        }

    for _ in range(100):  # logged in the `finally`, after the status went out
        if len(lines()) == 2:
            break
        await asyncio.sleep(0.01)
    assert lines() == {
        (logging.DEBUG, f"/{SERVICE}/Ok", "OK"),
        (logging.INFO, f"/{SERVICE}/Refused", "FAILED_PRECONDITION"),
    }
