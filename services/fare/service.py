"""Wiring of the terminal & fare service: what `tiket serve fare` runs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from grpc import aio
from tiket.fare.v1 import fare_pb2, fare_pb2_grpc

from libs.config import duration_up_to, read_setting
from libs.db.migrations import Track
from libs.events.consumer import StartsWhenReachable
from libs.server.runtime import Resources, ServiceDefinition, Wiring
from services.fare import consumers, gtfs, jobs, store
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
    return read_setting(
        os.environ if env is None else env,
        OFFLINE_AFTER_VARIABLE,
        timedelta(seconds=DEFAULT_OFFLINE_AFTER),
        duration_up_to(timedelta(days=1)),
    )


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
    max_request_bytes=gtfs.MAX_UPLOAD_BYTES,
)
