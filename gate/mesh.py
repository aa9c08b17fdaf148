"""The gate's connections to the mesh: one long-lived channel per address (the journey,
user and fare services may sit behind one ingress address), the stubs, and the gate's
bearer token. Channels stay open across taps: a tap never pays for a handshake."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import jwt
from grpc import aio
from tiket.fare.v1 import fare_pb2_grpc
from tiket.journey.v1 import journey_pb2_grpc
from tiket.user.v1 import user_pb2_grpc

from gate.config import GateConfig
from libs import tls
from libs.auth import Role
from libs.auth.dev_keys import dev_token
from libs.auth.keys import KeyMaterialError
from libs.config import SERVICE_PORTS, ConfigError, Settings

# Reconnect quickly when the network returns; notice a dead link without waiting for TCP.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 3_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
DEV_TOKEN_TTL = 3600


@dataclass
class Credential:
    """The gate's token: TIKET_GATE_TOKEN, else the file TIKET_GATE_TOKEN_FILE (re-read when
    it changes), else (development and test only) one minted by the development identity
    provider and renewed at half its lifetime."""

    config: GateConfig
    settings: Settings
    _token: str = ""
    _renew_at: float = 0.0
    _mtime: float = -1.0

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token()}"),)

    def token(self) -> str:
        if self.config.token:
            return self.config.token
        if self.config.token_file:
            return self._from_file(Path(self.config.token_file))
        if time.monotonic() >= self._renew_at:
            self._token = self._mint()
            self._renew_at = time.monotonic() + DEV_TOKEN_TTL / 2
        return self._token

    @property
    def given(self) -> bool:
        """A token from outside (variable or file), not one the gate mints and renews."""
        return bool(self.config.token or self.config.token_file)

    def expires_at(self) -> datetime | None:
        """When the token given to the gate (TIKET_GATE_TOKEN or its file) expires; None for
        one the gate renews itself (development) or one without a readable `exp`. Read, not
        verified: the services verify it."""
        if not self.given:
            return None
        try:
            claims = jwt.decode(self.token(), options={"verify_signature": False})
            return datetime.fromtimestamp(float(claims["exp"]), UTC)
        except (jwt.PyJWTError, KeyError, TypeError, ValueError, OSError):
            return None

    def _from_file(self, path: Path) -> str:
        mtime = path.stat().st_mtime
        if mtime != self._mtime:
            self._token, self._mtime = path.read_text().strip(), mtime
        return self._token

    def _mint(self) -> str:
        if not self.settings.allows_development_defaults:
            raise ConfigError(
                "the gate needs a token: set TIKET_GATE_TOKEN or TIKET_GATE_TOKEN_FILE "
                f"(role gate, subject {self.config.subject}); against a local `make run`, "
                "TIKET_ENV=development mints one from its development keys, or set "
                f"TIKET_GATE_TOKEN=$(tiket token --role gate --sub {self.config.subject})"
            )
        try:
            key = Path(self.settings.dev_issuer_key)
            return dev_token(key, Role.GATE, self.config.subject, SERVICE_PORTS, DEV_TOKEN_TTL)
        except KeyMaterialError as exc:
            raise ConfigError(f"{exc} (run `tiket keys dev`, or set TIKET_GATE_TOKEN)") from None


class Mesh:
    def __init__(self, config: GateConfig, settings: Settings) -> None:
        credentials = tls.channel_credentials(settings)  # TLS when TIKET_TLS_CA is set
        self.channels: dict[str, aio.Channel] = {}
        for address in {config.journey_addr, config.user_addr, config.fare_addr}:
            self.channels[address] = tls.open_channel(address, credentials, options=CHANNEL_OPTIONS)
        self.journey_channel = self.channels[config.journey_addr]
        self.journeys = journey_pb2_grpc.JourneyServiceStub(self.journey_channel)
        self.users = user_pb2_grpc.UserServiceStub(self.channels[config.user_addr])
        self.fares = fare_pb2_grpc.FareServiceStub(self.channels[config.fare_addr])
        self.credential = Credential(config, settings)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return self.credential.metadata()

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


# Answers that mean "the server is not there (in time)": decide offline, keep tasks pending.
UNREACHABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)
