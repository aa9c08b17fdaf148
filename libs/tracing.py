"""Request ids and W3C trace context carried through a call in context variables, so logs,
outgoing calls and emitted events name the request that caused them; and OpenTelemetry
spans over them when tracing is on.

Tracing is on once `configure` found an OTLP endpoint (TIKET_OTLP_ENDPOINT, or the standard
OTEL_EXPORTER_OTLP_ENDPOINT) or a test installed a provider (`install`). Then each incoming
RPC is a SERVER span parented on the caller's `traceparent` (libs/server/interceptor.py),
each outgoing unary call a CLIENT span (libs/clients.py), each event the outbox relay
publishes a PRODUCER span parented on the traceparent stored with its outbox row, and each
event a consumer handles a CONSUMER span parented on the message's `traceparent` header
(libs/events), so one trace runs from a gate's tap through the services and RabbitMQ to the
consumers. The traceparent passed on is always the current span's.

Off (no endpoint: the default), no OpenTelemetry code runs on the hot path: a call's
traceparent is the caller's trace id with a fresh random span id, as before tracing
existed.

Sampling (seed 001 §7.2.2) is parent-based: a trace keeps the decision of its first span,
which samples TIKET_TRACE_SAMPLE_RATIO of the traces it starts (default 10 % when
TIKET_ENV=production, else 100 %). An unsampled call still passes its trace context on."""

from __future__ import annotations

import contextvars
import logging
import os
import random
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # OpenTelemetry is imported only once tracing is on
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, SpanKind, Tracer

    from libs.config import Settings

log = logging.getLogger(__name__)

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_traceparent: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "traceparent", default=None
)
TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
# gRPC codes a server span records as an error (OpenTelemetry's RPC conventions); a business
# refusal (FAILED_PRECONDITION, NOT_FOUND …) is an answer, not a failure of the server.
SERVER_ERRORS = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)

_tracer: Tracer | None = None
_provider: TracerProvider | None = None
_installed = False  # a provider given by install(): configure() leaves it alone


def new_traceparent(trace_id: str | None = None) -> str:
    """Ids from random.getrandbits, as OpenTelemetry's own generator: they need to be
    unique, not secret, and os.urandom costs a system call each (two per RPC)."""
    trace_id = trace_id or f"{random.getrandbits(128) or 1:032x}"
    return f"00-{trace_id}-{random.getrandbits(64) or 1:016x}-01"


def begin(request_id: str | None, traceparent: str | None) -> str:
    """Start the context of one incoming call without a span; return its request id."""
    if traceparent and TRACEPARENT.match(traceparent):
        # A new span id in the caller's trace.
        traceparent = new_traceparent(traceparent[3:35])
    else:
        traceparent = new_traceparent()
    rid = request_id if request_id and len(request_id) <= 128 else traceparent[36:52]
    _request_id.set(rid)
    _traceparent.set(traceparent)
    return rid


def current_request_id() -> str:
    return _request_id.get()


def current_traceparent() -> str | None:
    return _traceparent.get()


# --- OpenTelemetry ----------------------------------------------------------------------------


def enabled() -> bool:
    """Whether spans are made: read on every call, so keep it this cheap."""
    return _tracer is not None


def sample_ratio(settings: Settings) -> float:
    """TIKET_TRACE_SAMPLE_RATIO, else seed 001's 10 % in production and 100 % elsewhere."""
    if settings.trace_sample_ratio is not None:
        return settings.trace_sample_ratio
    return 0.1 if settings.env == "production" else 1.0


def otlp_endpoint(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return settings.otlp_endpoint or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")


def configure(service: str, settings: Settings) -> bool:
    """Turn tracing on for `service` when an OTLP endpoint is configured (once per process;
    a provider a test installed is kept). Whether tracing is on."""
    global _tracer, _provider
    if _installed or _tracer is not None:
        return _tracer is not None
    endpoint = otlp_endpoint(settings)
    if not endpoint:
        return False
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    ratio = sample_ratio(settings)
    resource = Resource.create(
        {"service.name": f"tiket-{service}", "deployment.environment.name": settings.env}
    )
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(ratio)))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    _provider, _tracer = provider, provider.get_tracer("tiket")
    log.info("tracing on", extra={"otlp_endpoint": endpoint, "sample_ratio": ratio})
    return True


def install(provider: TracerProvider | None) -> None:
    """Make spans with `provider` (tests: one with an in-memory exporter), or with none
    again (None): tracing off, whatever is configured."""
    global _tracer, _provider, _installed
    _provider, _installed = provider, provider is not None
    _tracer = provider.get_tracer("tiket") if provider is not None else None


def flush(timeout_seconds: float = 5.0) -> None:
    """Export the spans still buffered (a service stopping)."""
    if _provider is not None:
        _provider.force_flush(int(timeout_seconds * 1000))


def _parent(traceparent: str | None) -> Any:
    """The OpenTelemetry context whose span is the remote one `traceparent` names; an empty
    context (a new trace) when there is none or it is malformed."""
    from opentelemetry import context, trace

    if not traceparent or not TRACEPARENT.match(traceparent):
        return context.Context()
    parent = trace.SpanContext(
        trace_id=int(traceparent[3:35], 16),
        span_id=int(traceparent[36:52], 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(int(traceparent[53:55], 16)),
    )
    if not parent.is_valid:
        return context.Context()
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


def traceparent_of(span: Span) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def _kind(name: str) -> SpanKind:
    from opentelemetry.trace import SpanKind

    return SpanKind[name]


def begin_span(
    name: str,
    kind: str,
    request_id: str | None,
    traceparent: str | None,
    attributes: Mapping[str, Any] | None = None,
) -> tuple[str, Span]:
    """Like begin(), under a span (only when enabled()): start the `kind` (SERVER or
    CONSUMER) span `name`, parented on the remote `traceparent` (a new trace without one),
    make it the current span and its context the traceparent passed on; (request id, span).
    End it with end_span()."""
    from opentelemetry import context, trace

    assert _tracer is not None
    span = _tracer.start_span(name, _parent(traceparent), _kind(kind), attributes)
    context.attach(trace.set_span_in_context(span))
    traceparent = traceparent_of(span)
    rid = request_id if request_id and len(request_id) <= 128 else traceparent[36:52]
    if span.is_recording():
        span.set_attribute("tiket.request_id", rid)
    _request_id.set(rid)
    _traceparent.set(traceparent)
    return rid, span


def client_span(name: str, attributes: Mapping[str, Any] | None = None) -> Span:
    """A CLIENT span `name` (only when enabled()), child of the current span; not made
    current: pass its traceparent_of() on."""
    assert _tracer is not None
    return _tracer.start_span(name, None, _kind("CLIENT"), attributes)


def producer_span(
    name: str, traceparent: str | None, attributes: Mapping[str, Any] | None = None
) -> Span:
    """A PRODUCER span `name` (only when enabled()), child of the span `traceparent` names
    (of a new trace without one); not made current: pass its traceparent_of() on."""
    assert _tracer is not None
    return _tracer.start_span(name, _parent(traceparent), _kind("PRODUCER"), attributes)


def end_span(span: Span, code: str | None = None, error: str | None = None) -> None:
    """End a span begin_span(), client_span() or producer_span() started: `code` is the
    name of an RPC's gRPC status code; `error`, when given, marks the span failed, and so
    does a `code` a server fails with."""
    if span.is_recording():
        from opentelemetry.trace import Status, StatusCode

        if code is not None:
            span.set_attribute("rpc.response.status_code", code)
        if error is not None or code in SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, error or code))
    span.end()
