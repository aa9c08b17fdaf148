"""Wiring of the booking service: what `tiket serve booking` runs."""

from __future__ import annotations

from pathlib import Path

from grpc import aio
from tiket.booking.v1 import booking_pb2, booking_pb2_grpc, facility_pb2, facility_pb2_grpc

from libs.clients import service_channel
from libs.db.migrations import Track
from libs.server.runtime import Background, Resources, ServiceDefinition, Wiring
from services.booking import config, gauges, jobs, partitions, stats
from services.booking.api import BookingApi
from services.booking.availability import Availability
from services.booking.bookings import BookingApp
from services.booking.catalogue import CatalogueApp
from services.booking.config import BookingConfig
from services.booking.facilities.api import FacilityApi
from services.booking.facilities.app import FacilityApp
from services.booking.gateway import Midtrans
from services.booking.payments import Payments
from services.booking.reservations import ReservationApp
from services.booking.topups import TopUps
from services.booking.users import Users
from services.booking.webhook import HttpServer, Notifications

TRACK = Track("booking", Path(__file__).parent / "migrations")
USER_SERVICE = "tiket.user.v1.UserService"


async def build(resources: Resources, booking_config: BookingConfig | None = None) -> Wiring:
    """`booking_config` defaults to TIKET_BOOKING_* (tests pass their own)."""
    settings, pool = resources.settings, resources.pool
    booking_config = booking_config or config.load()
    channel = service_channel(
        settings.addresses["user"],
        USER_SERVICE,
        callee="user",
        identity=resources.identity,
        timeout_seconds=booking_config.user_timeout,
    )
    users = Users(channel)
    midtrans = gateway_of(booking_config)
    availability = Availability(pool, resources.cache)
    catalogue = CatalogueApp(pool, availability)
    reservations = ReservationApp(pool, availability, users, booking_config)
    payments = Payments(pool, users, midtrans, booking_config, resources.identity)
    bookings = BookingApp(pool, availability, payments, booking_config, resources.identity)
    top_ups = TopUps(pool, users, midtrans, booking_config)

    def register(server: aio.Server) -> None:
        booking_pb2_grpc.add_BookingServiceServicer_to_server(
            BookingApi(catalogue, reservations, bookings, payments, top_ups, pool), server
        )
        facility_pb2_grpc.add_FacilityServiceServicer_to_server(
            FacilityApi(FacilityApp(pool), settings.trusted_proxies), server
        )

    background: list[Background] = [
        jobs.sweeper(reservations, bookings, payments, top_ups, settings.sweep_interval_seconds),
        stats.refresher(pool),  # booking_analytics_daily, hourly (one replica at a time)
        partitions.keeper(pool),  # month partitions of the event store and history, daily
        gauges.refresher(pool),  # bookings by status, facility conflicts, every minute
    ]
    if midtrans is not None:
        notifications = Notifications(pool, midtrans, payments, top_ups)
        background.append(HttpServer(settings.host, booking_config.http_port, notifications.handle))

    async def close() -> None:
        await channel.close()
        if midtrans is not None:
            await midtrans.close()

    return Wiring(register=register, background=background, close=close)


def gateway_of(booking_config: BookingConfig) -> Midtrans | None:
    """The gateway client, when a server key is configured."""
    if not booking_config.midtrans_server_key:
        return None
    return Midtrans(
        booking_config.midtrans_snap_url,
        booking_config.midtrans_api_url,
        booking_config.midtrans_server_key,
        booking_config.gateway_timeout,
    )


DEFINITION = ServiceDefinition(
    name="booking",
    services=[
        booking_pb2.DESCRIPTOR.services_by_name["BookingService"],
        facility_pb2.DESCRIPTOR.services_by_name["FacilityService"],
    ],
    tracks=[TRACK],
    build=build,
)
