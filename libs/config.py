"""Configuration from TIKET_* environment variables, with ARCHITECTURE.md's defaults.

Every setting has a default that works on a developer machine; an invalid value stops the
process with a message naming the variable and what it expected.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

T = TypeVar("T")
N = TypeVar("N", int, float)

# Environments where development keys, issuer and credentials are accepted. Anything else,
# an unset TIKET_ENV included, refuses them: a deployment that forgets to say what it is must
# not run on development keys (`tiket up` sets development itself).
DEVELOPMENT_ENVS = frozenset({"development", "test"})
DEV_ISSUER = "tiket-dev"
DEV_AMQP_USER = "guest"

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


# Every TIKET_* variable this process looked for (read_setting records each): one that is set
# but never looked for is most likely misspelt (unread_settings).
_looked_for: set[str] = set()
# Read by the `tiket` command itself, or set by tiket for its own processes.
READ_ELSEWHERE = frozenset(
    {
        "TIKET_TOKEN",
        "TIKET_STATE_DIR",
        "TIKET_DEV_ISSUER_KEY",
        "TIKET_SUPERVISOR_PID",
        "TIKET_WORKER",
    }
)


def read_setting(env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T]) -> T:
    """Variable `name` of `env` parsed, `default` when unset or empty. ConfigError names the
    variable, its value and what `parse` expected (its ValueError's message)."""
    _looked_for.add(name)
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


def fraction(raw: str) -> float:
    return _number(float, raw, lambda v: 0 <= v <= 1, "expected a number from 0 to 1")


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


def network_list(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated addresses or CIDR blocks."""
    try:
        return tuple(
            ipaddress.ip_network(p.strip(), strict=False) for p in raw.split(",") if p.strip()
        )
    except ValueError as exc:
        raise ValueError(f"expected comma-separated addresses or CIDR blocks ({exc})") from None


def name_list(raw: str) -> frozenset[str]:
    return frozenset(p.strip().lower() for p in raw.split(",") if p.strip())


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

    # "" when TIKET_ENV is unset: treated like production (see DEVELOPMENT_ENVS).
    env: str = ""
    state_dir: str = ".tiket"
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432"
    db_prefix: str = "tiket_"
    db_pool_min: int = 2
    db_pool_max: int = 10
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = ""
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    events_exchange: str = "tiket.events"
    # Tokens (libs/auth): the identity provider's name and public keys, the services' public
    # keys, this service's own signing key ({service} = its name), and the development
    # identity provider's private key, which only `tiket token` and tests read.
    token_issuer: str = DEV_ISSUER
    jwks: str = ".tiket/keys/issuer.jwks.json"
    service_jwks: str = ".tiket/keys/services.jwks.json"
    service_key: str = ".tiket/keys/services/{service}.pem"
    dev_issuer_key: str = ".tiket/keys/issuer.pem"
    token_max_lifetime_seconds: int = 43_200
    jwks_refresh_seconds: float = 300.0
    # Rate limits on user-facing RPCs (seed 001 §5.4); 0 turns one off.
    rate_limit_user_per_minute: int = 60
    rate_limit_address_per_minute: int = 120
    rate_limit_exempt_roles: frozenset[str] = frozenset({"admin", "operator", "gate", "service"})
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # TLS: the server's certificate and key; a CA to require and verify client certificates
    # with (mutual TLS); a CA this service verifies the services it calls with.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    tls_ca: str = ""
    host: str = "0.0.0.0"
    log_level: str = "info"
    grace_seconds: float = 10.0
    sweep_interval_seconds: float = 5.0
    hold_ttl_seconds: int = 1800
    event_retention_hours: int = 168
    workers: int = 1
    # Tracing (libs/tracing.py): off without an OTLP endpoint; the share of new traces
    # sampled, None for seed 001's default (10 % in production, else 100 %).
    otlp_endpoint: str = ""
    trace_sample_ratio: float | None = None
    grpc_ports: dict[str, int] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)

    @property
    def allows_development_defaults(self) -> bool:
        return self.env in DEVELOPMENT_ENVS

    def service_key_path(self, service: str) -> Path:
        return Path(self.service_key.replace("{service}", service))

    def database_name(self, service: str) -> str:
        return f"{self.db_prefix}{service}"

    def database_url(self, service: str) -> str:
        """TIKET_POSTGRES_URL naming the service's database; its parameters (a managed
        server's `?sslmode=require`) kept, a database it names replaced."""
        server = urlsplit(self.postgres_url)
        query = f"?{server.query}" if server.query else ""
        # By hand: urlunsplit would drop the "//" of a URL without a host (a Unix socket).
        return f"{server.scheme}://{server.netloc}/{self.database_name(service)}{query}"

    def check_production(self) -> None:
        """Refuse development issuer and RabbitMQ credentials unless TIKET_ENV is explicitly
        development or test (development keys are refused where they are loaded:
        libs/auth/service_identity.py)."""
        if self.allows_development_defaults:
            return
        where = f"TIKET_ENV={self.env}" if self.env else "TIKET_ENV is not set, so"
        problems = []
        if self.token_issuer == DEV_ISSUER:
            problems.append(
                f"the development token issuer {DEV_ISSUER!r}: set TIKET_TOKEN_ISSUER and "
                "TIKET_JWKS to your identity provider's"
            )
        amqp = urlsplit(self.amqp_url)
        if unquote(amqp.username or DEV_AMQP_USER) == DEV_AMQP_USER:
            problems.append(
                "RabbitMQ's guest credentials: put a user of your own in TIKET_AMQP_URL"
            )
        if problems:
            raise ConfigError(
                f"{where} development defaults are refused: "
                + "; ".join(problems)
                + " (or set TIKET_ENV=development for a local run)"
            )

    @property
    def tls_server(self) -> bool:
        return bool(self.tls_cert)


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
    state_dir = read_setting(env, "TIKET_STATE_DIR", d.state_dir, str)
    keys = f"{state_dir.rstrip('/')}/keys"
    settings = Settings(
        env=read_setting(env, "TIKET_ENV", d.env, choice("development", "test", "production")),
        state_dir=state_dir,
        postgres_url=read_setting(env, "TIKET_POSTGRES_URL", d.postgres_url, str),
        db_prefix=read_setting(env, "TIKET_DB_PREFIX", d.db_prefix, _identifier),
        db_pool_min=read_setting(env, "TIKET_DB_POOL_MIN", d.db_pool_min, positive_int),
        db_pool_max=read_setting(env, "TIKET_DB_POOL_MAX", d.db_pool_max, positive_int),
        redis_url=read_setting(env, "TIKET_REDIS_URL", d.redis_url, str),
        redis_prefix=read_setting(env, "TIKET_REDIS_PREFIX", d.redis_prefix, str),
        amqp_url=read_setting(env, "TIKET_AMQP_URL", d.amqp_url, str),
        events_exchange=read_setting(env, "TIKET_EVENTS_EXCHANGE", d.events_exchange, str),
        token_issuer=read_setting(env, "TIKET_TOKEN_ISSUER", d.token_issuer, str),
        jwks=read_setting(env, "TIKET_JWKS", f"{keys}/issuer.jwks.json", str),
        service_jwks=read_setting(env, "TIKET_SERVICE_JWKS", f"{keys}/services.jwks.json", str),
        service_key=read_setting(env, "TIKET_SERVICE_KEY", f"{keys}/services/{{service}}.pem", str),
        dev_issuer_key=read_setting(env, "TIKET_DEV_ISSUER_KEY", f"{keys}/issuer.pem", str),
        token_max_lifetime_seconds=read_setting(
            env,
            "TIKET_TOKEN_MAX_LIFETIME_SECONDS",
            d.token_max_lifetime_seconds,
            int_between(60, 7 * 86_400),
        ),
        jwks_refresh_seconds=read_setting(
            env, "TIKET_JWKS_REFRESH_SECONDS", d.jwks_refresh_seconds, positive_float
        ),
        rate_limit_user_per_minute=read_setting(
            env,
            "TIKET_RATE_LIMIT_USER_PER_MINUTE",
            d.rate_limit_user_per_minute,
            int_between(0, 1_000_000),
        ),
        rate_limit_address_per_minute=read_setting(
            env,
            "TIKET_RATE_LIMIT_ADDRESS_PER_MINUTE",
            d.rate_limit_address_per_minute,
            int_between(0, 1_000_000),
        ),
        rate_limit_exempt_roles=read_setting(
            env, "TIKET_RATE_LIMIT_EXEMPT_ROLES", d.rate_limit_exempt_roles, _roles
        ),
        trusted_proxies=read_setting(env, "TIKET_TRUSTED_PROXIES", d.trusted_proxies, network_list),
        tls_cert=read_setting(env, "TIKET_TLS_CERT", d.tls_cert, str),
        tls_key=read_setting(env, "TIKET_TLS_KEY", d.tls_key, str),
        tls_client_ca=read_setting(env, "TIKET_TLS_CLIENT_CA", d.tls_client_ca, str),
        tls_ca=read_setting(env, "TIKET_TLS_CA", d.tls_ca, str),
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
        otlp_endpoint=read_setting(env, "TIKET_OTLP_ENDPOINT", d.otlp_endpoint, str.strip),
        trace_sample_ratio=read_setting(
            env, "TIKET_TRACE_SAMPLE_RATIO", d.trace_sample_ratio, fraction
        ),
        grpc_ports=grpc_ports,
        metrics_ports=metrics_ports,
        addresses=addresses,
    )
    if settings.db_pool_min > settings.db_pool_max:
        raise ConfigError(
            f"TIKET_DB_POOL_MIN={settings.db_pool_min} is above "
            f"TIKET_DB_POOL_MAX={settings.db_pool_max}: the pool keeps at least MIN "
            "connections open and never more than MAX"
        )
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise ConfigError("TIKET_TLS_CERT and TIKET_TLS_KEY go together: set both or neither")
    if settings.tls_client_ca and not settings.tls_cert:
        raise ConfigError("TIKET_TLS_CLIENT_CA (mutual TLS) needs TIKET_TLS_CERT and TIKET_TLS_KEY")
    return settings


_ROLE_NAMES = frozenset({"admin", "operator", "gate", "user", "service"})


def _roles(raw: str) -> frozenset[str]:
    roles = name_list(raw)
    if unknown := roles - _ROLE_NAMES:
        raise ValueError(
            f"unknown roles {', '.join(sorted(unknown))}; roles: {', '.join(sorted(_ROLE_NAMES))}"
        )
    return roles


def _identifier(raw: str) -> str:
    if not raw.replace("_", "").isalnum() or not raw.isascii() or raw.lower() != raw:
        raise ValueError("expected lower-case letters, digits and _ only")
    return raw


def unread_settings(env: Mapping[str, str], component: str) -> list[tuple[str, str]]:
    """(variable, the closest name looked for, or "") for each TIKET_* variable of `env`
    that this process never looked for and that is not another component's (TIKET_<OTHER
    SERVICE>_…, the gate agent's TIKET_GATE_…): a misspelt name has no effect at all."""
    others = tuple(
        f"TIKET_{name.upper()}_" for name in (*SERVICE_PORTS, "gate") if name != component
    )
    unread = [
        name
        for name in env
        if name.startswith("TIKET_")
        and name not in _looked_for
        and name not in READ_ELSEWHERE
        and not name.startswith(others)
    ]
    known = sorted(_looked_for)
    return [
        (name, next(iter(difflib.get_close_matches(name, known, 1, 0.8)), ""))
        for name in sorted(unread)
    ]


def unread_settings_warnings(env: Mapping[str, str], component: str, who: str) -> list[str]:
    """unread_settings as lines for the log, `who` naming the component ("the gate")."""
    return [
        f"{name} is set, but {who} has no such setting"
        + (f" (did you mean {close}?)" if close else "")
        for name, close in unread_settings(env, component)
    ]
