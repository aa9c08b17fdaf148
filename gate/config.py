"""The gate's settings (TIKET_GATE_* variables, overridden by command-line flags): who it
is, where the mesh is, how long a rider may wait, and the offline rules it writes into its
SQLite `system_config`. An invalid value stops the agent with a message naming it."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

from libs.config import (
    ConfigError,
    choice,
    duration_up_to,
    int_between,
    positive_float,
    read_setting,
)
from libs.config import load as load_settings

PREFIX = "TIKET_GATE_"
TERMINAL = re.compile(r"^[A-Z]{1,3}$")
GATE = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,19}$")
DIRECTIONS = ("entry", "exit", "both")
LANGUAGES = ("id", "en")
SECONDS = duration_up_to(timedelta(days=30))


@dataclass(frozen=True)
class OfflineRules:
    """What an offline decision allows (kept in system_config, so `status` and the decision
    read the same values)."""

    # available - spent offline - the amount of this tap must stay at or above this.
    floor: Decimal = Decimal(0)
    # Offline taps of one card not yet uploaded; one more is refused.
    max_offline_taps: int = 4
    # Older than this, the users snapshot is reloaded whole while online, and refused from
    # offline (a deny list that old cannot be trusted).
    snapshot_max_age: timedelta = timedelta(hours=24)
    # A second tap of a card in the same direction within this is refused (journey service:
    # TIKET_JOURNEY_ANTI_PASSBACK_SECONDS).
    anti_passback: timedelta = timedelta(seconds=60)
    # A local check-in older than this no longer counts as an active trip (seed 004: 2 h).
    max_trip: timedelta = timedelta(hours=2)


@dataclass(frozen=True)
class GateConfig:
    terminal_code: str
    gate_code: str
    # entry / exit / both; "" = the gate's type in the fare service's registry, asked at the
    # agent's first start and kept in its SQLite file for every start after it.
    direction: str = ""
    journey_addr: str = "127.0.0.1:50053"
    user_addr: str = "127.0.0.1:50051"
    fare_addr: str = "127.0.0.1:50052"
    # A bearer token with role gate and subject TERMINAL/GATE; "" = mint a development one.
    token: str = ""
    # A file holding the token, re-read when it changes (a sidecar renews it).
    token_file: str = ""
    db_path: str = ""
    # The rider sees a decision within this, whatever the network does.
    deadline: float = 0.3
    lang: str = "id"
    # Users deltas (the deny list reaches the gate within this), fares, uploads, heartbeat,
    # and how often an offline gate checks whether the journey service is back.
    refresh_seconds: float = 5.0
    fare_refresh_seconds: float = 60.0
    sync_seconds: float = 10.0
    heartbeat_seconds: float = 15.0
    probe_seconds: float = 2.0
    rules: OfflineRules = field(default_factory=OfflineRules)

    @property
    def subject(self) -> str:
        """The gate token's subject."""
        return f"{self.terminal_code}/{self.gate_code}"

    def sqlite_path(self, state_dir: str) -> Path:
        if self.db_path:
            return Path(self.db_path)
        return Path(state_dir) / "gate" / f"{self.terminal_code}-{self.gate_code}.sqlite3"


def load(
    env: Mapping[str, str] | None = None, overrides: Mapping[str, object] | None = None
) -> GateConfig:
    """The gate's config from `env` (default: os.environ); `overrides` (flags given on the
    command line, None = not given) win."""
    env = os.environ if env is None else env
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    settings = load_settings(env)
    mesh = read_setting(env, PREFIX + "MESH_ADDR", "", str)

    def address(service: str) -> str:
        default = mesh or settings.addresses[service]
        return read_setting(env, f"{PREFIX}{service.upper()}_ADDR", default, str)

    d = OfflineRules()
    rules = OfflineRules(
        floor=read_setting(env, PREFIX + "OFFLINE_FLOOR", d.floor, _amount),
        max_offline_taps=read_setting(
            env, PREFIX + "MAX_OFFLINE_TAPS", d.max_offline_taps, int_between(1, 1000)
        ),
        snapshot_max_age=read_setting(
            env, PREFIX + "SNAPSHOT_MAX_AGE_SECONDS", d.snapshot_max_age, SECONDS
        ),
        anti_passback=read_setting(env, PREFIX + "ANTI_PASSBACK_SECONDS", d.anti_passback, SECONDS),
        max_trip=read_setting(env, PREFIX + "MAX_TRIP_SECONDS", d.max_trip, SECONDS),
    )
    config = GateConfig(
        terminal_code=given.get("terminal_code") or read_setting(env, PREFIX + "TERMINAL", "", str),
        gate_code=given.get("gate_code") or read_setting(env, PREFIX + "CODE", "", str),
        direction=given.get("direction")
        or read_setting(env, PREFIX + "DIRECTION", "", choice(*DIRECTIONS)),
        journey_addr=given.get("mesh") or address("journey"),
        user_addr=given.get("mesh") or address("user"),
        fare_addr=given.get("mesh") or address("fare"),
        token=read_setting(env, PREFIX + "TOKEN", "", str.strip),
        token_file=read_setting(env, PREFIX + "TOKEN_FILE", "", str),
        db_path=given.get("db") or read_setting(env, PREFIX + "DB", "", str),
        deadline=(
            given.get("deadline_ms")
            or read_setting(env, PREFIX + "DEADLINE_MS", 300, int_between(20, 10_000))
        )
        / 1000,
        lang=given.get("lang") or read_setting(env, PREFIX + "LANG", "id", choice(*LANGUAGES)),
        refresh_seconds=_seconds(env, "REFRESH_SECONDS", 5.0),
        fare_refresh_seconds=_seconds(env, "FARE_REFRESH_SECONDS", 60.0),
        sync_seconds=_seconds(env, "SYNC_SECONDS", 10.0),
        heartbeat_seconds=_seconds(env, "HEARTBEAT_SECONDS", 15.0),
        probe_seconds=_seconds(env, "PROBE_SECONDS", 2.0),
        rules=rules,
    )
    if not TERMINAL.fullmatch(config.terminal_code):
        raise ConfigError(
            f"{PREFIX}TERMINAL (--terminal) must be a terminal code like A "
            f"(^[A-Z]{{1,3}}$), not {config.terminal_code!r}"
        )
    if not GATE.fullmatch(config.gate_code):
        raise ConfigError(
            f"{PREFIX}CODE (--gate) must be a gate code like A-ENTRY-01, not {config.gate_code!r}"
        )
    if config.direction and config.direction not in DIRECTIONS:
        raise ConfigError(f"--direction must be one of {', '.join(DIRECTIONS)}")
    return config


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    return read_setting(env, PREFIX + name, default, positive_float)


def _amount(raw: str) -> Decimal:
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ValueError("expected an amount in IDR, e.g. 0 or -5000") from None
    return value.quantize(Decimal("0.01"))
