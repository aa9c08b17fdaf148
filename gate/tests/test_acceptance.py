"""Issue 16's acceptance for the gate, against the real user, fare and journey services: four
gates decide 1,000 taps offline through a network cut and reconcile them when it ends; a
slow server gets an offline decision that is reconciled later; a gate killed (SIGKILL) while
it uploads loses and doubles nothing when it restarts on its SQLite file.

The offline rules the network-cut script stays within (gate/decide.py), so that an offline
run charges what an always-online run charges:
- at most 4 taps of a card pending at one gate (TIKET_GATE_MAX_OFFLINE_TAPS): a card's five
  entries rotate over three entry gates (at most two at each) and its exits alternate
  E, D, E, D, E — D-BI-01, which takes both ways, never holds more than four of a card;
- a gate that let a card in offline refuses it another entry while it has no news of an
  exit and the trip may still run (2 h): a card comes back to an entry gate three rides,
  at least 145 min, later;
- anti-passback (60 s at the gate, 60 s on the server) and the same terminal's repeat rules
  never apply: a card's taps are at least 10 min apart;
- entries need the maximum fare from the terminal on top of the offline floor (0), counted
  against the snapshot's available balance minus what this gate let through: every card has
  200,000 (at most two entries of 12,000 at a gate);
- tapped_at is the gate's clock, after the snapshot was exported (the cut came later), so
  the taps are scripted from now on into the next hours, the way the journey tests move
  taps into the future (fares cannot start in the past).
With that, the only differences from an online run are in the answers, not in money: an
offline exit states the largest fare to its terminal (the gate does not know the entry) and
the server answers ADJUSTED with the difference; journeys started offline hold nothing and
are charged when they close."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from gate.agent import GateAgent
from gate.tests.local_files import fresh_snapshot, gate_env, pending_tasks, query, upload_all
from services.journey.tests.audit import audit
from services.journey.tests.mesh import journey_db, new_rider, settle, wallet
from services.journey.tests.replay_model import in_order, on_server
from tests.support.processes import ROOT
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(180)]

BALANCE = 200_000
CARDS, RIDES = 100, 5
ENTRIES = ("A-ENTRY-01", "B-ENTRY-01", "D-BI-01")
EXITS = ("E-EXIT-01", "D-BI-01")
DIRECTIONS = {"A-ENTRY-01": "entry", "B-ENTRY-01": "entry", "D-BI-01": "both", "E-EXIT-01": "exit"}
# Background work of the agents, quick so that the upload starts soon after the cut ends.
QUICK = {"sync_seconds": 0.2, "probe_seconds": 0.2, "refresh_seconds": 1.0}


@dataclass(frozen=True)
class ScriptedTap:
    card: int
    kind: str  # "in" | "out"
    gate: str
    at: datetime

    @property
    def terminal(self) -> str:
        return self.gate[0]


def script(cards: int, base: datetime, rng: random.Random) -> list[ScriptedTap]:
    """Each card's rides within the offline rules above, all cards' taps in time order."""
    taps = []
    for card in range(cards):
        start = base + timedelta(seconds=rng.randrange(3600))
        for ride in range(RIDES):
            entered = start + timedelta(minutes=50 * ride, seconds=rng.randrange(300))
            left = entered + timedelta(seconds=rng.randrange(600, 2400))
            taps.append(ScriptedTap(card, "in", ENTRIES[(card + ride) % 3], entered))
            taps.append(ScriptedTap(card, "out", EXITS[ride % 2], left))
    return sorted(taps, key=lambda t: t.at)


@pytest_asyncio.fixture(loop_scope="module")
async def four_gates(gates, tmp_path) -> AsyncIterator[dict[str, GateAgent]]:
    """The four agents, running their background jobs, each with a fresh snapshot."""
    async with AsyncExitStack() as stack:
        agents = {}
        for code, direction in DIRECTIONS.items():
            config = gates.gate_config(tmp_path, code[0], code, direction=direction, **QUICK)
            agents[code] = await stack.enter_async_context(gates.agent(config, background=True))
        yield agents


async def riders(mesh, count: int) -> list[tuple[str, str]]:
    """(user_id, card) of `count` new riders with BALANCE each, a few created at a time."""
    lanes = asyncio.Semaphore(8)

    async def one() -> tuple[str, str]:
        async with lanes:
            return await new_rider(mesh, BALANCE)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def server_taps(mesh, tap_ids: list[str]) -> list[str]:
    """The journey database's taps among `tap_ids` (a tap_id is its primary key)."""
    async with await journey_db(mesh) as conn:
        cur = await conn.execute(
            "SELECT tap_id::text FROM taps WHERE tap_id = ANY(%s::uuid[])", (tap_ids,)
        )
        return [row[0] for row in await cur.fetchall()]


async def money_audit(mesh) -> None:
    await settle(mesh)
    problems = await audit(mesh.database_url("user"), mesh.database_url("journey"))
    assert problems == [], problems


