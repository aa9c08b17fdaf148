"""Service-to-service channels (seed 001 §3.1): a service token and trace context on every
call, a deadline per dependency, at most two retries of UNAVAILABLE, and a circuit breaker
that fails fast while a dependency keeps failing. Real in-process servers; the breaker's
clock is a fake one, so no test waits for a cool-down."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc import aio
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY

from libs import tracing
from libs.auth import Role
from libs.auth.service_identity import ServiceIdentity
from libs.clients import CircuitBreaker, CircuitState, is_unavailable, service_channel
from libs.errors import Unauthenticated
from tests.support.settings import isolated_settings
from tests.support.traces import recording

SETTINGS = isolated_settings()
JOURNEY = ServiceIdentity.load("journey", SETTINGS)
SERVICE = "tiket.test.v1.Flaky"


class FlakyServer:
    """Fails its first `failures` calls with `code`, then echoes; records the metadata and
    deadline it saw. Clear `answering` to make calls hang until it is set again."""

    def __init__(self, failures: int = 0, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE):
        self.failures = failures
        self.code = code
        self.attempts = 0
        self.arrived = asyncio.Event()
        self.answering = asyncio.Event()
        self.answering.set()
        self.metadata: dict[str, str] = {}
        self.time_remaining: float | None = None
        self.port = 0

    async def _attempt(self, context: aio.ServicerContext) -> None:
        self.attempts += 1
        self.metadata = dict(context.invocation_metadata())
        self.time_remaining = context.time_remaining()
        self.arrived.set()
        if self.attempts <= self.failures:
            await context.abort(self.code, "warming up")
        await self.answering.wait()

    async def echo(self, request: bytes, context: aio.ServicerContext) -> bytes:
        await self._attempt(context)
        return request

    async def repeat(self, request: bytes, context: aio.ServicerContext):
        await self._attempt(context)
        for _ in range(3):
            yield request

    def healthy(self) -> None:
        """Answer every call from now on."""
        self.failures = self.attempts

    async def start(self) -> tuple[aio.Server, int]:
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Echo": grpc.unary_unary_rpc_method_handler(self.echo),
                "Repeat": grpc.unary_stream_rpc_method_handler(self.repeat),
            },
        )
        server = aio.server()
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port


class Clock:
    """The breaker's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def call(channel: aio.Channel, payload: bytes = b"ping") -> bytes:
    return await channel.unary_unary(f"/{SERVICE}/Echo")(payload)


async def failing_call(channel: aio.Channel) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as err:
        await call(channel)
    return err.value


def state(callee: str = "user") -> float | None:
    return REGISTRY.get_sample_value("tiket_circuit_state", {"caller": "journey", "callee": callee})


def refused(callee: str = "user") -> float:
    labels = {"caller": "journey", "callee": callee}
    return REGISTRY.get_sample_value("tiket_circuit_refused_total", labels) or 0.0


@pytest.fixture
async def flaky():
    server = FlakyServer()
    grpc_server, port = await server.start()
    server.port = port
    yield server
    server.answering.set()
    await grpc_server.stop(None)


def channel_to(flaky: FlakyServer, **options) -> aio.Channel:
    return service_channel(
        f"127.0.0.1:{flaky.port}", SERVICE, callee="user", identity=JOURNEY, **options
    )


async def test_unavailable_is_retried_and_the_call_carries_a_service_token(flaky):
    flaky.failures = 2
    tracing.begin("req-42", None)
    async with channel_to(flaky) as channel:
        assert await call(channel) == b"ping"
    assert flaky.attempts == 3
    # Signed with the journey service's own key, for the user service only.
    token = flaky.metadata["authorization"].removeprefix("Bearer ")
    principal = ServiceIdentity.load("user", SETTINGS).verifier().verify(token)
    assert (principal.role, principal.subject) == (Role.SERVICE, "journey")
    with pytest.raises(Unauthenticated, match="not for this service"):
        ServiceIdentity.load("fare", SETTINGS).verifier().verify(token)
    assert flaky.metadata["x-request-id"] == "req-42"
    assert flaky.metadata["traceparent"].startswith("00-")


async def test_with_tracing_on_a_call_is_a_client_span_whose_context_it_carries(flaky):
    with recording() as (provider, exporter):
        async with channel_to(flaky) as channel:
            with provider.get_tracer("tests").start_as_current_span("caller") as caller:
                assert await call(channel) == b"ping"
        spans = {span.name: span for span in exporter.get_finished_spans()}
    client = spans[f"{SERVICE}/Echo"]
    assert client.kind is SpanKind.CLIENT
    assert client.parent is not None
    assert client.parent.span_id == caller.get_span_context().span_id
    assert flaky.metadata["traceparent"] == tracing.traceparent_of(client)
    assert client.attributes is not None
    assert client.attributes["rpc.response.status_code"] == "OK"


