"""libs.config: ARCHITECTURE.md's defaults, TIKET_* overrides, and refusals that name the
variable."""

from __future__ import annotations

import pytest

from libs.config import DEV_JWT_SECRET, SERVICE_PORTS, ConfigError, load

REAL_SECRET = "s3cr3t-" + "x" * 40


def test_defaults_match_the_architecture_page() -> None:
    settings = load({})

    assert settings.env == "development"
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
    assert settings.uses_dev_secret


def test_empty_values_mean_the_default() -> None:
    assert load({"TIKET_USER_PORT": "", "TIKET_ENV": ""}) == load({})


def test_overrides() -> None:
    settings = load(
        {
            "TIKET_ENV": "Production",
            "TIKET_JWT_SECRET": REAL_SECRET,
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
    assert settings.jwt_secret == REAL_SECRET
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
    ],
)
def test_invalid_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load({variable: value})
    assert variable in str(caught.value)
    assert repr(value) in str(caught.value)


def test_short_secret_is_refused() -> None:
    with pytest.raises(ConfigError, match="TIKET_JWT_SECRET") as caught:
        load({"TIKET_JWT_SECRET": "x" * 31})
    assert "32" in str(caught.value)
    assert load({"TIKET_JWT_SECRET": "x" * 32}).jwt_secret == "x" * 32


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_production_refuses_the_dev_secret() -> None:
    settings = load({"TIKET_ENV": "production"})
    assert settings.jwt_secret == DEV_JWT_SECRET
    with pytest.raises(ConfigError, match="TIKET_JWT_SECRET"):
        settings.check_production()


def test_production_accepts_a_real_secret() -> None:
    settings = load({"TIKET_ENV": "production", "TIKET_JWT_SECRET": REAL_SECRET})
    assert not settings.uses_dev_secret
    settings.check_production()  # no error


@pytest.mark.parametrize("env", ["development", "test"])
def test_dev_secret_is_fine_outside_production(env: str) -> None:
    load({"TIKET_ENV": env}).check_production()


def test_every_service_has_distinct_ports() -> None:
    grpc_ports = [grpc for grpc, _ in SERVICE_PORTS.values()]
    metrics_ports = [metrics for _, metrics in SERVICE_PORTS.values()]
    assert len(set(grpc_ports + metrics_ports)) == 2 * len(SERVICE_PORTS)
