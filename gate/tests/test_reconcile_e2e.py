"""A ride decided offline at two gates, uploaded when the network returns, through the real
journey service's SyncOfflineTaps: every tap answered and cleared, the ride charged once."""

from __future__ import annotations

import sqlite3
from decimal import Decimal

import pytest

from gate import snapshot
from services.journey.tests.mesh import new_rider, settle, wallet
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


def query(path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


async def test_a_ride_tapped_offline_at_a_and_e_is_charged_once_after_the_upload(gates, tmp_path):
    user_id, card = await new_rider(gates.mesh, 50_000)
    entry_config = gates.gate_config(tmp_path, "A", "A-ENTRY-01")
    exit_config = gates.gate_config(tmp_path, "E", "E-EXIT-01")
    async with gates.agent(entry_config) as entry, gates.agent(exit_config) as exit_:
        for agent in (entry, exit_):
            await snapshot.refresh_users(agent.db, agent.mesh)
            await snapshot.refresh_fares(agent.db, agent.mesh, agent.config.terminal_code)

        gates.journey_proxy.cut()
        tapped_in = await entry.tap(card)
        tapped_out = await exit_.tap(card)
        assert [(d.open, d.mode) for d in (tapped_in, tapped_out)] == [(True, "offline")] * 2
        assert await wallet(gates.mesh, user_id) == (Decimal(50_000), 0, Decimal(50_000))

        gates.journey_proxy.restore()
        for agent in (entry, exit_):

            async def back(agent=agent) -> bool:
                await agent.probe()
                return agent.online

            await wait_until(back, "the journey service to answer again")
            while await agent.sync():
                pass
            assert query(agent.db.path, "SELECT count(*) FROM offline_tasks") == [(0,)]
            [(synced, outcome)] = query(
                agent.db.path, "SELECT synced, outcome FROM local_transactions"
            )
            assert synced == 1 and outcome in ("APPLIED", "ADJUSTED"), outcome

    await settle(gates.mesh)
    # A→E is 12,000: held at the offline entry's upload, captured at the exit's.
    assert await wallet(gates.mesh, user_id) == (Decimal(38_000), 0, Decimal(38_000))