async def test_at_most_two_retries(flaky):
    flaky.failures = 100
    async with channel_to(flaky) as channel:
        error = await failing_call(channel)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert flaky.attempts == 3  # maxAttempts of the retry policy: the call and two retries


async def test_methods_outside_the_retry_list_are_not_retried(flaky):
    flaky.failures = 1
    async with channel_to(flaky, retry_methods=["Other"]) as channel:
        await failing_call(channel)
    assert flaky.attempts == 1


# The server's view of the deadline, a little rounded up on the wire.
@pytest.mark.parametrize(("callee", "least", "most"), [("user", 0.0, 1.1), ("payment", 1.1, 3.1)])
async def test_each_dependency_has_its_default_deadline(flaky, callee, least, most):
    async with service_channel(
        f"127.0.0.1:{flaky.port}", SERVICE, callee=callee, identity=JOURNEY
    ) as channel:
        await call(channel)
    assert least < flaky.time_remaining <= most


async def test_a_slow_dependency_hits_the_deadline_and_is_not_retried(flaky):
    flaky.answering.clear()
    async with channel_to(flaky, timeout_seconds=0.3) as channel:
        error = await failing_call(channel)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert flaky.attempts == 1


async def test_a_dependency_that_is_down_answers_unavailable():
    async with service_channel(
        "127.0.0.1:1", SERVICE, callee="user", identity=JOURNEY, timeout_seconds=1.0
    ) as channel:
        error = await failing_call(channel)
    # Refused connections are retried until the deadline; either way the caller learns
    # that the dependency is unavailable.
    assert is_unavailable(error)


async def open_circuit(channel: aio.Channel, clock: Clock, flaky: FlakyServer) -> None:
    """Five failed calls within ten seconds (the last at the current time)."""
    flaky.failures = 1_000
    clock.now -= 8
    for _ in range(5):
        await failing_call(channel)
        clock.now += 2
    clock.now -= 2


async def probe_held_at_the_server(
    channel: aio.Channel, clock: Clock, breaker: CircuitBreaker, flaky: FlakyServer
) -> asyncio.Task:
    """Open the circuit, heal the server but have it hold its answers, let the cool-down
    pass and send the half-open probe: returned once the server holds it."""
    await open_circuit(channel, clock, flaky)
    flaky.healthy()
    flaky.answering.clear()
    flaky.arrived.clear()
    clock.now += breaker.cool_down
    probe = asyncio.create_task(call(channel))
    await flaky.arrived.wait()
    return probe


async def test_five_failures_in_ten_seconds_open_the_circuit_and_calls_fail_fast(flaky):
    clock = Clock()
    breaker = CircuitBreaker("journey", "user", clock=clock)
    async with channel_to(flaky, breaker=breaker) as channel:
        await open_circuit(channel, clock, flaky)
        assert flaky.attempts == 15  # each failed call was tried three times
        assert breaker.state is CircuitState.OPEN
        assert state() == 2
        before = refused()

        error = await failing_call(channel)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "circuit" in error.details()
        assert flaky.attempts == 15  # refused without reaching the dependency
        assert refused() == before + 1


async def test_failures_spread_over_more_than_ten_seconds_keep_it_closed(flaky):
    clock = Clock()
    breaker = CircuitBreaker("journey", "user", clock=clock)
    flaky.failures = 1_000
    async with channel_to(flaky, breaker=breaker) as channel:
        for _ in range(6):
            await failing_call(channel)
            clock.now += 3  # the oldest failure leaves the window as a new one comes
        assert breaker.state is CircuitState.CLOSED
        assert state() == 0
    assert flaky.attempts == 18


async def test_a_successful_probe_after_the_cool_down_closes_it(flaky):
    clock = Clock()
    breaker = CircuitBreaker("journey", "user", clock=clock)
    async with channel_to(flaky, breaker=breaker) as channel:
        await open_circuit(channel, clock, flaky)
        flaky.healthy()
        clock.now += breaker.cool_down - 0.1
        await failing_call(channel)  # still cooling down: refused
        clock.now += 0.1
        assert await call(channel) == b"ping"  # the probe
        assert breaker.state is CircuitState.CLOSED
        assert state() == 0
        assert [await call(channel) for _ in range(3)] == [b"ping"] * 3


