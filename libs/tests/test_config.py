"""libs.config: ARCHITECTURE.md's defaults, TIKET_* overrides, and refusals that name the
variable."""

from __future__ import annotations

import ipaddress

import pytest

from libs.config import DEV_ISSUER, SERVICE_PORTS, ConfigError, load, unread_settings

OWN_AMQP = "amqp://tiket:pw@mq:5672/"
OWN_ISSUER = "https://id.example/realms/tiket"


def test_defaults_match_the_architecture_page() -> None:
    settings = load({})

    assert settings.env == ""  # unset: development defaults are refused (see below)
    assert settings.grpc_ports == {
        "user": 50051,
        "fare": 50052,
        "journey": 50053,
        "booking": 50054,
        "notification": 50055,
        "analytics": 50056,
    }
    assert settings.metrics_ports == {
        "user": 9101,
        "fare": 9102,
        "journey": 9103,
        "booking": 9104,
        "notification": 9105,
        "analytics": 9106,
    }
    assert settings.addresses["user"] == "127.0.0.1:50051"
    assert settings.addresses["analytics"] == "127.0.0.1:50056"
    assert settings.postgres_url == "postgresql://postgres@127.0.0.1:5432"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.amqp_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert settings.events_exchange == "tiket.events"
    assert settings.database_name("user") == "tiket_user"
    assert settings.database_url("fare") == "postgresql://postgres@127.0.0.1:5432/tiket_fare"
    assert settings.token_issuer == DEV_ISSUER
    assert settings.jwks == ".tiket/keys/issuer.jwks.json"
    assert settings.service_jwks == ".tiket/keys/services.jwks.json"
    assert str(settings.service_key_path("journey")) == ".tiket/keys/services/journey.pem"
    assert settings.rate_limit_user_per_minute == 60
    assert settings.rate_limit_address_per_minute == 120
    assert settings.rate_limit_exempt_roles == {"admin", "operator", "gate", "service"}
    assert settings.trusted_proxies == ()
    assert not settings.tls_server


def test_empty_values_mean_the_default() -> None:
    assert load({"TIKET_USER_PORT": "", "TIKET_ENV": ""}) == load({})


def test_overrides() -> None:
    settings = load(
        {
            "TIKET_ENV": "Production",
            "TIKET_TOKEN_ISSUER": OWN_ISSUER,
            "TIKET_JWKS": "https://id.example/realms/tiket/protocol/openid-connect/certs",
            "TIKET_SERVICE_KEY": "/var/run/tiket/key.pem",
            "TIKET_RATE_LIMIT_USER_PER_MINUTE": "30",
            "TIKET_RATE_LIMIT_EXEMPT_ROLES": "Gate, service",
            "TIKET_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1",
            "TIKET_TLS_CERT": "/tls/tls.crt",
            "TIKET_TLS_KEY": "/tls/tls.key",
            "TIKET_USER_PORT": "6000",
            "TIKET_FARE_METRICS_PORT": "9999",
            "TIKET_JOURNEY_ADDR": "journey.svc:443",
            "TIKET_POSTGRES_URL": "postgresql://app@db:5433/",
            "TIKET_DB_PREFIX": "t_run1_",
            "TIKET_REDIS_URL": "redis://cache:6380/2",
            "TIKET_AMQP_URL": "amqp://u:p@mq:5673/vh",
            "TIKET_EVENTS_EXCHANGE": "tiket.events.x",
            "TIKET_GRACE_SECONDS": "2.5",
            "TIKET_HOLD_TTL_SECONDS": "60",
            "TIKET_LOG_LEVEL": "DEBUG",
            "TIKET_DB_POOL_MAX": "3",
        }
    )

    assert settings.env == "production"
    assert settings.token_issuer == OWN_ISSUER
    assert settings.jwks.startswith("https://id.example/")
    assert str(settings.service_key_path("journey")) == "/var/run/tiket/key.pem"
    assert settings.rate_limit_user_per_minute == 30
    assert settings.rate_limit_exempt_roles == {"gate", "service"}
    assert settings.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("127.0.0.1/32"),
    )
    assert settings.tls_server
    assert settings.grpc_ports["user"] == 6000
    # The address of a service follows its port unless given explicitly.
    assert settings.addresses["user"] == "127.0.0.1:6000"
    assert settings.metrics_ports["fare"] == 9999
    assert settings.addresses["journey"] == "journey.svc:443"
    assert settings.grpc_ports["journey"] == 50053
    assert settings.database_url("user") == "postgresql://app@db:5433/t_run1_user"
    assert settings.redis_url == "redis://cache:6380/2"
    assert settings.amqp_url == "amqp://u:p@mq:5673/vh"
    assert settings.events_exchange == "tiket.events.x"
    assert settings.grace_seconds == 2.5
    assert settings.hold_ttl_seconds == 60
    assert settings.log_level == "debug"
    assert settings.db_pool_max == 3


