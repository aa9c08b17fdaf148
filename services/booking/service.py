"""Wiring of the booking service: what `tiket serve booking` runs."""

from __future__ import annotations

from pathlib import Path

from grpc import aio
from tiket.booking.v1 import booking_pb2, booking_pb2_grpc

from libs.clients import service_channel
from libs.db.migrations import Track
from libs.server.runtime import Resources, ServiceDefinition, Wiring
from services.booking import config, jobs
from services.booking.api import BookingApi
from services.booking.availability import Availability
from services.booking.bookings import BookingApp
from services.booking.catalogue import CatalogueApp
from services.booking.config import BookingConfig
from services.booking.reservations import ReservationApp
from services.booking.users import Users

TRACK = Track("booking", Path(__file__).parent / "migrations")
USER_SERVICE = "tiket.user.v1.UserService"


async def build(resources: Resources, booking_config: BookingConfig | None = None) -> Wiring:
    """`booking_config` defaults to TIKET_BOOKING_* (tests pass their own)."""
    settings = resources.settings
    booking_config = booking_config or config.load()
    users = service_channel(
        settings.addresses["user"],
        USER_SERVICE,
        callee="user",
        identity=resources.identity,
        timeout_seconds=booking_config.user_timeout,
    )
    availability = Availability(resources.pool, resources.cache)
    catalogue = CatalogueApp(resources.pool, availability)
    user_client = Users(users)
    reservations = ReservationApp(resources.pool, availability, user_client, booking_config)
    bookings = BookingApp(
        resources.pool, availability, user_client, booking_config, resources.identity
    )

    def register(server: aio.Server) -> None:
        booking_pb2_grpc.add_BookingServiceServicer_to_server(
            BookingApi(catalogue, reservations, bookings), server
        )

    sweeper = jobs.sweeper(reservations, bookings, settings.sweep_interval_seconds)
    return Wiring(register=register, background=[sweeper], close=users.close)


DEFINITION = ServiceDefinition(
    name="booking",
    services=[booking_pb2.DESCRIPTOR.services_by_name["BookingService"]],
    tracks=[TRACK],
    build=build,
)