async def test_a_failed_probe_opens_it_again(flaky):
    clock = Clock()
    breaker = CircuitBreaker("journey", "user", clock=clock)
    async with channel_to(flaky, breaker=breaker) as channel:
        await open_circuit(channel, clock, flaky)
        clock.now += breaker.cool_down
        await failing_call(channel)  # the probe, tried three times
        assert (flaky.attempts, breaker.state) == (18, CircuitState.OPEN)
        await failing_call(channel)
        assert flaky.attempts == 18  # refused again for a whole cool-down
        clock.now += breaker.cool_down
        flaky.healthy()
        assert await call(channel) == b"ping"


async def test_while_the_probe_is_out_every_other_call_fails_fast(flaky):
    clock = Clock()
    breaker = CircuitBreaker("journey", "user", clock=clock)
    async with channel_to(flaky, breaker=breaker) as channel:
        probe = await probe_held_at_the_server(channel, clock, breaker, flaky)
        assert breaker.state is CircuitState.HALF_OPEN
        assert state() == 1

        error = await failing_call(channel)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert flaky.attempts == 16  # only the probe reached the dependency
        flaky.answering.set()
        assert await probe == b"ping"
        assert breaker.state is CircuitState.CLOSED


async def test_business_refusals_are_answers_not_failures(flaky):
    flaky.failures, flaky.code = 1_000, grpc.StatusCode.FAILED_PRECONDITION
    breaker = CircuitBreaker("journey", "user", clock=Clock())
    async with channel_to(flaky, breaker=breaker) as channel:
        codes = [(await failing_call(channel)).code() for _ in range(10)]
    assert codes == [grpc.StatusCode.FAILED_PRECONDITION] * 10
    assert (flaky.attempts, breaker.state) == (10, CircuitState.CLOSED)


async def test_deadlines_exceeded_count_as_failures(flaky):
    flaky.answering.clear()
    breaker = CircuitBreaker("journey", "user", clock=Clock())
    async with channel_to(flaky, breaker=breaker, timeout_seconds=0.2) as channel:
        codes = [(await failing_call(channel)).code() for _ in range(6)]
    assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * 5 + [grpc.StatusCode.UNAVAILABLE]
    assert flaky.attempts == 5


async def test_a_deadline_the_caller_shortened_is_no_verdict_on_the_callee(flaky):
    """A gate's 300 ms passed on to the wallet call: running out of it is the gate's hurry,
    not the wallet failing; the circuit stays closed for calls that have their full time."""
    flaky.answering.clear()
    breaker = CircuitBreaker("journey", "user", clock=Clock())
    async with channel_to(flaky, breaker=breaker, timeout_seconds=5.0) as channel:
        echo = channel.unary_unary(f"/{SERVICE}/Echo")
        for _ in range(8):
            with pytest.raises(aio.AioRpcError) as err:
                await echo(b"ping", timeout=0.05)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert (flaky.attempts, breaker.state) == (8, CircuitState.CLOSED)


async def test_stream_calls_pass_through_the_breaker_too(flaky):
    breaker = CircuitBreaker("journey", "user", clock=Clock())
    async with channel_to(flaky, breaker=breaker) as channel:
        repeat = channel.unary_stream(f"/{SERVICE}/Repeat")
        assert [m async for m in repeat(b"x")] == [b"x"] * 3
        assert flaky.metadata["authorization"].startswith("Bearer ")
        assert 0 < flaky.time_remaining <= 1.1
        flaky.failures = 1_000
        for _ in range(5):
            with pytest.raises(aio.AioRpcError):
                _ = [m async for m in repeat(b"x")]
        assert breaker.state is CircuitState.OPEN
        attempts = flaky.attempts
        with pytest.raises(aio.AioRpcError) as err:
            _ = [m async for m in repeat(b"x")]
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert flaky.attempts == attempts


async def test_a_probe_its_caller_gave_up_on_makes_way_for_the_next(flaky):
    clock = Clock()
    breaker = CircuitBreaker("journey", "user", clock=clock)
    async with channel_to(flaky, breaker=breaker) as channel:
        probe = await probe_held_at_the_server(channel, clock, breaker, flaky)
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        assert breaker.state is CircuitState.HALF_OPEN  # no verdict
        flaky.answering.set()
        assert await call(channel) == b"ping"  # the next probe
        assert breaker.state is CircuitState.CLOSED