def test_port_zero_is_allowed_for_tests() -> None:
    assert load({"TIKET_USER_PORT": "0"}).grpc_ports["user"] == 0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TIKET_USER_PORT", "abc"),
        ("TIKET_USER_PORT", "70000"),
        ("TIKET_BOOKING_PORT", "-1"),
        ("TIKET_ANALYTICS_METRICS_PORT", "9.5"),
        ("TIKET_GRACE_SECONDS", "-1"),
        ("TIKET_GRACE_SECONDS", "0"),
        ("TIKET_GRACE_SECONDS", "soon"),
        ("TIKET_SWEEP_INTERVAL_SECONDS", "-0.5"),
        ("TIKET_HOLD_TTL_SECONDS", "0"),
        ("TIKET_DB_POOL_MIN", "-3"),
        ("TIKET_ENV", "staging"),
        ("TIKET_LOG_LEVEL", "verbose"),
        ("TIKET_DB_PREFIX", "Tiket-"),
        ("TIKET_RATE_LIMIT_USER_PER_MINUTE", "-1"),
        ("TIKET_RATE_LIMIT_EXEMPT_ROLES", "gate,robots"),
        ("TIKET_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("TIKET_TOKEN_MAX_LIFETIME_SECONDS", "10"),
    ],
)
def test_invalid_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load({variable: value})
    assert variable in str(caught.value)
    assert repr(value) in str(caught.value)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("env", [{}, {"TIKET_ENV": "production"}])
def test_outside_development_the_dev_issuer_and_guest_credentials_are_refused(env) -> None:
    # A deployment that forgets TIKET_ENV must not run on development defaults.
    with pytest.raises(ConfigError) as caught:
        load(env).check_production()
    message = str(caught.value)
    assert "tiket-dev" in message
    assert "guest" in message
    assert "TIKET_ENV=development" in message


def test_production_with_its_own_issuer_and_credentials_starts() -> None:
    load(
        {"TIKET_ENV": "production", "TIKET_TOKEN_ISSUER": OWN_ISSUER, "TIKET_AMQP_URL": OWN_AMQP}
    ).check_production()


def test_a_guest_password_alone_is_refused_too() -> None:
    settings = load({"TIKET_TOKEN_ISSUER": OWN_ISSUER, "TIKET_AMQP_URL": "amqp://mq:5672/"})
    with pytest.raises(ConfigError, match="guest"):
        settings.check_production()


@pytest.mark.parametrize("env", ["development", "test"])
def test_development_defaults_are_fine_in_development_and_test(env: str) -> None:
    load({"TIKET_ENV": env}).check_production()


def test_tls_settings_go_together() -> None:
    with pytest.raises(ConfigError, match="TIKET_TLS_CERT and TIKET_TLS_KEY"):
        load({"TIKET_TLS_CERT": "/tls/tls.crt"})
    with pytest.raises(ConfigError, match="TIKET_TLS_CLIENT_CA"):
        load({"TIKET_TLS_CLIENT_CA": "/tls/ca.crt"})


def test_every_service_has_distinct_ports() -> None:
    grpc_ports = [grpc for grpc, _ in SERVICE_PORTS.values()]
    metrics_ports = [metrics for _, metrics in SERVICE_PORTS.values()]
    assert len(set(grpc_ports + metrics_ports)) == 2 * len(SERVICE_PORTS)


def test_a_variable_no_setting_reads_is_named_with_the_closest_setting() -> None:
    """A misspelt variable has no effect at all: after the settings are read it is told
    apart from what was looked for, and from another component's variables (each service
    gets every variable from `tiket up`, a Helm ConfigMap may carry its peers')."""
    env = {
        "TIKET_POSTGRES_URL": "postgresql://postgres@127.0.0.1:5432",
        "TIKET_DATABASE_URL": "postgresql://x@db",  # nothing reads it
        "TIKET_USRE_PORT": "50051",  # misspelt
        "TIKET_JOURNEY_ANTI_PASSBACK_SECONDS": "60",  # the journey service's
        "TIKET_GATE_TERMINAL": "A",  # the gate agent's
        "TIKET_TOKEN": "t",  # the `tiket` command's
        "PATH": "/usr/bin",
    }
    load(env)
    assert unread_settings(env, "user") == [
        ("TIKET_DATABASE_URL", ""),
        ("TIKET_USRE_PORT", "TIKET_USER_PORT"),
    ]
    # To the journey service its own prefix is no excuse.
    typo = {**env, "TIKET_JOURNEY_ANTI_PASBACK_SECONDS": "60"}
    assert ("TIKET_JOURNEY_ANTI_PASBACK_SECONDS", "") in [
        (name, "") for name, _ in unread_settings(typo, "journey")
    ]


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("postgresql://postgres@127.0.0.1:5432", "postgresql://postgres@127.0.0.1:5432/tiket_user"),
        ("postgresql://u:p@db:5432/", "postgresql://u:p@db:5432/tiket_user"),
        # a managed server: its parameters stay parameters
        ("postgresql://u:p@db:5432?sslmode=require", "postgresql://u:p@db:5432/tiket_user?sslmode=require"),
        ("postgresql://u@db/postgres?sslmode=verify-full&sslrootcert=/ca.pem",
         "postgresql://u@db/tiket_user?sslmode=verify-full&sslrootcert=/ca.pem"),
        ("postgresql:///?host=/var/run/postgresql", "postgresql:///tiket_user?host=/var/run/postgresql"),
    ],
)  # fmt: skip
def test_a_service_s_database_url_keeps_the_server_s_parameters(server: str, expected: str) -> None:
    """`?sslmode=require` used to become the service's sslmode 'require/tiket_user': no
    service could reach a managed PostgreSQL that needs TLS."""
    assert load({"TIKET_POSTGRES_URL": server}).database_url("user") == expected