async def test_a_network_cut_of_1000_offline_taps_at_4_gates_is_reconciled_as_if_online(
    gates, four_gates
):
    mesh = gates.mesh
    people = await riders(mesh, CARDS)
    await asyncio.gather(*(fresh_snapshot(agent) for agent in four_gates.values()))
    taps = script(CARDS, datetime.now(UTC).replace(microsecond=0), random.Random(16))

    gates.journey_proxy.cut()
    tap_ids = []
    for tap in taps:
        agent = four_gates[tap.gate]
        decision = await agent.tap(people[tap.card][1], tap.kind, tapped_at=tap.at)
        assert (decision.open, decision.mode) == (True, "offline"), (tap, decision.reason)
        tap_ids.append(decision.tap_id)
    files = [agent.db.path for agent in four_gates.values()]
    assert sum(pending_tasks(path) for path in files) == len(taps) == 1000

    gates.journey_proxy.restore()  # the agents notice (probe), then upload
    await wait_until(
        lambda: all(pending_tasks(path) == 0 for path in files), "every upload", within=120
    )

    await money_audit(mesh)
    stored = await server_taps(mesh, tap_ids)
    assert sorted(stored) == sorted(tap_ids)  # each exactly once: the primary key
    for path in files:
        outcomes = query(path, "SELECT DISTINCT synced, outcome FROM local_transactions")
        assert set(outcomes) <= {(1, "APPLIED"), (1, "ADJUSTED")}, outcomes
    for card, (user_id, _) in enumerate(people):
        mine = [(t.kind, t.terminal, t.at) for t in taps if t.card == card]
        charges, open_ = in_order(mine)
        assert await on_server(mesh, user_id) == (charges, open_), card
        paid = sum(fare for *_, fare in charges)
        assert await wallet(mesh, user_id) == (BALANCE - paid, 0, BALANCE - paid)


async def test_a_slow_server_gets_an_offline_decision_reconciled_once_it_is_fast_again(
    gates, tmp_path
):
    mesh = gates.mesh
    user_id, card = await new_rider(mesh, BALANCE)
    async with gates.agent(gates.gate_config(tmp_path, deadline=0.3)) as agent:
        await fresh_snapshot(agent)
        gates.journey_proxy.slow(1.0)  # every chunk, each way, a second late
        decision = await agent.tap(card)
        assert (decision.open, decision.mode) == (True, "offline")
        assert pending_tasks(agent.db.path) == 1

        gates.journey_proxy.restore()
        await upload_all(agent)
        [(outcome,)] = query(agent.db.path, "SELECT outcome FROM local_transactions")
        # DUPLICATE: the late online attempt reached the server and was answered there.
        assert outcome in ("APPLIED", "ADJUSTED", "DUPLICATE"), outcome

    await money_audit(mesh)
    assert await server_taps(mesh, [decision.tap_id]) == [decision.tap_id]
    assert await on_server(mesh, user_id) == ([], "A")  # the journey it started is open


async def gate_process(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    """`tiket gate serve` reading taps from a pipe (closing it stops the agent)."""
    with log.open("a") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli.main",
            "gate",
            "serve",
            cwd=ROOT,
            env={**os.environ, **env},
            stdin=asyncio.subprocess.PIPE,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )


async def test_a_gate_killed_mid_upload_and_restarted_loses_and_doubles_nothing(gates, tmp_path):
    mesh = gates.mesh
    people = await riders(mesh, 60)
    config = gates.gate_config(tmp_path, "D", "D-BI-01", direction="both")
    # Each card in and out at D five minutes later: the same terminal's fare, 2,000.
    base = datetime.now(UTC).replace(microsecond=0)
    taps = [
        (card, kind, base + timedelta(seconds=10 * n) + timedelta(minutes=5 * (kind == "out")))
        for n, (_, card) in enumerate(people)
        for kind in ("in", "out")
    ]
    async with gates.agent(config) as agent:
        await fresh_snapshot(agent)
        gates.journey_proxy.cut()
        decisions = [await agent.tap(card, kind, tapped_at=at) for card, kind, at in taps]
    assert {(d.open, d.mode) for d in decisions} == {(True, "offline")}
    tap_ids = [d.tap_id for d in decisions]
    env = gate_env(config, tmp_path) | {"TIKET_GATE_SYNC_SECONDS": "0.2"}
    log = tmp_path / "gate.log"

    gate = await gate_process(env, log)
    async with await journey_db(mesh) as conn:

        async def recorded() -> int:
            cur = await conn.execute(
                "SELECT count(*) FROM taps WHERE tap_id = ANY(%s::uuid[])", (tap_ids,)
            )
            return (await cur.fetchone())[0]

        await wait_until(recorded, "the server to record part of the batch", 60)
        gate.kill()  # SIGKILL, mid-upload: the gate has stored no answer yet
        await gate.wait()
        assert gate.returncode == -signal.SIGKILL, log.read_text()
        assert pending_tasks(config.db_path) == len(taps)
        assert await recorded() > 0

    gate = await gate_process(env, log)  # on the same SQLite file
    await wait_until(
        lambda: pending_tasks(config.db_path) == 0, "the restarted gate's upload", within=90
    )
    assert gate.stdin is not None
    gate.stdin.close()
    assert await asyncio.wait_for(gate.wait(), 30) == 0, log.read_text()

    await money_audit(mesh)
    assert sorted(await server_taps(mesh, tap_ids)) == sorted(tap_ids)
    for user_id, _ in people:
        assert await on_server(mesh, user_id) == ([("completed", "D", "D", 2_000)], None)
        assert await wallet(mesh, user_id) == (BALANCE - 2_000, 0, BALANCE - 2_000)
