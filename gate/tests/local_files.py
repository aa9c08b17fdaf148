"""Reading a gate's SQLite file from a test, uploading what an agent has pending, and the
environment that runs `tiket gate` as a process on it (TIKET_GATE_* variables)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gate import snapshot
from gate.agent import GateAgent
from gate.config import GateConfig
from tests.support.waiting import wait_until


def query(path: str | Path, sql: str, *args: object) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, args).fetchall()


def pending_tasks(path: str | Path) -> int:
    """Offline taps the gate has not had answered yet."""
    return query(path, "SELECT count(*) FROM offline_tasks")[0][0]


def gate_env(config: GateConfig, state_dir: Path) -> dict[str, str]:
    return {
        "TIKET_STATE_DIR": str(state_dir),
        "TIKET_GATE_TERMINAL": config.terminal_code,
        "TIKET_GATE_CODE": config.gate_code,
        "TIKET_GATE_DIRECTION": config.direction,
        "TIKET_GATE_JOURNEY_ADDR": config.journey_addr,
        "TIKET_GATE_USER_ADDR": config.user_addr,
        "TIKET_GATE_FARE_ADDR": config.fare_addr,
        "TIKET_GATE_TOKEN": config.token,
        "TIKET_GATE_DB": config.db_path,
        "TIKET_GATE_DEADLINE_MS": str(round(config.deadline * 1000)),
    }


async def fresh_snapshot(agent: GateAgent) -> None:
    """The agent's users and fares exported now (what the background jobs keep doing)."""
    await snapshot.refresh_users(agent.db, agent.mesh)
    await snapshot.refresh_fares(agent.db, agent.mesh, agent.config.terminal_code)


async def upload_all(agent: GateAgent) -> None:
    """Once the journey service answers the agent's probe again, upload until nothing is
    pending (a batch the server could not take yet is sent again)."""

    async def online() -> bool:
        await agent.probe()
        return agent.online

    async def uploaded() -> bool:
        await agent.sync()
        return pending_tasks(agent.db.path) == 0

    await wait_until(online, "the journey service to answer again")
    await wait_until(uploaded, "every offline tap answered", within=60)
