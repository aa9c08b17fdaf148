"""TLS for deployments without Istio: the server credentials of a service (mutual TLS when it
has a client CA) and the channel credentials of whoever calls one (a service, `tiket
status`), built from the TIKET_TLS_* files of Settings.

Files are read and checked here, when a server or channel is made, so that a missing file,
a key that is not the certificate's or an expired certificate stops the process with a
message naming the variable, instead of every handshake failing later without one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpc import aio

from libs.config import ConfigError, Settings


class TlsError(ConfigError):
    """A TIKET_TLS_* file cannot be used; the message names the variable and the file."""


def server_credentials(settings: Settings) -> grpc.ServerCredentials:
    """The certificate chain and key of TIKET_TLS_CERT/TIKET_TLS_KEY; with TIKET_TLS_CLIENT_CA
    every client must present a certificate signed by that CA (mutual TLS)."""
    chain, key = _key_pair(settings)
    client_ca = None
    if settings.tls_client_ca:
        client_ca = _ca_bundle("TIKET_TLS_CLIENT_CA", settings.tls_client_ca)
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """None (plaintext) without TIKET_TLS_CA. With it: the server must present a certificate
    signed by that CA for the address called; and when TIKET_TLS_CERT/TIKET_TLS_KEY are set,
    they are offered as the client certificate (callees requiring mutual TLS ask for one)."""
    if not settings.tls_ca:
        return None
    roots = _ca_bundle("TIKET_TLS_CA", settings.tls_ca)
    chain = key = None
    if settings.tls_cert:
        chain, key = _key_pair(settings)
    return grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=key, certificate_chain=chain
    )


def open_channel(
    target: str, credentials: grpc.ChannelCredentials | None, **kwargs: Any
) -> aio.Channel:
    """aio.secure_channel with `credentials`, aio.insecure_channel when they are None;
    `kwargs` (options, interceptors …) go to either."""
    if credentials is None:
        return aio.insecure_channel(target, **kwargs)
    return aio.secure_channel(target, credentials, **kwargs)


def _key_pair(settings: Settings) -> tuple[bytes, bytes]:
    """(certificate chain, private key) as PEM, checked to belong together."""
    chain_pem = _read("TIKET_TLS_CERT", settings.tls_cert)
    key_pem = _read("TIKET_TLS_KEY", settings.tls_key)
    chain = _certificates("TIKET_TLS_CERT", settings.tls_cert, chain_pem)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise TlsError(
            f"TIKET_TLS_KEY={settings.tls_key}: not an unencrypted PEM private key ({exc})"
        ) from None
    leaf = chain[0]
    if _public_bytes(leaf.public_key()) != _public_bytes(key.public_key()):
        raise TlsError(
            f"TIKET_TLS_KEY={settings.tls_key} is not the key of the certificate in "
            f"TIKET_TLS_CERT={settings.tls_cert} (the first certificate of the file must be "
            "the service's own)"
        )
    if leaf.not_valid_after_utc < datetime.now(UTC):
        raise TlsError(
            f"TIKET_TLS_CERT={settings.tls_cert}: the certificate expired on "
            f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    return chain_pem, key_pem


def _ca_bundle(variable: str, path: str) -> bytes:
    pem = _read(variable, path)
    _certificates(variable, path, pem)
    return pem


def _read(variable: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsError(f"{variable}={path}: cannot read it ({exc.strerror})") from None


def _certificates(variable: str, path: str, pem: bytes) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        certificates = []
    if not certificates:
        raise TlsError(f"{variable}={path}: no PEM certificate in it")
    return certificates


def _public_bytes(key: Any) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
