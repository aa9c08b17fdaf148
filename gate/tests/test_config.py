"""TIKET_GATE_* variables and the flags that override them."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from gate.cli import parse_tap
from gate.config import load
from gate.mesh import Credential
from libs.config import ConfigError
from libs.config import load as load_settings

BASE = {"TIKET_GATE_TERMINAL": "A", "TIKET_GATE_CODE": "A-ENTRY-01"}


def test_defaults_point_at_the_local_mesh_with_a_300_ms_deadline():
    config = load(BASE)
    assert (config.subject, config.direction, config.deadline, config.lang) == (
        "A/A-ENTRY-01",
        "",  # the registry's, learned when the agent starts
        0.3,
        "id",
    )
    assert (config.journey_addr, config.user_addr, config.fare_addr) == (
        "127.0.0.1:50053",
        "127.0.0.1:50051",
        "127.0.0.1:50052",
    )
    assert str(config.sqlite_path(".tiket")) == ".tiket/gate/A-A-ENTRY-01.sqlite3"


def test_one_mesh_address_serves_all_three_and_flags_win():
    env = {
        **BASE,
        "TIKET_GATE_MESH_ADDR": "ingress:443",
        "TIKET_GATE_DIRECTION": "both",
        "TIKET_GATE_OFFLINE_FLOOR": "-5000",
        "TIKET_GATE_ANTI_PASSBACK_SECONDS": "30",
    }
    config = load(env, {"gate_code": "A-BI-01", "deadline_ms": 500, "lang": "en", "db": None})
    assert {config.journey_addr, config.user_addr, config.fare_addr} == {"ingress:443"}
    assert (config.gate_code, config.direction, config.deadline, config.lang) == (
        "A-BI-01",
        "both",
        0.5,
        "en",
    )
    assert config.rules.floor == Decimal(-5000)
    assert config.rules.anti_passback == timedelta(seconds=30)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TIKET_GATE_CODE": "A-ENTRY-01"}, "TIKET_GATE_TERMINAL"),
        ({**BASE, "TIKET_GATE_CODE": "a gate"}, "TIKET_GATE_CODE"),
        ({**BASE, "TIKET_GATE_DIRECTION": "sideways"}, "TIKET_GATE_DIRECTION"),
        ({**BASE, "TIKET_GATE_DEADLINE_MS": "5"}, "TIKET_GATE_DEADLINE_MS"),
        ({**BASE, "TIKET_GATE_OFFLINE_FLOOR": "lots"}, "TIKET_GATE_OFFLINE_FLOOR"),
    ],
)
def test_a_bad_value_names_its_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        load(env)


def test_a_reader_line_is_a_card_and_maybe_a_direction():
    assert parse_tap("card0001\n") == ("CARD0001", None)
    assert parse_tap("CARD0001 OUT") == ("CARD0001", "out")
    assert parse_tap("CARD0001 sideways") is None
    assert parse_tap("  ") is None


def test_outside_development_a_gate_without_a_token_is_told_how_to_get_one():
    """After `make run`, in another shell (TIKET_ENV unset, so not development): the error
    names the variables, and the development switch that mints one from .tiket/keys."""
    credential = Credential(load(BASE), load_settings({}))
    with pytest.raises(ConfigError) as refused:
        credential.token()
    message = str(refused.value)
    assert "TIKET_GATE_TOKEN" in message and "subject A/A-ENTRY-01" in message
    assert "TIKET_ENV=development" in message and "tiket token --role gate" in message
