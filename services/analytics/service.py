"""Wiring of the analytics service: what `tiket serve analytics` runs."""

from __future__ import annotations

from pathlib import Path

from grpc import aio
from tiket.analytics.v1 import analytics_pb2, analytics_pb2_grpc

from libs.db.migrations import Track
from libs.events.consumer import StartsWhenReachable
from libs.server.runtime import Resources, ServiceDefinition, Wiring
from services.analytics import config, consumers, jobs
from services.analytics.api import AnalyticsApi
from services.analytics.app import AnalyticsApp
from services.analytics.config import AnalyticsConfig

TRACK = Track("analytics", Path(__file__).parent / "migrations")


async def build(resources: Resources, analytics_config: AnalyticsConfig | None = None) -> Wiring:
    """`analytics_config` defaults to TIKET_ANALYTICS_* (tests pass their own)."""
    settings = resources.settings
    app = AnalyticsApp(resources.pool, analytics_config or config.load())

    def register(server: aio.Server) -> None:
        analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server(AnalyticsApi(app), server)

    events = consumers.events_consumer(
        resources.pool, settings.amqp_url, settings.events_exchange, app
    )
    return Wiring(
        register=register, background=[jobs.partition_maker(app), StartsWhenReachable(events)]
    )


DEFINITION = ServiceDefinition(
    name="analytics",
    services=[analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"]],
    tracks=[TRACK],
    build=build,
)
