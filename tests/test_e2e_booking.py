"""End to end: real `tiket serve user` and `tiket serve booking` processes, driven with the real
grpcurl binary: reflection and health, then a clinic's slot reserved and confirmed by a rider
with a pet of the user service, and bad input reaching grpcurl as InvalidArgument."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from libs.config import load
from tests.support.cleanup import remove_run
from tests.support.processes import grpcurl, service_process
from tests.support.settings import MeshEnv, isolated_env

pytestmark = pytest.mark.e2e
BOOKING = "tiket.booking.v1.BookingService"
USER = "tiket.user.v1.UserService"
PRICE = 150_000


@pytest.fixture(scope="module")
def mesh() -> Iterator[MeshEnv]:
    env = isolated_env()
    settings = load(env)
    with contextlib.ExitStack() as stack:
        try:
            user = stack.enter_context(service_process("user", env))
            env = {**env, "TIKET_USER_ADDR": user.address}
            booking = stack.enter_context(service_process("booking", env))
            env["TIKET_BOOKING_ADDR"] = booking.address
            yield MeshEnv(env, load(env))
        finally:
            stack.close()
            asyncio.run(remove_run(settings, ["user", "booking"]))


def booking_call(mesh: MeshEnv, method: str, data: dict, token: str) -> dict:
    return grpcurl(mesh.address("booking"), f"{BOOKING}/{method}", token=token, data=data)


def test_reflection_and_health_show_the_booking_service(mesh):
    address = mesh.address("booking")
    assert BOOKING in grpcurl(address, "list").split()
    described = grpcurl(address, "describe", BOOKING)
    assert "rpc ReserveSlot ( .tiket.booking.v1.ReserveSlotRequest )" in described
    health = grpcurl(address, "grpc.health.v1.Health/Check", data={"service": BOOKING})
    assert health == {"status": "SERVING"}


def test_a_rider_reserves_and_confirms_a_slot_through_grpcurl(mesh):
    admin = mesh.token("admin", "e2e")
    clinic = booking_call(
        mesh,
        "CreateClinic",
        {"name": "Klinik Hewan Sehat", "address": "Jl. Sudirman 1", "request_id": "e2e-clinic"},
        admin,
    )
    assert (clinic["time_zone"], clinic["active"]) == ("Asia/Jakarta", True)
    service = booking_call(
        mesh,
        "CreateClinicService",
        {
            "clinic_id": clinic["clinic_id"],
            "name": "Vaksinasi",
            "duration_minutes": 30,
            "price": {"currency_code": "IDR", "units": PRICE},
        },
        admin,
    )
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)
    slot = booking_call(
        mesh,
        "CreateSlot",
        {
            "clinic_id": clinic["clinic_id"],
            "service_id": service["service_id"],
            "start_time": start.isoformat().replace("+00:00", "Z"),
        },
        admin,
    )
    assert (slot["status"], slot["remaining"], slot["price"]["units"]) == (
        "SLOT_STATUS_AVAILABLE",
        1,
        str(PRICE),
    )

    def user_call(method: str, data: dict) -> dict:
        return grpcurl(mesh.address("user"), f"{USER}/{method}", token=admin, data=data)

    rider = user_call("CreateUser", {"card_id": "BOOKE2E0001", "full_name": "Pemilik Milo"})
    pet = user_call("AddPet", {"user_id": rider["id"], "name": "Milo", "species": "cat"})
    as_rider = mesh.token("user", rider["id"])

    held = booking_call(
        mesh,
        "ReserveSlot",
        {
            "slot_id": slot["slot_id"],
            "user_id": rider["id"],
            "pet_id": pet["id"],
            "request_id": "e2e-reserve",
        },
        as_rider,
    )
    assert held["status"] == "RESERVATION_STATUS_PENDING"
    assert held["lock_token"]
    booking = booking_call(
        mesh,
        "ConfirmReservation",
        {
            "reservation_id": held["reservation_id"],
            "user_id": rider["id"],
            "lock_token": held["lock_token"],
            "notes": "Vaksin rabies",
        },
        as_rider,
    )
    assert booking["status"] == "BOOKING_STATUS_PENDING_PAYMENT"
    assert booking["final_amount"]["units"] == str(PRICE)
    assert booking["total_amount"]["units"] == str(PRICE)
    assert (booking["slot_id"], booking["pet_id"]) == (slot["slot_id"], pet["id"])

    seen = booking_call(
        mesh, "GetBooking", {"booking_id": booking["booking_id"], "user_id": rider["id"]}, as_rider
    )
    assert seen["booking_id"] == booking["booking_id"]
    assert seen["status"] == "BOOKING_STATUS_PENDING_PAYMENT"
    assert seen["final_amount"] == booking["final_amount"]
    full = booking_call(mesh, "GetSlot", {"slot_id": slot["slot_id"]}, admin)
    assert (full["status"], full.get("remaining", 0)) == ("SLOT_STATUS_BOOKED", 0)

    with psycopg.connect(mesh.settings.database_url("booking")) as conn:
        stored = conn.execute(
            "SELECT status, final_amount FROM bookings WHERE booking_id = %s",
            (booking["booking_id"],),
        ).fetchone()
    assert stored == ("pending_payment", PRICE)


def test_bad_input_reaches_grpcurl_as_invalid_argument_naming_the_field(mesh):
    admin = mesh.token("admin", "e2e")
    with pytest.raises(subprocess.CalledProcessError) as err:
        booking_call(
            mesh,
            "CreateSlot",
            {"clinic_id": "klinik-1", "service_id": "00000000-0000-4000-8000-000000000000"},
            admin,
        )
    assert "Code: InvalidArgument" in err.value.stderr
    assert '"field":"clinic_id"' in err.value.stderr.replace(" ", "")
    with pytest.raises(subprocess.CalledProcessError) as err:
        booking_call(mesh, "CreateClinic", {"name": ""}, admin)
    assert "Code: InvalidArgument" in err.value.stderr
    assert '"field":"name"' in err.value.stderr.replace(" ", "")
    with pytest.raises(subprocess.CalledProcessError) as err:
        booking_call(mesh, "CreateClinic", {"name": "Klinik"}, mesh.token("user", "x"))
    assert "Code: Unauthenticated" in err.value.stderr
