"""Wiring of the journey service: what `tiket serve journey` runs."""

from __future__ import annotations

from pathlib import Path

from grpc import aio
from tiket.journey.v1 import journey_pb2, journey_pb2_grpc

from libs.auth.service_identity import ServiceIdentity
from libs.clients import service_channel
from libs.config import Settings
from libs.db.migrations import Track
from libs.server.runtime import Resources, ServiceDefinition, Wiring
from services.journey import config, jobs, store
from services.journey.api import JourneyApi
from services.journey.app import JourneyApp
from services.journey.config import JourneyConfig

TRACK = Track("journey", Path(__file__).parent / "migrations")
USER_SERVICE = "tiket.user.v1.UserService"
FARE_SERVICE = "tiket.fare.v1.FareService"


async def build(resources: Resources, journey_config: JourneyConfig | None = None) -> Wiring:
    """`journey_config` defaults to TIKET_JOURNEY_* (tests pass their own)."""
    settings = resources.settings
    journey_config = journey_config or config.load()
    channels = dependency_channels(settings, resources.identity, journey_config)
    app = JourneyApp(resources.pool, resources.cache, journey_config, *channels)

    def register(server: aio.Server) -> None:
        journey_pb2_grpc.add_JourneyServiceServicer_to_server(
            JourneyApi(app, journey_config), server
        )

    async def close() -> None:
        for channel in channels:
            await channel.close()

    sweeper = jobs.sweeper(app, settings.sweep_interval_seconds)
    return Wiring(register=register, background=[sweeper], close=close)


def dependency_channels(
    settings: Settings, identity: ServiceIdentity, journey_config: JourneyConfig
) -> list[aio.Channel]:
    """[user, fare]: one long-lived channel per dependency, shared by every call."""
    return [
        service_channel(
            settings.addresses[name],
            service,
            callee=name,
            identity=identity,
            timeout_seconds=journey_config.dependency_timeout,
        )
        for name, service in (("user", USER_SERVICE), ("fare", FARE_SERVICE))
    ]


DEFINITION = ServiceDefinition(
    name="journey",
    services=[journey_pb2.DESCRIPTOR.services_by_name["JourneyService"]],
    tracks=[TRACK],
    build=build,
    configure_connection=store.register_types,
)
