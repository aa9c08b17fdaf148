"""The demo terminals, gates and fares (`tiket seed`, so every `make run`): loaded again, they
leave alone what staff did since, and what is printed is the fares in force."""

from __future__ import annotations

from tiket.fare.v1 import fare_pb2

from libs.auth import Role
from services.fare import demo
from services.fare.tests.helpers import set_fare


async def test_loading_again_keeps_a_gate_staff_put_back_and_prints_the_fares_in_force(fares):
    await demo.load(fares.channel, fares.metadata(), lambda _: None)
    gate = dict(terminal_code="A", gate_code="A-BI-01")  # in maintenance in seed 004
    await fares.call(
        "ChangeGateStatus",
        fare_pb2.ChangeGateStatusRequest(
            **gate, status=fare_pb2.GATE_STATUS_ONLINE, reason="reader fitted"
        ),
        role=Role.OPERATOR,
    )
    await set_fare(fares, "A", "B", 5500)

    printed: list[str] = []
    await demo.load(fares.channel, fares.metadata(), printed.append)

    listed = await fares.call("ListGates", fare_pb2.ListGatesRequest(terminal_code="A"))
    assert {g.gate_code: g.status for g in listed.gates}["A-BI-01"] == fare_pb2.GATE_STATUS_ONLINE
    row_a = next(line for line in printed if line.startswith("  from A"))
    assert row_a.split()[2:4] == ["-", "5,500"]
