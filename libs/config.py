"""Configuration from TIKET_* environment variables, with ARCHITECTURE.md's defaults.

Every setting has a default that works on a developer machine; an invalid value stops the
process with a message naming the variable and what it expected.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

T = TypeVar("T")
N = TypeVar("N", int, float)

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


def read_setting(env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T]) -> T:
    """Variable `name` of `env` parsed, `default` when unset or empty. ConfigError names the
    variable, its value and what `parse` expected (its ValueError's message)."""
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        return parse(raw)
    except (ValueError, ArithmeticError) as exc:
        raise ConfigError(f"{name}={raw!r} is invalid: {exc}") from None


def _number(convert: Callable[[str], N], raw: str, ok: Callable[[N], bool], expected: str) -> N:
    """`raw` converted, or ValueError(`expected`) when it is not a number or `ok` refuses it."""
    try:
        value = convert(raw)
    except ValueError:
        raise ValueError(expected) from None
    if not ok(value):
        raise ValueError(expected)
    return value


def port(raw: str) -> int:
    return _number(int, raw, lambda v: 0 <= v <= 65535, "expected a port number, 0-65535")


def positive_float(raw: str) -> float:
    return _number(float, raw, lambda v: v > 0, "expected a number > 0")


def positive_int(raw: str) -> int:
    return _number(int, raw, lambda v: v > 0, "expected an integer > 0")


def int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        return _number(int, raw, lambda v: low <= v <= high, f"expected an integer, {low}-{high}")

    return parse


def duration_up_to(limit: timedelta) -> Callable[[str], timedelta]:
    """Seconds, more than 0 and at most `limit`."""
    most = limit.total_seconds()
    expected = f"expected seconds, more than 0 and at most {most:g}"

    def parse(raw: str) -> timedelta:
        return timedelta(seconds=_number(float, raw, lambda v: 0 < v <= most, expected))

    return parse


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
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
    event_retention_hours: int = 168
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
        grpc_ports[name] = read_setting(env, f"TIKET_{upper}_PORT", grpc_default, port)
        metrics_ports[name] = read_setting(
            env, f"TIKET_{upper}_METRICS_PORT", metrics_default, port
        )
        addresses[name] = read_setting(
            env, f"TIKET_{upper}_ADDR", f"127.0.0.1:{grpc_ports[name]}", str
        )
    secret = read_setting(env, "TIKET_JWT_SECRET", d.jwt_secret, str)
    if len(secret) < 32:
        raise ConfigError("TIKET_JWT_SECRET is too short: use at least 32 characters")
    return Settings(
        env=read_setting(env, "TIKET_ENV", d.env, choice("development", "test", "production")),
        postgres_url=read_setting(env, "TIKET_POSTGRES_URL", d.postgres_url, str),
        db_prefix=read_setting(env, "TIKET_DB_PREFIX", d.db_prefix, _identifier),
        db_pool_min=read_setting(env, "TIKET_DB_POOL_MIN", d.db_pool_min, positive_int),
        db_pool_max=read_setting(env, "TIKET_DB_POOL_MAX", d.db_pool_max, positive_int),
        redis_url=read_setting(env, "TIKET_REDIS_URL", d.redis_url, str),
        redis_prefix=read_setting(env, "TIKET_REDIS_PREFIX", d.redis_prefix, str),
        amqp_url=read_setting(env, "TIKET_AMQP_URL", d.amqp_url, str),
        events_exchange=read_setting(env, "TIKET_EVENTS_EXCHANGE", d.events_exchange, str),
        jwt_secret=secret,
        host=read_setting(env, "TIKET_HOST", d.host, str),
        log_level=read_setting(
            env, "TIKET_LOG_LEVEL", d.log_level, choice("debug", "info", "warning", "error")
        ),
        grace_seconds=read_setting(env, "TIKET_GRACE_SECONDS", d.grace_seconds, positive_float),
        sweep_interval_seconds=read_setting(
            env, "TIKET_SWEEP_INTERVAL_SECONDS", d.sweep_interval_seconds, positive_float
        ),
        hold_ttl_seconds=read_setting(
            env, "TIKET_HOLD_TTL_SECONDS", d.hold_ttl_seconds, positive_int
        ),
        event_retention_hours=read_setting(
            env, "TIKET_EVENT_RETENTION_HOURS", d.event_retention_hours, positive_int
        ),
        workers=read_setting(env, "TIKET_WORKERS", d.workers, int_between(1, 64)),
        grpc_ports=grpc_ports,
        metrics_ports=metrics_ports,
        addresses=addresses,
    )


def _identifier(raw: str) -> str:
    if not raw.replace("_", "").isalnum() or not raw.isascii() or raw.lower() != raw:
        raise ValueError("expected lower-case letters, digits and _ only")
    return raw
