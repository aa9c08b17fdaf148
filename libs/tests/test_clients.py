"""Service-to-service channels: a service token and trace context on every call, a default
deadline, and gRPC retries of UNAVAILABLE."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc import aio

from libs import tracing
from libs.auth import Role
from libs.auth.service_identity import ServiceIdentity
from libs.clients import is_unavailable, service_channel
from libs.errors import Unauthenticated
from tests.support.settings import isolated_settings

SETTINGS = isolated_settings()
JOURNEY = ServiceIdentity.load("journey", SETTINGS)
SERVICE = "tiket.test.v1.Flaky"


class FlakyServer:
    """Answers UNAVAILABLE `failures` times, then echoes; records the metadata it saw."""

    def __init__(self, failures: int, delay: float = 0.0) -> None:
        self.failures = failures
        self.delay = delay
        self.attempts = 0
        self.metadata: dict[str, str] = {}

    async def echo(self, request: bytes, context: aio.ServicerContext) -> bytes:
        self.attempts += 1
        self.metadata = dict(context.invocation_metadata())
        if self.attempts <= self.failures:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        await asyncio.sleep(self.delay)
        return request

    async def start(self) -> tuple[aio.Server, int]:
        handler = grpc.method_handlers_generic_handler(
            SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(self.echo)}
        )
        server = aio.server()
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port


async def call(channel: aio.Channel, payload: bytes = b"ping") -> bytes:
    echo = channel.unary_unary(f"/{SERVICE}/Echo")
    return await echo(payload)


async def test_unavailable_is_retried_and_the_call_carries_a_service_token():
    flaky = FlakyServer(failures=2)
    server, port = await flaky.start()
    tracing.begin("req-42", None)
    try:
        async with service_channel(
            f"127.0.0.1:{port}", SERVICE, callee="user", identity=JOURNEY
        ) as channel:
            assert await call(channel) == b"ping"
    finally:
        await server.stop(None)
    assert flaky.attempts == 3
    # Signed with the journey service's own key, for the user service only.
    token = flaky.metadata["authorization"].removeprefix("Bearer ")
    principal = ServiceIdentity.load("user", SETTINGS).verifier().verify(token)
    assert (principal.role, principal.subject) == (Role.SERVICE, "journey")
    with pytest.raises(Unauthenticated, match="not for this service"):
        ServiceIdentity.load("fare", SETTINGS).verifier().verify(token)
    assert flaky.metadata["x-request-id"] == "req-42"
    assert flaky.metadata["traceparent"].startswith("00-")


async def test_retries_give_up_after_the_policy_allows():
    flaky = FlakyServer(failures=100)
    server, port = await flaky.start()
    try:
        async with service_channel(
            f"127.0.0.1:{port}", SERVICE, callee="user", identity=JOURNEY
        ) as channel:
            with pytest.raises(aio.AioRpcError) as err:
                await call(channel)
    finally:
        await server.stop(None)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert flaky.attempts == 4  # maxAttempts of the retry policy


async def test_methods_outside_the_retry_list_are_not_retried():
    flaky = FlakyServer(failures=1)
    server, port = await flaky.start()
    try:
        async with service_channel(
            f"127.0.0.1:{port}", SERVICE, callee="user", identity=JOURNEY, retry_methods=["Other"]
        ) as channel:
            with pytest.raises(aio.AioRpcError):
                await call(channel)
    finally:
        await server.stop(None)
    assert flaky.attempts == 1


async def test_a_slow_dependency_hits_the_default_deadline():
    slow = FlakyServer(failures=0, delay=2.0)
    server, port = await slow.start()
    try:
        async with service_channel(
            f"127.0.0.1:{port}", SERVICE, callee="user", identity=JOURNEY, timeout_seconds=0.3
        ) as channel:
            started = time.monotonic()
            with pytest.raises(aio.AioRpcError) as err:
                await call(channel)
            elapsed = time.monotonic() - started
    finally:
        await server.stop(None)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 1.0


async def test_a_dependency_that_is_down_answers_unavailable_quickly():
    async with service_channel(
        "127.0.0.1:1", SERVICE, callee="user", identity=JOURNEY, timeout_seconds=1.0
    ) as channel:
        started = time.monotonic()
        with pytest.raises(aio.AioRpcError) as err:
            await call(channel)
    # Refused connections are retried until the deadline; either way the caller learns
    # within its deadline that the dependency is unavailable.
    assert is_unavailable(err.value)
    assert time.monotonic() - started < 1.5
