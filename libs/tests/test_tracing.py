"""libs.tracing: off (the default) no span is made and the trace context still travels;
configured, parent-based ratio sampling and the service's name; server spans made by the
interceptor and client spans by service channels, each parented on what it was given; the
trace id in JSON log lines."""

from __future__ import annotations

import contextlib
import logging

import orjson
import pytest
from grpc import aio
from opentelemetry.trace import SpanKind, StatusCode

from libs import jsonlog, tracing
from libs.auth.service_identity import ServiceIdentity
from libs.config import ConfigError, load
from libs.errors import FailedPrecondition
from libs.server.access import Policy
from libs.server.interceptor import ServiceInterceptor
from tests.support.fake_service import SERVICE, Request, Response, serving
from tests.support.settings import isolated_env, isolated_settings
from tests.support.traces import recording

pytestmark = pytest.mark.timeout(30)
SETTINGS = isolated_settings()
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_off_without_an_endpoint(monkeypatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert not tracing.configure("journey", SETTINGS)
    assert not tracing.enabled()
    # The caller's trace goes on under a new span id.
    assert tracing.begin("req-1", PARENT) == "req-1"
    passed_on = tracing.current_traceparent()
    assert passed_on is not None and passed_on[3:35] == PARENT[3:35]
    assert passed_on[36:52] != PARENT[36:52]


def test_sampling_defaults_to_seed_001() -> None:
    assert tracing.sample_ratio(load(isolated_env(TIKET_ENV="production"))) == 0.1
    assert tracing.sample_ratio(load(isolated_env(TIKET_ENV="development"))) == 1.0
    explicit = load(isolated_env(TIKET_ENV="production", TIKET_TRACE_SAMPLE_RATIO="1"))
    assert tracing.sample_ratio(explicit) == 1.0
    with pytest.raises(ConfigError, match="TIKET_TRACE_SAMPLE_RATIO"):
        load(isolated_env(TIKET_TRACE_SAMPLE_RATIO="1.5"))


def test_an_endpoint_turns_on_parent_based_ratio_sampling() -> None:
    settings = load(
        isolated_env(TIKET_OTLP_ENDPOINT="http://127.0.0.1:4317", TIKET_TRACE_SAMPLE_RATIO="0.25")
    )
    try:
        assert tracing.configure("journey", settings)
        assert tracing.enabled()
        provider = tracing._provider
        assert provider is not None
        assert provider.resource.attributes["service.name"] == "tiket-journey"
        description = provider.sampler.get_description()
        assert description.startswith("ParentBased") and "0.25" in description
    finally:
        tracing.install(None)
        if provider is not None:
            provider.shutdown()


def test_json_log_lines_name_the_trace_and_the_request() -> None:
    tracing.begin("req-7", PARENT)
    record = logging.makeLogRecord({"msg": "hello", "levelname": "INFO", "name": "t"})
    line = orjson.loads(jsonlog.JsonFormatter("journey").format(record))
    assert line["request_id"] == "req-7"
    assert line["trace_id"] == PARENT[3:35]
    assert line["span_id"] == tracing.current_traceparent()[36:52]


async def ok(request, context):
    return Response(user_id=request.user_id)


async def refused(request, context):
    raise FailedPrecondition("INSUFFICIENT_BALANCE", "insufficient balance")


async def crash(request, context):
    raise RuntimeError("boom")


async def test_the_interceptor_makes_a_server_span_per_call() -> None:
    public = Policy(frozenset(), frozenset(), "", public=True)
    policies = {f"/{SERVICE}/{name}": public for name in ("Ok", "Refused", "Crash")}
    interceptor = ServiceInterceptor(policies, ServiceIdentity.load("user", SETTINGS).verifier())
    units = {"Ok": ok, "Refused": refused, "Crash": crash}
    with recording() as (_, exporter):
        async with serving(interceptor, units) as channel:
            for name in units:
                stub = channel.unary_unary(
                    f"/{SERVICE}/{name}",
                    request_serializer=Request.SerializeToString,
                    response_deserializer=Response.FromString,
                )
                metadata = [("traceparent", PARENT), ("x-request-id", f"req-{name}")]
                with contextlib.suppress(aio.AioRpcError):
                    await stub(Request(user_id="u1"), metadata=metadata)
        spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {f"{SERVICE}/{name}" for name in units}
    for name, span in spans.items():
        assert span.kind is SpanKind.SERVER
        assert span.context.trace_id == int(PARENT[3:35], 16)
        assert span.parent is not None and span.parent.span_id == int(PARENT[36:52], 16)
        assert span.attributes["tiket.request_id"] == "req-" + name.rpartition("/")[2]
    # A business refusal is an answer; a crash is the server failing.
    assert spans[f"{SERVICE}/Ok"].status.status_code is StatusCode.UNSET
    refusal = spans[f"{SERVICE}/Refused"]
    assert refusal.status.status_code is StatusCode.UNSET
    assert refusal.attributes["rpc.response.status_code"] == "FAILED_PRECONDITION"
    assert spans[f"{SERVICE}/Crash"].status.status_code is StatusCode.ERROR
