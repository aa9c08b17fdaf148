"""Wiring of the terminal & fare service: what `tiket serve fare` runs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from grpc import aio
from tiket.fare.v1 import fare_pb2, fare_pb2_grpc

from libs.config import ConfigError
from libs.db.migrations import Track
from libs.events.consumer import StartsWhenReachable
from libs.server.runtime import Resources, ServiceDefinition, Wiring
from services.fare import consumers, jobs, store
from services.fare.api import FareApi
from services.fare.app import FareApp
from services.fare.cache import FareCache
from services.fare.importer import GtfsImporter
from services.fare.terminals import TerminalApp

TRACK = Track("fare", Path(__file__).parent / "migrations")
OFFLINE_AFTER_VARIABLE = "TIKET_GATE_OFFLINE_AFTER_SECONDS"
DEFAULT_OFFLINE_AFTER = 90.0  # three missed heartbeats of a gate beating every 30 s


def gate_offline_after(env: Mapping[str, str] | None = None) -> timedelta:
    """How long an online gate may stay silent before it is shown offline."""
    env = os.environ if env is None else env
    raw = env.get(OFFLINE_AFTER_VARIABLE, "")
    if not raw:
        return timedelta(seconds=DEFAULT_OFFLINE_AFTER)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 86_400:
        raise ConfigError(
            f"{OFFLINE_AFTER_VARIABLE}={raw!r} is invalid: expected seconds, more than 0 and "
            "at most 86400"
        )
    return timedelta(seconds=seconds)


async def build(resources: Resources) -> Wiring:
    settings = resources.settings
    cache = FareCache(resources.cache)
    terminals = TerminalApp(resources.pool, gate_offline_after())
    fares = FareApp(resources.pool, cache)

    def register(server: aio.Server) -> None:
        api = FareApi(terminals, fares, GtfsImporter(resources.pool, cache))
        fare_pb2_grpc.add_FareServiceServicer_to_server(api, server)

    invalidation = consumers.cache_invalidation(
        resources.pool, settings.amqp_url, settings.events_exchange, cache
    )
    return Wiring(
        register=register,
        background=[
            cache,
            StartsWhenReachable(invalidation),
            jobs.silent_gate_sweeper(terminals, settings.sweep_interval_seconds),
        ],
    )


DEFINITION = ServiceDefinition(
    name="fare",
    services=[fare_pb2.DESCRIPTOR.services_by_name["FareService"]],
    tracks=[TRACK],
    build=build,
    configure_connection=store.register_types,
)
