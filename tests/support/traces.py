"""Tracing on for one test: an OpenTelemetry SDK provider whose spans go to an in-memory
exporter, installed in libs.tracing and removed again afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from libs import tracing


@contextmanager
def recording() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield provider, exporter
    finally:
        tracing.install(None)
        provider.shutdown()


def ancestry(spans: list[ReadableSpan], last: ReadableSpan) -> list[ReadableSpan]:
    """`last` and its ancestors up to the root, root first."""
    by_id = {span.context.span_id: span for span in spans}
    found = [last]
    while found[-1].parent is not None:
        parent = by_id.get(found[-1].parent.span_id)
        assert parent is not None, f"the parent of {found[-1].name} was not exported"
        found.append(parent)
    return found[::-1]
