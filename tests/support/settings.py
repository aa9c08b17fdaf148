"""Settings for a test run: unique database prefix, exchange and cache prefix, free ports."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from libs.config import SERVICE_PORTS, Settings, load
from tests.support import keys


def isolated_env(**overrides: str) -> dict[str, str]:
    """TIKET_* variables that keep this test's services apart from every other run."""
    run = uuid.uuid4().hex[:8]
    env = {
        "TIKET_ENV": "test",
        "TIKET_DB_PREFIX": f"tiket_t{run}_",
        "TIKET_EVENTS_EXCHANGE": f"tiket.events.t{run}",
        "TIKET_REDIS_PREFIX": f"t{run}:",
        "TIKET_LOG_LEVEL": "warning",
        "TIKET_GRACE_SECONDS": "2",
        "TIKET_DB_POOL_MIN": "1",
        **keys.key_env(),
    }
    for name in SERVICE_PORTS:
        env[f"TIKET_{name.upper()}_PORT"] = "0"
        env[f"TIKET_{name.upper()}_METRICS_PORT"] = "0"
    env.update(overrides)
    return env


def isolated_settings(**overrides: str) -> Settings:
    return load(isolated_env(**overrides))


@dataclass
class MeshEnv:
    """The environment of the service processes a test started (with their TIKET_*_ADDR),
    for reaching them and minting their tokens."""

    env: dict[str, str]
    settings: Settings

    def address(self, name: str) -> str:
        return self.settings.addresses[name]

    def token(self, role: str, sub: str) -> str:
        return keys.token(self.settings, role, sub)
