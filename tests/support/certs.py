"""Certificates made in the test: a CA, certificates it signs for services and clients, and
an unrelated CA whose certificates every tiket service must refuse."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Where the test services listen and what they are called at.
LOCAL_NAMES = ("localhost",)
LOCAL_ADDRESSES = ("127.0.0.1",)


@dataclass(frozen=True)
class KeyPair:
    """Files of one certificate (PEM) and its private key."""

    cert: Path
    key: Path

    def env(self) -> dict[str, str]:
        """TIKET_TLS_CERT/KEY: a service serves TLS with it and presents it to callees."""
        return {"TIKET_TLS_CERT": str(self.cert), "TIKET_TLS_KEY": str(self.key)}


class Authority:
    """A self-signed CA that issues certificates into `directory`."""

    def __init__(self, directory: Path, name: str, valid_days: int = 2) -> None:
        self.directory = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.now = datetime.now(UTC) - timedelta(minutes=5)
        self.until = self.now + timedelta(days=valid_days)
        subject = _name(name)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now)
            .not_valid_after(self.until)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / f"{name}.ca.pem"
        self.path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        name: str,
        *,
        server: bool = True,
        client: bool = True,
        expired: bool = False,
    ) -> KeyPair:
        """A certificate for `name` valid for localhost and 127.0.0.1 (a server's SAN), for
        serving (`server`), for presenting as a client (`client`) or both."""
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [
            ExtendedKeyUsageOID.CLIENT_AUTH
        ] * client
        not_after = self.now + timedelta(minutes=1) if expired else self.until
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in LOCAL_NAMES]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in LOCAL_ADDRESSES]
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        pair = KeyPair(self.directory / f"{name}.pem", self.directory / f"{name}.key")
        pair.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        pair.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        pair.key.chmod(0o600)
        return pair


@dataclass(frozen=True)
class Pki:
    """What a TLS test needs: `ca` signs `server` (for the services) and `client` (for
    grpcurl and the CLI); `stranger` is signed by `other_ca`, which nobody trusts."""

    ca: Authority
    server: KeyPair
    client: KeyPair
    other_ca: Authority
    stranger: KeyPair


def make_pki(directory: Path) -> Pki:
    ca = Authority(directory, "tiket-test")
    other = Authority(directory, "elsewhere")
    return Pki(
        ca=ca,
        server=ca.issue("service"),
        client=ca.issue("client", server=False),
        other_ca=other,
        stranger=other.issue("stranger"),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tiket tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
