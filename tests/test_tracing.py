"""One trace across gRPC and RabbitMQ (issue 17 "Tracing"): a gate's tap → the journey
service → the user service → the user service's outbox relay → a consumer (analytics: the
notification service is not bound to a ride's hold events), and the journey's own event →
the notification service's consumer, every hop a span of the same trace, each the child of
the one before. The real user, fare, journey, notification and analytics services run in
this process with an OpenTelemetry SDK provider whose spans go to an in-memory exporter. On
the way, the business counters of the tap and of the event."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY

from libs import tracing
from libs.auth import Role
from libs.db.database import drop_database
from libs.server.runtime import ServiceRuntime
from services.analytics import consumers as analytics_consumers
from services.analytics.service import DEFINITION as ANALYTICS
from services.journey.tests.mesh import new_rider, running_mesh, tap_request
from services.notification import consumers as notification_consumers
from services.notification.service import DEFINITION as NOTIFICATION
from services.notification.tests.stack import consumer_ready
from tests.support.traces import ancestry, recording
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)
USER = "tiket.user.v1.UserService"
JOURNEY = "tiket.journey.v1.JourneyService"


@pytest.fixture
def provider() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    with recording() as recorded:
        yield recorded


async def test_one_trace_from_a_gate_tap_to_the_events_consumers(provider) -> None:
    sdk, exporter = provider
    async with running_mesh() as mesh:
        exchange = mesh.settings.events_exchange
        notification = ServiceRuntime(NOTIFICATION, mesh.settings)
        analytics = ServiceRuntime(ANALYTICS, mesh.settings)
        try:
            await notification.start()
            await analytics.start()
            await consumer_ready(mesh.settings)
            await consumer_ready(mesh.settings, name=analytics_consumers.queue_name(exchange))
            _, card = await new_rider(mesh)
            exporter.clear()
            accepted = {"kind": "checkin", "outcome": "accepted"}
            taps_before = REGISTRY.get_sample_value("tiket_taps_total", accepted) or 0.0

            with sdk.get_tracer("gate").start_as_current_span("gate tap") as tap:
                metadata = [
                    *mesh.metadata(Role.GATE, "A/A-ENTRY-01"),
                    ("traceparent", tracing.traceparent_of(tap)),
                ]
                request = tap_request("in", card, "A", "A-ENTRY-01")
                await mesh.journeys.CheckIn(request, metadata=metadata, timeout=10)
            trace_id = tap.get_span_context().trace_id

            def consumed(event_type: str, queue: str) -> ReadableSpan | None:
                for span in exporter.get_finished_spans():
                    if (
                        span.context.trace_id == trace_id
                        and span.name == event_type + " process"
                        and (span.attributes or {}).get("messaging.consumer.group.name") == queue
                    ):
                        return span
                return None

            by_analytics = analytics_consumers.queue_name(exchange)
            by_notification = notification_consumers.queue_name(exchange)
            await wait_until(
                lambda: (
                    consumed("wallet.hold_placed", by_analytics)
                    and consumed("journey.checked_in", by_notification)
                ),
                "the consumers' spans of the tap's events",
                within=20,
            )
        finally:
            await analytics.stop()
            await notification.stop()
            for name in ("analytics", "notification"):
                await asyncio.to_thread(drop_database, mesh.database_url(name))

    # The business counters saw the tap and the event published.
    assert REGISTRY.get_sample_value("tiket_taps_total", accepted) == taps_before + 1
    published = {"event_type": "wallet.hold_placed"}
    assert (REGISTRY.get_sample_value("tiket_outbox_events_total", published) or 0) >= 1

    spans = list(exporter.get_finished_spans())
    wallet_event = ancestry(spans, consumed("wallet.hold_placed", by_analytics))
    assert {span.context.trace_id for span in wallet_event} == {trace_id}
    assert [(span.name, span.kind) for span in wallet_event] == [
        ("gate tap", SpanKind.INTERNAL),
        (f"{JOURNEY}/CheckIn", SpanKind.SERVER),
        (f"{USER}/PlaceHold", SpanKind.CLIENT),
        (f"{USER}/PlaceHold", SpanKind.SERVER),
        ("wallet.hold_placed publish", SpanKind.PRODUCER),
        ("wallet.hold_placed process", SpanKind.CONSUMER),
    ]
    # The journey service's own event: its relay's publish, child of the CheckIn.
    journey_event = ancestry(spans, consumed("journey.checked_in", by_notification))
    assert [(span.name, span.kind) for span in journey_event] == [
        ("gate tap", SpanKind.INTERNAL),
        (f"{JOURNEY}/CheckIn", SpanKind.SERVER),
        ("journey.checked_in publish", SpanKind.PRODUCER),
        ("journey.checked_in process", SpanKind.CONSUMER),
    ]
    checkin = journey_event[1]
    assert checkin.attributes is not None
    assert checkin.attributes["rpc.response.status_code"] == "OK"
    assert checkin.attributes["rpc.service"] == JOURNEY
