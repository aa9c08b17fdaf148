"""Configuration from TIKET_* environment variables, with ARCHITECTURE.md's defaults.

Every setting has a default that works on a developer machine; an invalid value stops the
process with a message naming the variable and what it expected.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

DEV_JWT_SECRET = "tiket-dev-secret-change-me-in-production"

# name -> (grpc port, metrics port); ARCHITECTURE.md "Running it".
SERVICE_PORTS: dict[str, tuple[int, int]] = {
    "user": (50051, 9101),
    "fare": (50052, 9102),
    "journey": (50053, 9103),
    "booking": (50054, 9104),
    "notification": (50055, 9105),
    "analytics": (50056, 9106),
}


class ConfigError(ValueError):
    """An environment variable holds a value tiket cannot use."""


def _read(env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T], hint: str) -> T:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is invalid: expected {hint} ({exc})") from None


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("out of range")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def _workers(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 64:
        raise ValueError("must be 1-64")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError(f"one of {', '.join(allowed)}")
        return value

    return parse


@dataclass(frozen=True)
class Settings:
    """Settings shared by every service plus the addresses of all of them."""

    env: str = "development"
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432"
    db_prefix: str = "tiket_"
    db_pool_min: int = 2
    db_pool_max: int = 10
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = ""
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    events_exchange: str = "tiket.events"
    jwt_secret: str = DEV_JWT_SECRET
    host: str = "0.0.0.0"
    log_level: str = "info"
    grace_seconds: float = 10.0
    sweep_interval_seconds: float = 5.0
    hold_ttl_seconds: int = 1800
    workers: int = 1
    grpc_ports: dict[str, int] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)

    @property
    def uses_dev_secret(self) -> bool:
        return self.jwt_secret == DEV_JWT_SECRET

    def database_name(self, service: str) -> str:
        return f"{self.db_prefix}{service}"

    def database_url(self, service: str) -> str:
        return f"{self.postgres_url.rstrip('/')}/{self.database_name(service)}"

    def check_production(self) -> None:
        """Refuse the built-in development secret outside development."""
        if self.env == "production" and self.uses_dev_secret:
            raise ConfigError(
                "TIKET_ENV=production with the built-in development JWT secret: "
                "set TIKET_JWT_SECRET to a secret of your own"
            )


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read Settings from `env` (default: os.environ)."""
    env = os.environ if env is None else env
    d = Settings()
    grpc_ports, metrics_ports, addresses = {}, {}, {}
    for name, (grpc_default, metrics_default) in SERVICE_PORTS.items():
        upper = name.upper()
        grpc_ports[name] = _read(env, f"TIKET_{upper}_PORT", grpc_default, _port, "a port number")
        metrics_ports[name] = _read(
            env, f"TIKET_{upper}_METRICS_PORT", metrics_default, _port, "a port number"
        )
        addresses[name] = _read(
            env, f"TIKET_{upper}_ADDR", f"127.0.0.1:{grpc_ports[name]}", str, "host:port"
        )
    secret = _read(env, "TIKET_JWT_SECRET", d.jwt_secret, str, "a string")
    if len(secret) < 32:
        raise ConfigError("TIKET_JWT_SECRET is too short: use at least 32 characters")
    return Settings(
        env=_read(env, "TIKET_ENV", d.env, _choice("development", "test", "production"), "a name"),
        postgres_url=_read(env, "TIKET_POSTGRES_URL", d.postgres_url, str, "a postgresql:// URL"),
        db_prefix=_read(env, "TIKET_DB_PREFIX", d.db_prefix, _identifier, "letters, digits, _"),
        db_pool_min=_read(env, "TIKET_DB_POOL_MIN", d.db_pool_min, _positive_int, "an integer"),
        db_pool_max=_read(env, "TIKET_DB_POOL_MAX", d.db_pool_max, _positive_int, "an integer"),
        redis_url=_read(env, "TIKET_REDIS_URL", d.redis_url, str, "a redis:// URL"),
        redis_prefix=_read(env, "TIKET_REDIS_PREFIX", d.redis_prefix, str, "a key prefix"),
        amqp_url=_read(env, "TIKET_AMQP_URL", d.amqp_url, str, "an amqp:// URL"),
        events_exchange=_read(env, "TIKET_EVENTS_EXCHANGE", d.events_exchange, str, "a name"),
        jwt_secret=secret,
        host=_read(env, "TIKET_HOST", d.host, str, "an address to listen on"),
        log_level=_read(
            env,
            "TIKET_LOG_LEVEL",
            d.log_level,
            _choice("debug", "info", "warning", "error"),
            "a level",
        ),
        grace_seconds=_read(
            env, "TIKET_GRACE_SECONDS", d.grace_seconds, _positive_float, "seconds"
        ),
        sweep_interval_seconds=_read(
            env,
            "TIKET_SWEEP_INTERVAL_SECONDS",
            d.sweep_interval_seconds,
            _positive_float,
            "seconds",
        ),
        hold_ttl_seconds=_read(
            env, "TIKET_HOLD_TTL_SECONDS", d.hold_ttl_seconds, _positive_int, "seconds"
        ),
        workers=_read(env, "TIKET_WORKERS", d.workers, _workers, "a number of processes, 1-64"),
        grpc_ports=grpc_ports,
        metrics_ports=metrics_ports,
        addresses=addresses,
    )


def _identifier(raw: str) -> str:
    if not raw.replace("_", "").isalnum() or not raw.isascii() or raw.lower() != raw:
        raise ValueError("lower-case letters, digits and _ only")
    return raw
