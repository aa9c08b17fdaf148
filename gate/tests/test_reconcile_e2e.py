"""A ride decided offline at two gates, uploaded when the network returns, through the real
journey service's SyncOfflineTaps: every tap answered and cleared, the ride charged once."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gate.tests.local_files import fresh_snapshot, query, upload_all
from services.journey.tests.mesh import new_rider, settle, wallet

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


async def test_a_ride_tapped_offline_at_a_and_e_is_charged_once_after_the_upload(gates, tmp_path):
    user_id, card = await new_rider(gates.mesh, 50_000)
    entry_config = gates.gate_config(tmp_path, "A", "A-ENTRY-01")
    exit_config = gates.gate_config(tmp_path, "E", "E-EXIT-01")
    async with gates.agent(entry_config) as entry, gates.agent(exit_config) as exit_:
        await fresh_snapshot(entry)
        await fresh_snapshot(exit_)

        gates.journey_proxy.cut()
        tapped_in = await entry.tap(card)
        tapped_out = await exit_.tap(card)
        assert [(d.open, d.mode) for d in (tapped_in, tapped_out)] == [(True, "offline")] * 2
        assert await wallet(gates.mesh, user_id) == (Decimal(50_000), 0, Decimal(50_000))

        gates.journey_proxy.restore()
        for agent in (entry, exit_):
            await upload_all(agent)
            [(synced, outcome)] = query(
                agent.db.path, "SELECT synced, outcome FROM local_transactions"
            )
            assert synced == 1 and outcome in ("APPLIED", "ADJUSTED"), outcome

    await settle(gates.mesh)
    # A→E is 12,000: held at the offline entry's upload, captured at the exit's.
    assert await wallet(gates.mesh, user_id) == (Decimal(38_000), 0, Decimal(38_000))
