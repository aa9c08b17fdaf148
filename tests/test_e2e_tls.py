"""End to end: TLS without Istio. Real service processes with certificates made here (a test
CA; a second CA nobody trusts), reached with the real grpcurl binary and `tiket status`:

- fare serves TLS: grpcurl with -cacert lists it and health-checks it; without -cacert
  (unknown authority) or with -plaintext it is refused;
- user serves mutual TLS: only a client certificate of the CA gets in;
- journey, holding a certificate of the CA, calls fare (TLS) and user (mutual TLS) and a ride
  checks in through them; a journey with the CA but no certificate of its own is refused by
  the user service, and its CheckIn answers UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from libs.config import load
from tests.support.certs import KeyPair, Pki, make_pki
from tests.support.cleanup import remove_run
from tests.support.processes import grpcurl_path, service_process, tiket
from tests.support.settings import MeshEnv, isolated_env

pytestmark = pytest.mark.e2e
FARE = "tiket.fare.v1.FareService"
USER = "tiket.user.v1.UserService"
JOURNEY = "tiket.journey.v1.JourneyService"
HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"


@dataclass
class TlsMesh:
    pki: Pki
    mesh: MeshEnv
    # Addresses: fare (TLS), user (mutual TLS), journey (TLS, calls both with its
    # certificate), anonymous journey (plaintext, calls both with the CA but no certificate).
    fare: str
    user: str
    journey: str
    anonymous_journey: str

    def token(self, role: str, sub: str) -> str:
        return self.mesh.token(role, sub)


def credentials(pki: Pki, pair: KeyPair | None = None) -> grpc.ChannelCredentials:
    """Trusting the test CA; presenting `pair` as the client certificate when given."""
    return grpc.ssl_channel_credentials(
        pki.ca.path.read_bytes(),
        pair.key.read_bytes() if pair else None,
        pair.cert.read_bytes() if pair else None,
    )


@pytest.fixture(scope="module")
def tls_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsMesh]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    # Every process here verifies the services it calls with the test CA.
    env = isolated_env(TIKET_TLS_CA=str(pki.ca.path))
    serving = {**env, **pki.server.env()}
    try:
        with contextlib.ExitStack() as stack:
            fare = stack.enter_context(service_process("fare", serving, tls=credentials(pki)))
            user = stack.enter_context(
                service_process(
                    "user",
                    {**serving, "TIKET_TLS_CLIENT_CA": str(pki.ca.path)},
                    tls=credentials(pki, pki.client),
                )
            )
            addresses = {"TIKET_USER_ADDR": user.address, "TIKET_FARE_ADDR": fare.address}
            journey = stack.enter_context(
                service_process("journey", {**serving, **addresses}, tls=credentials(pki))
            )
            anonymous = stack.enter_context(service_process("journey", {**env, **addresses}))
            cli_env = {**env, **addresses, "TIKET_JOURNEY_ADDR": journey.address}
            seeded = tiket("seed", env={**cli_env, **pki.client.env()})
            assert "CARD0001" in seeded.stdout, seeded.stdout + seeded.stderr
            yield TlsMesh(
                pki,
                MeshEnv(cli_env, load(cli_env)),
                fare.address,
                user.address,
                journey.address,
                anonymous.address,
            )
    finally:
        asyncio.run(remove_run(load(env), ["user", "fare", "journey"]))


def grpcurl(
    address: str,
    *args: str,
    tls: list[str],
    token: str | None = None,
    data: object = None,
) -> subprocess.CompletedProcess[str]:
    """The real grpcurl with the TLS flags `tls` (-cacert …, -cert/-key …, -plaintext)."""
    command = [grpcurl_path(), *tls]
    if token:
        command += ["-H", f"authorization: Bearer {token}"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    command += [address, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def refused(done: subprocess.CompletedProcess[str]) -> str:
    """grpcurl could not get through: it says so and exits non-zero."""
    assert done.returncode != 0, done.stdout
    assert "Failed to dial target host" in done.stderr, done.stderr
    return done.stderr


def ca(mesh: TlsMesh) -> list[str]:
    return ["-cacert", str(mesh.pki.ca.path)]


def cert(pair: KeyPair) -> list[str]:
    return ["-cert", str(pair.cert), "-key", str(pair.key)]


# --- TLS ---------------------------------------------------------------------------------


def test_grpcurl_with_the_ca_lists_and_health_checks_a_tls_service(tls_mesh):
    listed = ok(grpcurl(tls_mesh.fare, "list", tls=ca(tls_mesh))).split()
    assert {FARE, HEALTH, REFLECTION} <= set(listed)
    described = ok(grpcurl(tls_mesh.fare, "describe", FARE, tls=ca(tls_mesh)))
    assert "rpc " in described
    health = ok(grpcurl(tls_mesh.fare, f"{HEALTH}/Check", tls=ca(tls_mesh), data={"service": FARE}))
    assert json.loads(health) == {"status": "SERVING"}


def test_grpcurl_without_the_ca_does_not_trust_a_tls_service(tls_mesh):
    assert "unknown authority" in refused(grpcurl(tls_mesh.fare, "list", tls=[]))
    other_ca = ["-cacert", str(tls_mesh.pki.other_ca.path)]
    assert "unknown authority" in refused(grpcurl(tls_mesh.fare, "list", tls=other_ca))


def test_grpcurl_plaintext_to_a_tls_port_fails(tls_mesh):
    refused(grpcurl(tls_mesh.fare, "list", tls=["-plaintext"]))


# --- mutual TLS -------------------------------------------------------------------------


def test_grpcurl_with_a_client_certificate_of_the_ca_reaches_an_mtls_service(tls_mesh):
    with_cert = [*ca(tls_mesh), *cert(tls_mesh.pki.client)]
    assert USER in ok(grpcurl(tls_mesh.user, "list", tls=with_cert)).split()
    health = ok(grpcurl(tls_mesh.user, f"{HEALTH}/Check", tls=with_cert, data={"service": USER}))
    assert json.loads(health) == {"status": "SERVING"}


def test_an_mtls_service_refuses_a_client_without_a_certificate(tls_mesh):
    refused(grpcurl(tls_mesh.user, "list", tls=ca(tls_mesh)))
    refused(grpcurl(tls_mesh.user, "list", tls=["-plaintext"]))


def test_an_mtls_service_refuses_a_client_certificate_of_another_ca(tls_mesh):
    refused(grpcurl(tls_mesh.user, "list", tls=[*ca(tls_mesh), *cert(tls_mesh.pki.stranger)]))


# --- a caller and its dependencies ----------------------------------------------------------


def tap(card: str, gate: str) -> dict[str, str]:
    return {"card_id": card, "terminal_code": "A", "gate_code": gate, "tap_id": str(uuid.uuid4())}


def test_journey_checks_in_through_tls_fare_and_mtls_user(tls_mesh):
    gate = tls_mesh.token("gate", "A/A-ENTRY-01")
    done = grpcurl(
        tls_mesh.journey,
        f"{JOURNEY}/CheckIn",
        tls=ca(tls_mesh),
        token=gate,
        data=tap("CARD0002", "A-ENTRY-01"),
    )
    entered = json.loads(ok(done))
    assert entered["open_gate"] is True
    assert entered["held_amount"]["units"] == "12000"

    # The hold lives in the user service: journey's PlaceHold crossed mutual TLS.
    with_cert = [*ca(tls_mesh), *cert(tls_mesh.pki.client)]
    admin = tls_mesh.token("admin", "e2e")

    def ask(method: str, data: dict[str, str]) -> dict:
        done = grpcurl(tls_mesh.user, f"{USER}/{method}", tls=with_cert, token=admin, data=data)
        return json.loads(ok(done))

    rider = ask("GetUser", {"card_id": "CARD0002"})
    assert ask("GetWallet", {"user_id": rider["id"]})["held"]["units"] == "12000"


def test_a_caller_without_a_client_certificate_answers_unavailable(tls_mesh):
    gate = tls_mesh.token("gate", "A/A-ENTRY-01")
    done = grpcurl(
        tls_mesh.anonymous_journey,
        f"{JOURNEY}/CheckIn",
        tls=["-plaintext"],  # this journey has no certificate, so it serves plaintext
        token=gate,
        data=tap("CARD0003", "A-ENTRY-01"),
    )
    assert done.returncode != 0, done.stdout
    assert "Code: Unavailable" in done.stderr, done.stderr
    assert "user service" in done.stderr, done.stderr


# --- tiket status and a bad certificate -------------------------------------------------


def status_rows(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """service -> health, from `tiket status`'s table."""
    rows = {}
    for line in done.stdout.splitlines():
        cells = line.split()
        if len(cells) == 3 and cells[0] in ("user", "fare", "journey"):
            rows[cells[0]] = cells[2]
    return rows


def test_tiket_status_checks_tls_services_with_the_ca_and_a_client_certificate(tls_mesh):
    env = {**tls_mesh.mesh.env, **tls_mesh.pki.client.env()}
    rows = status_rows(tiket("status", env=env))
    assert rows == {"user": "SERVING", "fare": "SERVING", "journey": "SERVING"}
    # Without a client certificate the mutual-TLS user service does not answer it.
    rows = status_rows(tiket("status", env=tls_mesh.mesh.env))
    assert rows == {"user": "DOWN", "fare": "SERVING", "journey": "SERVING"}


def test_a_service_whose_key_cannot_be_read_does_not_start_and_names_the_variable(
    tls_mesh, tmp_path: Path
):
    env = {
        **tls_mesh.mesh.env,
        **tls_mesh.pki.server.env(),
        "TIKET_TLS_KEY": str(tmp_path / "missing.key"),
    }
    done = tiket("serve", "fare", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"TIKET_TLS_KEY={tmp_path / 'missing.key'}: cannot read it" in done.stderr
