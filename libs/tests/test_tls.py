"""libs/tls.py: credentials from the TIKET_TLS_* files, checked with clear errors, and what a
TLS or mutual-TLS server built from them lets in (an in-process server on loopback)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from libs import tls
from libs.config import ConfigError, load
from tests.support.certs import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def server_env(pki: Pki, *, mutual: bool) -> dict[str, str]:
    env = pki.server.env()
    if mutual:
        env["TIKET_TLS_CLIENT_CA"] = str(pki.ca.path)
    return env


async def serve(env: dict[str, str]) -> tuple[aio.Server, str]:
    server = aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
    port = server.add_secure_port("127.0.0.1:0", tls.server_credentials(load(env)))
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def tls_server(pki: Pki) -> AsyncIterator[str]:
    server, address = await serve(server_env(pki, mutual=False))
    yield address
    await server.stop(None)


@pytest.fixture
async def mtls_server(pki: Pki) -> AsyncIterator[str]:
    server, address = await serve(server_env(pki, mutual=True))
    yield address
    await server.stop(None)


async def health(address: str, client_env: dict[str, str] | None) -> grpc.StatusCode:
    """OK when a health check through a channel made from `client_env` (None: plaintext)
    is answered SERVING, else the call's status code."""
    credentials = tls.channel_credentials(load(client_env)) if client_env is not None else None
    async with tls.open_channel(address, credentials) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=20
            )
        except grpc.RpcError as error:
            return error.code()
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    return grpc.StatusCode.OK


# --- what gets in -------------------------------------------------------------------------


async def test_tls_server_answers_a_client_trusting_its_ca(pki, tls_server):
    assert await health(tls_server, {"TIKET_TLS_CA": str(pki.ca.path)}) == grpc.StatusCode.OK


async def test_tls_server_refuses_plaintext_and_clients_trusting_another_ca(pki, tls_server):
    assert await health(tls_server, None) == grpc.StatusCode.UNAVAILABLE
    other = {"TIKET_TLS_CA": str(pki.other_ca.path)}
    assert await health(tls_server, other) == grpc.StatusCode.UNAVAILABLE


async def test_mtls_server_answers_a_client_certificate_of_its_client_ca(pki, mtls_server):
    env = {"TIKET_TLS_CA": str(pki.ca.path), **pki.client.env()}
    assert await health(mtls_server, env) == grpc.StatusCode.OK


async def test_mtls_server_refuses_no_client_certificate_or_one_of_another_ca(pki, mtls_server):
    anonymous = {"TIKET_TLS_CA": str(pki.ca.path)}
    assert await health(mtls_server, anonymous) == grpc.StatusCode.UNAVAILABLE
    stranger = {"TIKET_TLS_CA": str(pki.ca.path), **pki.stranger.env()}
    assert await health(mtls_server, stranger) == grpc.StatusCode.UNAVAILABLE
    assert await health(mtls_server, None) == grpc.StatusCode.UNAVAILABLE


def test_no_tls_ca_means_plaintext_channels():
    assert tls.channel_credentials(load({})) is None


# --- clear errors --------------------------------------------------------------------------


def test_a_missing_certificate_names_the_variable_and_the_file(pki, tmp_path):
    missing = tmp_path / "nowhere.pem"
    env = {**pki.server.env(), "TIKET_TLS_CERT": str(missing)}
    with pytest.raises(tls.TlsError, match=f"TIKET_TLS_CERT={missing}: cannot read it"):
        tls.server_credentials(load(env))


def test_a_missing_key_names_its_variable(pki, tmp_path):
    env = {**pki.server.env(), "TIKET_TLS_KEY": str(tmp_path / "nowhere.key")}
    with pytest.raises(tls.TlsError, match=r"TIKET_TLS_KEY=.*cannot read it"):
        tls.server_credentials(load(env))


def test_a_missing_ca_bundle_names_its_variable(pki, tmp_path):
    with pytest.raises(tls.TlsError, match=r"TIKET_TLS_CA=.*cannot read it"):
        tls.channel_credentials(load({"TIKET_TLS_CA": str(tmp_path / "ca.pem")}))
    env = {**server_env(pki, mutual=True), "TIKET_TLS_CLIENT_CA": str(tmp_path / "ca.pem")}
    with pytest.raises(tls.TlsError, match=r"TIKET_TLS_CLIENT_CA=.*cannot read it"):
        tls.server_credentials(load(env))


def test_a_file_without_a_certificate_is_refused(pki, tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(tls.TlsError, match=r"TIKET_TLS_CERT=.*no PEM certificate"):
        tls.server_credentials(load({**pki.server.env(), "TIKET_TLS_CERT": str(garbage)}))
    with pytest.raises(tls.TlsError, match=r"TIKET_TLS_CA=.*no PEM certificate"):
        tls.channel_credentials(load({"TIKET_TLS_CA": str(garbage)}))
    # A key file given as the certificate holds no certificate either.
    with pytest.raises(tls.TlsError, match="no PEM certificate"):
        tls.server_credentials(load({**pki.server.env(), "TIKET_TLS_CERT": str(pki.server.key)}))


def test_a_key_that_is_not_the_certificates_is_refused(pki):
    env = {"TIKET_TLS_CERT": str(pki.server.cert), "TIKET_TLS_KEY": str(pki.client.key)}
    with pytest.raises(tls.TlsError, match="is not the key of the certificate"):
        tls.server_credentials(load(env))
    with pytest.raises(tls.TlsError, match="not an unencrypted PEM private key"):
        tls.server_credentials(load({**pki.server.env(), "TIKET_TLS_KEY": str(pki.server.cert)}))


def test_an_expired_certificate_is_refused(pki):
    expired = pki.ca.issue("expired", expired=True)
    with pytest.raises(tls.TlsError, match=r"TIKET_TLS_CERT=.*expired on"):
        tls.server_credentials(load(expired.env()))


def test_a_client_certificate_is_checked_like_a_servers(pki, tmp_path):
    env = {"TIKET_TLS_CA": str(pki.ca.path), **pki.client.env()}
    env["TIKET_TLS_KEY"] = str(Path(tmp_path / "gone.key"))
    with pytest.raises(tls.TlsError, match="TIKET_TLS_KEY="):
        tls.channel_credentials(load(env))


def test_tls_errors_are_configuration_errors():
    # So `tiket status` and other commands print them as such instead of a traceback.
    assert issubclass(tls.TlsError, ConfigError)
