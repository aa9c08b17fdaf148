"""`tiket gate serve`, `tap` and `status` as processes, against the real services, and the
reader's loop they share."""

from __future__ import annotations

import asyncio
import os
import sys
from types import SimpleNamespace

import pytest

from gate.agent import Decision
from gate.cli import _answer
from gate.decide import Direction
from gate.tests.local_files import gate_env
from services.journey.tests.mesh import new_rider
from tests.support.processes import ROOT, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


async def tiket_gate(env: dict[str, str], *args: str, stdin: str = "") -> tuple[int, str]:
    """Run `tiket gate ARGS` without blocking the loop the services run on."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli.main",
        "gate",
        *args,
        cwd=ROOT,
        env={**os.environ, **env},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(stdin.encode()), 60)
    return process.returncode or 0, out.decode()


async def test_serve_prints_a_decision_per_tap_then_status_shows_the_gate(gates, tmp_path):
    _, card = await new_rider(gates.mesh, 50_000)
    env = gate_env(gates.gate_config(tmp_path), tmp_path)
    taps = f"{card}\n{card} out\nnot a tap at all\nSHORT\n"
    code, out = await tiket_gate(env, "serve", stdin=taps)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("gate A/A-ENTRY-01 (entry) serving")
    assert f"OPEN   {card} in  [online] Silakan masuk. Saldo ditahan sementara: Rp 12.000." in lines
    assert any(line.startswith(f"CLOSED {card} out [gate] Gerbang salah arah") for line in lines)
    assert any(line.startswith("? 'not a tap at all'") for line in lines)
    assert any("CLOSED SHORT" in line and "(UNKNOWN_CARD)" in line for line in lines)

    code, out = await tiket_gate(env, "tap", card, "--lang", "en")
    assert code == 1, out  # the server's anti-passback: the card is already in
    assert "Already checked in" in out

    code, out = await tiket_gate(env, "status")
    assert code == 0, out
    assert "A/A-ENTRY-01 (entry)" in out
    assert "answers" in out
    assert "pending taps" in out
    clock_line = next(line for line in out.splitlines() if line.startswith("clock"))
    assert " s ahead of the fare service's" in clock_line or " s behind" in clock_line, out
    token_line = next(line for line in out.splitlines() if line.startswith("token"))
    assert "UTC (in 59 min)" in token_line or "UTC (in 60 min)" in token_line, out


def without_direction(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k != "TIKET_GATE_DIRECTION"}


async def test_a_gate_without_a_configured_direction_takes_the_registered_one(gates, tmp_path):
    """`tiket gate tap CARD out --terminal E --gate E-EXIT-01` with no TIKET_GATE_DIRECTION,
    as a new user types it: the gate acts as the exit the fare service registered (it used to
    act as an entry gate and refuse every exit with WRONG_GATE_TYPE), keeps that for a start
    without the network, and a gate nobody registered is told so."""
    _, card = await new_rider(gates.mesh, 50_000)
    entry = without_direction(gate_env(gates.gate_config(tmp_path), tmp_path))
    code, out = await tiket_gate(entry, "tap", card)
    assert (code, out.split()[:3]) == (0, ["OPEN", card, "in"]), out

    exit_config = gates.gate_config(tmp_path, "E", "E-EXIT-01")
    exit_env = without_direction(gate_env(exit_config, tmp_path))
    code, out = await tiket_gate(exit_env, "tap", card, "out")
    assert (code, out.split()[:4]) == (0, ["OPEN", card, "out", "[online]"]), out
    code, out = await tiket_gate(exit_env, "status")
    assert "E/E-EXIT-01 (exit, from the registry)" in out, out

    _, other = await new_rider(gates.mesh, 50_000)
    no_registry = {**exit_env, "TIKET_GATE_FARE_ADDR": f"127.0.0.1:{free_port()}"}
    code, out = await tiket_gate(no_registry, "tap", other, "out")
    assert "configuration error" not in out and "WRONG_GATE_TYPE" not in out, out
    assert out.split()[2] == "out", out

    unknown = without_direction(gate_env(gates.gate_config(tmp_path, "E", "E-EXIT-99"), tmp_path))
    code, out = await tiket_gate(unknown, "tap", other, "out")
    assert code != 0, out
    assert "E/E-EXIT-99 is not in the fare service's registry" in out, out
    assert "TIKET_GATE_DIRECTION" in out, out


async def test_a_one_shot_tap_is_shown_in_status_and_a_gate_without_a_snapshot_says_so(
    gates, tmp_path
):
    """Found trying `tiket gate tap` as a new user: after an OPEN [online] tap, `status` said
    "last online never"; and a gate that never loaded a snapshot refused offline taps as
    SNAPSHOT_STALE ("offline too long") though it had never been offline."""
    _, card = await new_rider(gates.mesh, 50_000)
    env = gate_env(gates.gate_config(tmp_path), tmp_path)
    code, out = await tiket_gate(env, "tap", card)
    assert (code, out.split()[:4]) == (0, ["OPEN", card, "in", "[online]"]), out
    code, out = await tiket_gate(env, "status")
    agent_line = next(line for line in out.splitlines() if line.startswith("agent"))
    assert "online; last online" in agent_line and "never" not in agent_line, out

    cut_off = {**env, "TIKET_GATE_JOURNEY_ADDR": f"127.0.0.1:{free_port()}"}
    code, out = await tiket_gate(cut_off, "tap", card, "--lang", "en")
    assert code == 1, out
    assert f"CLOSED {card} in  [offline] This gate cannot check cards without the network" in out
    assert "(NO_SNAPSHOT)" in out and "`tiket gate serve` loads one" in out, out


async def test_a_misspelt_gate_variable_is_named_with_the_setting_it_resembles(gates, tmp_path):
    """TIKET_GATE_DEADLINE_MSS=150 had no effect and nothing said so: the agent ran with the
    default deadline. A variable of nobody else's that no gate setting reads is a warning."""
    _, card = await new_rider(gates.mesh, 50_000)
    env = gate_env(gates.gate_config(tmp_path), tmp_path) | {"TIKET_GATE_DEADLINE_MSS": "150"}
    code, out = await tiket_gate(env, "tap", card)
    assert code == 0, out
    assert (
        "gate: TIKET_GATE_DEADLINE_MSS is set, but the gate has no such setting "
        "(did you mean TIKET_GATE_DEADLINE_MS?)" in out
    ), out
    assert "is set, but the gate has no such setting" not in out.replace(
        "TIKET_GATE_DEADLINE_MSS is set, but the gate has no such setting", ""
    ), out


