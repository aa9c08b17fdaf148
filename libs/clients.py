"""Channels for service-to-service calls, with seed 001 §3.1's dependency policy on every
call: a deadline per dependency, at most two retries of UNAVAILABLE with exponential
backoff and jitter (gRPC's own retry policy), and a circuit breaker that fails fast while
the dependency keeps failing. Each call also carries a token signed with the calling
service's own key for the callee's audience, and the current trace context."""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from enum import IntEnum
from functools import partial
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc import aio

from libs import tls, tracing
from libs.auth import Role
from libs.auth.service_identity import ServiceIdentity
from libs.auth.tokens import SERVICE_TOKEN_TTL_SECONDS, TokenSigner, audience
from libs.server.metrics import CIRCUIT_REFUSED, CIRCUIT_STATE

# Seed 001 §3.1: calls to the user and clinic services get 1,000 ms, to payment 3,000 ms;
# any other tiket service the same as user. Callers may pass their own.
DEPENDENCY_TIMEOUTS = {"user": 1.0, "clinic": 1.0, "payment": 3.0}
DEFAULT_TIMEOUT_SECONDS = 1.0
# What the breaker counts: the dependency did not answer. Any other status is an answer.
FAILURES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
Metadata = Sequence[tuple[str, str]]


def service_config(service: str, retry_methods: Sequence[str] | None) -> str:
    """gRPC service config retrying UNAVAILABLE for `retry_methods` of `service` (None =
    every method; each tiket mutating RPC is idempotent by key, so a retry never applies
    twice). maxAttempts 3 is the call and two retries; gRPC waits random(0, backoff) before
    each retry (gRFC A6), so the jitter is built in. Deadlines are not set here: grpcio
    applies a service-config timeout too early (grpc/grpc#40633), so the interceptor below
    puts one on each call instead."""
    names = (
        [{"service": service}]
        if retry_methods is None
        else [{"service": service, "method": m} for m in retry_methods]
    )
    retry = {
        "name": names,
        "retryPolicy": {
            "maxAttempts": 3,
            "initialBackoff": "0.05s",
            "maxBackoff": "0.5s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }
    return json.dumps({"methodConfig": [retry]})


class CircuitState(IntEnum):
    """The values of the tiket_circuit_state gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Opens after `failures` failed calls within `window` seconds; while open, calls fail
    fast with UNAVAILABLE. After `cool_down` seconds one probe call is let through (half
    open; the others still fail fast): its success closes the circuit, its failure opens
    it for another cool-down. A probe that gives no verdict (cancelled) or none within a
    cool-down makes way for the next. A failed call is one that failed after its retries.

    Written here rather than taken from aiobreaker 1.2.0 or purgatory 3.0.1: both count
    consecutive failures (reset by any success) instead of failures in a rolling window,
    read the wall clock with no way to inject one, and let every call through while half
    open, not one probe."""

    def __init__(
        self,
        caller: str,
        callee: str,
        *,
        failures: int = 5,
        window: float = 10.0,
        cool_down: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.callee = callee
        self.failures = failures
        self.window = window
        self.cool_down = cool_down
        self.clock = clock
        self.state = CircuitState.CLOSED
        self._failed_at: deque[float] = deque()
        self._opened_at = 0.0
        self._probe_since: float | None = None
        self._gauge = CIRCUIT_STATE.labels(caller, callee)
        self._refused = CIRCUIT_REFUSED.labels(caller, callee)
        self._gauge.set(self.state)

    def admit(self) -> bool:
        """Whether the call about to be made is the half-open probe; raises UNAVAILABLE
        (an AioRpcError, as the channel itself would) when the call may not be made."""
        now = self.clock()
        if self.state is CircuitState.OPEN and now - self._opened_at >= self.cool_down:
            self._move(CircuitState.HALF_OPEN)
        if self.state is CircuitState.CLOSED:
            return False
        if self.state is CircuitState.HALF_OPEN and (
            self._probe_since is None or now - self._probe_since >= self.cool_down
        ):
            self._probe_since = now
            return True
        self._refused.inc()
        raise aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE,
            aio.Metadata(),
            aio.Metadata(),
            details=f"{self.callee} keeps failing: its circuit is "
            f"{self.state.name.lower().replace('_', '-')} and calls fail fast until a probe "
            "call succeeds",
        )

    def record(self, code: grpc.StatusCode, probe: bool) -> None:
        """The outcome of a call admit() let through."""
        if code is grpc.StatusCode.CANCELLED:  # the caller gave up: no verdict
            if probe:
                self._probe_since = None
            return
        failed = code in FAILURES
        now = self.clock()
        if probe:
            self._probe_since = None
            if failed:
                self._open(now)
            else:
                self._move(CircuitState.CLOSED)
        elif failed and self.state is CircuitState.CLOSED:
            self._failed_at.append(now)
            while self._failed_at[0] <= now - self.window:
                self._failed_at.popleft()
            if len(self._failed_at) >= self.failures:
                self._open(now)

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._move(CircuitState.OPEN)

    def _move(self, state: CircuitState) -> None:
        self.state = state
        self._failed_at.clear()
        self._gauge.set(state)


class _Dependency:
    """What every call to one dependency gets: the default deadline, the calling service's
    token for the callee, the current traceparent and request id (with tracing on, a unary
    call gets a client span and carries its context instead), and the circuit breaker.

    A call given less time than the default (the caller's own deadline passed on: a gate
    waits 300 ms) that runs out of it says nothing of the callee, like a call its caller
    cancels: only a call that had the callee's whole deadline counts DEADLINE_EXCEEDED as a
    failure."""

    def __init__(
        self,
        breaker: CircuitBreaker,
        signer: TokenSigner,
        caller: str,
        callee: str,
        timeout_seconds: float,
    ) -> None:
        self.breaker = breaker
        self.signer = signer
        self.caller = caller
        self.audience = audience(callee)
        self.timeout_seconds = timeout_seconds
        self._token = ""
        self._token_expires = 0.0

    def _metadata(self, metadata: Metadata | None, traceparent: str | None) -> Metadata:
        now = time.time()
        if now > self._token_expires - 60:
            self._token = self.signer.mint(
                Role.SERVICE, self.caller, self.audience, SERVICE_TOKEN_TTL_SECONDS
            )
            self._token_expires = now + SERVICE_TOKEN_TTL_SECONDS
        sent = [*(metadata or ()), ("authorization", f"Bearer {self._token}")]
        if traceparent:
            sent.append(("traceparent", traceparent))
        if request_id := tracing.current_request_id():
            sent.append(("x-request-id", request_id))
        return sent

    def _verdict(self, code: grpc.StatusCode, timeout: float | None) -> grpc.StatusCode:
        shortened = timeout is not None and timeout < self.timeout_seconds
        if code is grpc.StatusCode.DEADLINE_EXCEEDED and shortened:
            return grpc.StatusCode.CANCELLED
        return code

    async def unary(
        self,
        inner: aio.UnaryUnaryMultiCallable,
        method: str,
        request: Message,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        **kwargs: Any,
    ) -> Any:
        probe = self.breaker.admit()
        span = None
        if tracing.enabled():
            service, _, name = method.lstrip("/").partition("/")
            span = tracing.client_span(
                method.lstrip("/"),
                {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            )
        traceparent = (
            tracing.current_traceparent() if span is None else tracing.traceparent_of(span)
        )
        code, error = grpc.StatusCode.CANCELLED, "cancelled"  # unless it ends otherwise
        try:
            response = await inner(
                request,
                timeout=self.timeout_seconds if timeout is None else timeout,
                metadata=self._metadata(metadata, traceparent),
                **kwargs,
            )
            code, error = grpc.StatusCode.OK, None
            return response
        except aio.AioRpcError as failed:
            code, error = failed.code(), failed.details() or failed.code().name
            raise
        finally:
            self.breaker.record(self._verdict(code, timeout), probe)
            if span is not None:
                tracing.end_span(span, code.name, error)

    async def stream(
        self,
        inner: aio.UnaryStreamMultiCallable,
        request: Message,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        # No span of its own: the stream passes on the current span's context.
        probe = self.breaker.admit()
        call = inner(
            request,
            timeout=self.timeout_seconds if timeout is None else timeout,
            metadata=self._metadata(metadata, tracing.current_traceparent()),
            **kwargs,
        )
        code = grpc.StatusCode.CANCELLED  # unless the stream ends, with or without error
        try:
            async for response in call:
                yield response
            code = grpc.StatusCode.OK
        except aio.AioRpcError as failed:
            code = failed.code()
            raise
        finally:
            call.cancel()  # a no-op once it ended; else the caller stopped reading
            self.breaker.record(self._verdict(code, timeout), probe)


class ServiceChannel:
    """A channel to a tiket dependency whose unary-unary and unary-stream calls go through
    `_Dependency`. Wrapping the stubs' method objects, not grpc.aio client interceptors:
    grpc.aio runs an interceptor chain in a task of its own per call, behind a call object
    of its own, which cost 0.3 ms of CPU per call in bench/taps.py. Everything else is the
    channel's (close, channel_ready, get_state …)."""

    def __init__(self, channel: aio.Channel, dependency: _Dependency) -> None:
        self._channel = channel
        self._dependency = dependency

    def unary_unary(self, method: str, *args, **kwargs) -> Callable[..., Awaitable[Any]]:
        """The method: call it with (request, timeout=, metadata=, …) and await the answer."""
        inner = self._channel.unary_unary(method, *args, **kwargs)
        return partial(self._dependency.unary, inner, method)

    def unary_stream(self, method: str, *args, **kwargs) -> Callable[..., AsyncIterator[Any]]:
        """The method: call it with (request, timeout=, metadata=, …) and iterate."""
        return partial(self._dependency.stream, self._channel.unary_stream(method, *args, **kwargs))

    def __getattr__(self, name: str):
        return getattr(self._channel, name)

    async def __aenter__(self) -> ServiceChannel:
        return self

    async def __aexit__(self, *_exc) -> None:
        await self._channel.close(None)


def service_channel(
    target: str,
    service: str,
    *,
    callee: str,
    identity: ServiceIdentity,
    timeout_seconds: float | None = None,
    retry_methods: Sequence[str] | None = None,
    breaker: CircuitBreaker | None = None,
) -> ServiceChannel:
    """A channel to `service` of the tiket service named `callee` at `target`, calling as
    the service `identity` is. Create it once and share it: channels multiplex calls and
    reconnect on their own, and the circuit breaker (default: 5 failures in 10 s, a 5 s
    cool-down) is the channel's. `timeout_seconds` is the deadline of a call that sets
    none, DEPENDENCY_TIMEOUTS[callee] by default. TLS when TIKET_TLS_CA is set
    (libs/tls.py): the callee must prove itself with a certificate of that CA, and this
    service's own certificate is its client certificate for callees requiring mutual TLS;
    `target`'s host name must be one the callee's certificate names."""
    if timeout_seconds is None:
        timeout_seconds = DEPENDENCY_TIMEOUTS.get(callee, DEFAULT_TIMEOUT_SECONDS)
    options = [
        ("grpc.service_config", service_config(service, retry_methods)),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]
    channel = tls.open_channel(target, tls.channel_credentials(identity.settings), options=options)
    dependency = _Dependency(
        breaker or CircuitBreaker(identity.name, callee),
        identity.signer(),
        identity.name,
        callee,
        timeout_seconds,
    )
    return ServiceChannel(channel, dependency)


def is_unavailable(error: grpc.RpcError) -> bool:
    return error.code() in FAILURES
