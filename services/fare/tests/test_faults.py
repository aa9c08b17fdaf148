"""Dependencies down. Redis cut between the service and the real Redis (fault-injection
redis_proxy): every fare RPC still answers correctly, and once Redis is back no lookup returns a
fare superseded while it was away. RabbitMQ unreachable at start: the service serves anyway
(events wait in the outbox, the consumer connects when it can)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from tiket.fare.v1 import fare_pb2

from libs.auth import Role
from services.fare.tests.helpers import amount_of, caller_for, feed_zip, price_of, seed, set_fare
from tests.support.processes import free_port

pytestmark = pytest.mark.timeout(60)


async def test_every_fare_rpc_answers_with_redis_cut(start_fare, redis_proxy):
    runtime = await start_fare(TIKET_REDIS_URL=f"redis://127.0.0.1:{redis_proxy.port}/0")
    fares = caller_for(runtime)
    try:
        await seed(fares)
        assert await price_of(fares, "A", "E") == 12000  # cached through the redis_proxy
        redis_proxy.cut()
        called = await call_every_rpc(fares)
        service = fare_pb2.DESCRIPTOR.services_by_name["FareService"]
        assert called == {m.name for m in service.methods}
        assert await price_of(fares, "A", "E") == 12500  # set while Redis was cut

        redis_proxy.restore()
        for _ in range(30):  # before and after the owed renewal: never the cached 12000
            assert await price_of(fares, "A", "E") == 12500
            await asyncio.sleep(0.05)
    finally:
        await fares.channel.close()


async def test_the_service_starts_and_serves_without_rabbitmq(start_fare):
    closed = free_port()  # nothing listens there
    runtime = await start_fare(TIKET_AMQP_URL=f"amqp://guest:guest@127.0.0.1:{closed}/")
    fares = caller_for(runtime)
    try:
        await seed(fares)
        assert await price_of(fares, "A", "E") == 12000
        await set_fare(fares, "A", "E", 12500)
        assert await price_of(fares, "A", "E") == 12500
    finally:
        await fares.channel.close()


async def call_every_rpc(fares) -> set[str]:
    """Call each FareService RPC once and check its answer; return the names called."""
    called: set[str] = set()

    async def call(method: str, request, **kwargs):
        called.add(method)
        return await fares.call(method, request, **kwargs)

    fare = await call("GetFare", fare_pb2.GetFareRequest(origin_code="B", destination_code="E"))
    assert amount_of(fare.price) == Decimal(11000)
    most = await call("GetMaxFare", fare_pb2.GetMaxFareRequest(origin_code="A"))
    assert amount_of(most.price) == Decimal(12000)
    changed = await set_fare(fares, "A", "E", 12500)
    called.add("SetFare")
    assert changed.changed
    listed = await call("ListFares", fare_pb2.ListFaresRequest(origin_code="A"))
    assert len(listed.fares) == 5
    snapshot = await fares.stream("ExportFareSnapshot", fare_pb2.ExportFareSnapshotRequest())
    called.add("ExportFareSnapshot")
    assert snapshot[-1].end.fares == 20
    report = await call(
        "ImportGtfsFares", fare_pb2.ImportGtfsFaresRequest(feed=feed_zip(), dry_run=True)
    )
    assert len(report.imported) == 3  # A->B, B->A, E->A differ; A->E is 12500 already

    await call("CreateTerminal", fare_pb2.CreateTerminalRequest(code="F", name="Terminal Baru"))
    assert (await call("GetTerminal", fare_pb2.GetTerminalRequest(code="F"))).name == (
        "Terminal Baru"
    )
    assert len((await call("ListTerminals", fare_pb2.ListTerminalsRequest())).terminals) == 6
    renamed = await call(
        "UpdateTerminal",
        fare_pb2.UpdateTerminalRequest(
            terminal=fare_pb2.Terminal(code="F", name="Terminal Anyar"),
            update_mask=FieldMask(paths=["name"]),
        ),
    )
    assert renamed.name == "Terminal Anyar"
    gate = dict(terminal_code="F", gate_code="F-IN-1")
    await call("RegisterGate", fare_pb2.RegisterGateRequest(**gate, type=fare_pb2.GATE_TYPE_ENTRY))
    await call("Heartbeat", fare_pb2.HeartbeatRequest(**gate), role=Role.GATE, sub="F/F-IN-1")
    resting = await call(
        "ChangeGateStatus",
        fare_pb2.ChangeGateStatusRequest(**gate, status=fare_pb2.GATE_STATUS_MAINTENANCE),
    )
    assert resting.status == fare_pb2.GATE_STATUS_MAINTENANCE
    gates = await call("ListGates", fare_pb2.ListGatesRequest(terminal_code="F"))
    assert [g.gate_code for g in gates.gates] == ["F-IN-1"]
    return called