@pytest.mark.parametrize("kind", ["not a database", "a folder"])
async def test_a_gate_file_that_cannot_be_opened_is_named_without_a_traceback(
    gates, tmp_path, kind
):
    """`--db` at a damaged file or at a folder printed a Python traceback."""
    env = gate_env(gates.gate_config(tmp_path), tmp_path)
    bad = tmp_path / "bad.sqlite3"
    if kind == "a folder":
        bad.mkdir()
    else:
        bad.write_text("garbage")
    for command in (["tap", "CARD0001"], ["status"]):
        code, out = await tiket_gate(env, *command, "--db", str(bad))
        assert code == 1, out
        assert "Traceback" not in out, out
        assert f"tiket: configuration error: cannot open the gate's SQLite file {bad}" in out, out
        assert "TIKET_GATE_DB (--db)" in out, out


async def test_a_socket_the_agent_cannot_listen_on_is_named_without_a_traceback(gates, tmp_path):
    """`tiket gate serve --socket` in a folder that does not exist printed a traceback."""
    env = gate_env(gates.gate_config(tmp_path), tmp_path)
    path = tmp_path / "no such folder" / "reader.sock"
    code, out = await tiket_gate(env, "serve", "--socket", str(path))
    assert code == 1, out
    assert "Traceback" not in out, out
    assert f"tiket: configuration error: cannot listen on the socket {path}: " in out, out
    assert "No such file or directory; give --socket a path in a folder" in out, out


async def test_a_tap_that_fails_unexpectedly_is_closed_and_the_gate_serves_on(caplog):
    """Whatever goes wrong inside one tap (a bug, a library's surprise), the reader's loop
    answers CLOSED with the traceback in the log, and the next rider is served."""

    class Broken:
        config = SimpleNamespace(lang="en")
        calls = 0

        async def tap(self, card: str, way: str | None = None):
            self.calls += 1
            if self.calls == 1:
                raise KeyError("a surprise")
            return Decision(True, card, Direction.CHECK_IN, "online")

    agent = Broken()
    with caplog.at_level("ERROR", logger="gate.cli"):
        first = await _answer(agent, "CARD0001\n")
    assert first.startswith("CLOSED CARD0001 -   [gate] This gate has a fault"), first
    assert "(GATE_ERROR)" in first
    assert any(r.exc_info and "CARD0001" in r.getMessage() for r in caplog.records)
    assert (await _answer(agent, "CARD0002\n")).startswith("OPEN   CARD0002 in")
