"""Wiring of the user & wallet service: what `tiket serve user` runs."""

from __future__ import annotations

from pathlib import Path

from grpc import aio
from tiket.user.v1 import user_pb2, user_pb2_grpc

from libs.db.migrations import Track
from libs.server.runtime import Resources, ServiceDefinition, Wiring
from services.user import jobs, store
from services.user.api import UserApi
from services.user.app import UserApp

TRACK = Track("user", Path(__file__).parent / "migrations")


async def build(resources: Resources) -> Wiring:
    app = UserApp(resources.pool, resources.cache)

    def register(server: aio.Server) -> None:
        user_pb2_grpc.add_UserServiceServicer_to_server(UserApi(app), server)

    sweeper = jobs.hold_sweeper(app, resources.settings.sweep_interval_seconds)
    return Wiring(register=register, background=[sweeper])


DEFINITION = ServiceDefinition(
    name="user",
    services=[user_pb2.DESCRIPTOR.services_by_name["UserService"]],
    tracks=[TRACK],
    build=build,
    configure_connection=store.register_types,
)
