"""End to end: real `tiket serve user|fare|journey` processes seeded by `tiket seed`, a ride
tapped through the real grpcurl binary with gate tokens, and `tiket demo ride`."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from libs.config import load
from tests.support.cleanup import remove_run
from tests.support.processes import grpcurl, service_process, tiket
from tests.support.settings import MeshEnv, isolated_env

pytestmark = pytest.mark.e2e
JOURNEY = "tiket.journey.v1.JourneyService"
USER = "tiket.user.v1.UserService"


@pytest.fixture(scope="module")
def mesh() -> Iterator[MeshEnv]:
    env = isolated_env()
    settings = load(env)
    with contextlib.ExitStack() as stack:
        user = stack.enter_context(service_process("user", env))
        fare = stack.enter_context(service_process("fare", env))
        env = {**env, "TIKET_USER_ADDR": user.address, "TIKET_FARE_ADDR": fare.address}
        journey = stack.enter_context(service_process("journey", env))
        env["TIKET_JOURNEY_ADDR"] = journey.address
        seeded = tiket("seed", env=env)
        assert "CARD0001" in seeded.stdout, seeded.stdout + seeded.stderr
        try:
            yield MeshEnv(env, load(env))
        finally:
            stack.close()
            asyncio.run(remove_run(settings, ["user", "fare", "journey"]))


def tap_data(card: str, terminal: str, gate: str) -> dict[str, str]:
    return {
        "card_id": card,
        "terminal_code": terminal,
        "gate_code": gate,
        "tap_id": str(uuid.uuid4()),
    }


def test_reflection_describes_the_journey_service(mesh):
    address = mesh.address("journey")
    assert JOURNEY in grpcurl(address, "list").split()
    described = grpcurl(address, "describe", JOURNEY)
    assert "rpc CheckIn ( .tiket.journey.v1.CheckInRequest )" in described


def test_a_ride_a_to_e_through_grpcurl_costs_12000_and_leaves_no_hold(mesh):
    admin = mesh.token("admin", "e2e")
    rider = grpcurl(
        mesh.address("user"), f"{USER}/GetUser", token=admin, data={"card_id": "CARD0002"}
    )
    before = grpcurl(
        mesh.address("user"), f"{USER}/GetWallet", token=admin, data={"user_id": rider["id"]}
    )

    def tap(method: str, terminal: str, gate: str) -> dict:
        data = tap_data("CARD0002", terminal, gate)
        token = mesh.token("gate", f"{terminal}/{gate}")
        return grpcurl(mesh.address("journey"), f"{JOURNEY}/{method}", token=token, data=data)

    entered = tap("CheckIn", "A", "A-ENTRY-01")
    assert entered["open_gate"] is True
    assert entered["held_amount"]["units"] == "12000"
    left = tap("CheckOut", "E", "E-EXIT-01")
    assert left["journey"]["status"] == "JOURNEY_STATUS_COMPLETED"
    assert left["fare"]["units"] == "12000"

    after = grpcurl(
        mesh.address("user"), f"{USER}/GetWallet", token=admin, data={"user_id": rider["id"]}
    )
    assert int(before["balance"]["units"]) - int(after["balance"]["units"]) == 12_000
    assert "units" not in after["held"]  # zero: no hold left
    with psycopg.connect(mesh.settings.database_url("user")) as conn:
        held = conn.execute(
            "SELECT count(*) FROM holds WHERE user_id = %s AND status = 'held'", (rider["id"],)
        ).fetchone()
    assert held == (0,)


def test_an_exit_gate_used_for_entry_reaches_grpcurl_as_failed_precondition(mesh):
    with pytest.raises(subprocess.CalledProcessError) as err:
        grpcurl(
            mesh.address("journey"),
            f"{JOURNEY}/CheckIn",
            token=mesh.token("gate", "A/A-EXIT-01"),
            data=tap_data("CARD0003", "A", "A-EXIT-01"),
        )
    assert "Code: FailedPrecondition" in err.value.stderr
    assert "WRONG_GATE_TYPE" in err.value.stderr


def test_tiket_demo_ride_prints_each_step_and_the_balances(mesh):
    done = tiket("demo", "ride", env=mesh.env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "John Doe (CARD0001)" in out
    assert "1. tap in  at A-ENTRY-01" in out and "3. tap out at E-EXIT-01" in out
    assert "Perjalanan selesai dari Terminal Utara ke Terminal Pusat. Tarif: Rp 12.000." in out
    assert "difference -Rp 12.000" in out
