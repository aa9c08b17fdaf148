"""Terminals and gates through the real service: create, read, list, update, register,
heartbeats, staff changes, the silent-gate threshold and sweeper, and their events."""

from __future__ import annotations

import asyncio

import grpc
import psycopg
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.type import latlng_pb2
from tiket.fare.v1 import fare_pb2

from libs.auth import Role
from libs.config import ConfigError
from services.fare.service import gate_offline_after
from services.fare.tests.helpers import caller_for, seed
from tests.support.waiting import wait_until

ONLINE, OFFLINE = fare_pb2.GATE_STATUS_ONLINE, fare_pb2.GATE_STATUS_OFFLINE
MAINTENANCE = fare_pb2.GATE_STATUS_MAINTENANCE


async def events(db, event_type: str) -> list[dict]:
    cur = await db.execute(
        "SELECT body FROM outbox WHERE event_type = %s ORDER BY seq", (event_type,)
    )
    return [row[0]["data"] for row in await cur.fetchall()]


async def test_seed_loads_the_terminals_gates_and_matrix_and_is_idempotent(fares, db):
    await seed(fares)
    await seed(fares)
    listed = await fares.call("ListTerminals", fare_pb2.ListTerminalsRequest())
    assert [t.code for t in listed.terminals] == ["A", "B", "C", "D", "E"]
    utara = listed.terminals[0]
    assert (utara.name, utara.location) == ("Terminal Utara", "Jl. Raya Utara No.1")
    assert round(utara.coordinates.latitude, 6) == -7.250445
    gates = await fares.call("ListGates", fare_pb2.ListGatesRequest())
    assert len(gates.gates) == 10
    by_code = {g.gate_code: g for g in gates.gates}
    assert by_code["A-BI-01"].status == MAINTENANCE
    assert by_code["C-EXIT-01"].status == OFFLINE
    assert by_code["D-BI-01"].type == fare_pb2.GATE_TYPE_BIDIRECTIONAL
    cur = await db.execute("SELECT count(*) FROM fares")
    assert (await cur.fetchone())[0] == 20
    assert len(await events(db, "terminal.created")) == 5
    assert len(await events(db, "fare.updated")) == 20


async def test_create_is_idempotent_and_a_different_terminal_under_a_code_is_refused(fares):
    request = fare_pb2.CreateTerminalRequest(code="KOT", name="Kota", location="Jl. Kota 1")
    first, again = await asyncio.gather(
        fares.call("CreateTerminal", request), fares.call("CreateTerminal", request)
    )
    assert first == again and first.active
    other = fare_pb2.CreateTerminalRequest(code="KOT", name="Kota Lama")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await fares.call("CreateTerminal", other)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_update_changes_the_masked_fields_and_emits_terminal_updated(fares, db):
    await fares.call(
        "CreateTerminal", fare_pb2.CreateTerminalRequest(code="A", name="Utara", location="x")
    )
    updated = await fares.call(
        "UpdateTerminal",
        fare_pb2.UpdateTerminalRequest(
            terminal=fare_pb2.Terminal(
                code="A",
                name="Terminal Utara Baru",
                location="ignored: not in the mask",
                coordinates=latlng_pb2.LatLng(latitude=-7.25, longitude=112.77),
                active=False,
            ),
            update_mask=FieldMask(paths=["name", "coordinates", "active"]),
        ),
    )
    assert (updated.name, updated.location, updated.active) == ("Terminal Utara Baru", "x", False)
    assert updated.coordinates.longitude == pytest.approx(112.77)
    [event] = await events(db, "terminal.updated")
    assert event["changedFields"] == ["name", "coordinates", "active"]
    assert event.get("active", False) is False
    active = await fares.call("ListTerminals", fare_pb2.ListTerminalsRequest(active_only=True))
    assert list(active.terminals) == []


async def test_terminals_page_by_code(fares):
    for code in ["E", "A", "C", "B", "D"]:
        await fares.call("CreateTerminal", fare_pb2.CreateTerminalRequest(code=code, name=code))
    seen, token = [], ""
    while True:
        page = await fares.call(
            "ListTerminals", fare_pb2.ListTerminalsRequest(page_size=2, page_token=token)
        )
        seen += [t.code for t in page.terminals]
        if not (token := page.next_page_token):
            break
    assert seen == ["A", "B", "C", "D", "E"]


async def test_register_gate_is_idempotent_and_the_type_is_fixed(fares):
    await fares.call("CreateTerminal", fare_pb2.CreateTerminalRequest(code="A", name="A"))
    request = fare_pb2.RegisterGateRequest(
        terminal_code="A", gate_code="A-IN-1", type=fare_pb2.GATE_TYPE_ENTRY
    )
    first = await fares.call("RegisterGate", request)
    assert (await fares.call("RegisterGate", request)).id == first.id
    assert first.status == ONLINE
    request.type = fare_pb2.GATE_TYPE_EXIT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await fares.call("RegisterGate", request)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_heartbeats_and_staff_changes_emit_status_changes(fares, db):
    await seed(fares)
    gate = dict(terminal_code="A", gate_code="A-ENTRY-01")
    beat = await fares.call(
        "Heartbeat", fare_pb2.HeartbeatRequest(**gate), role=Role.GATE, sub="A/A-ENTRY-01"
    )
    assert beat.status == ONLINE
    broken = await fares.call(
        "Heartbeat",
        fare_pb2.HeartbeatRequest(**gate, status=fare_pb2.GATE_STATUS_ERROR),
        role=Role.GATE,
        sub="A/A-ENTRY-01",
    )
    assert broken.status == fare_pb2.GATE_STATUS_ERROR
    assert broken.last_heartbeat_at.ToDatetime() >= beat.last_heartbeat_at.ToDatetime()
    resting = await fares.call(
        "ChangeGateStatus",
        fare_pb2.ChangeGateStatusRequest(**gate, status=MAINTENANCE, reason="new reader"),
        role=Role.OPERATOR,
    )
    assert resting.status == MAINTENANCE
    changes = [
        (e["oldStatus"], e["newStatus"], e["reason"])
        for e in await events(db, "gate.status_changed")
    ]
    assert changes[-2:] == [
        ("online", "error", "heartbeat"),
        ("error", "maintenance", "new reader"),
    ]
    in_maintenance = await fares.call(
        "ListGates", fare_pb2.ListGatesRequest(terminal_code="A", status=MAINTENANCE)
    )
    assert [g.gate_code for g in in_maintenance.gates] == ["A-BI-01", "A-ENTRY-01"]


async def test_a_heartbeat_does_not_end_a_maintenance_staff_began(fares, db):
    """A gate agent reports ONLINE every 15 s: were that to end the maintenance, a gate staff
    took out of service would take taps again within seconds (GATE_OUT_OF_SERVICE gone)."""
    await seed(fares)
    gate = dict(terminal_code="A", gate_code="A-ENTRY-01")
    await fares.call(
        "ChangeGateStatus",
        fare_pb2.ChangeGateStatusRequest(**gate, status=MAINTENANCE, reason="new reader"),
        role=Role.OPERATOR,
    )
    for reported in (ONLINE, fare_pb2.GATE_STATUS_ERROR, fare_pb2.GATE_STATUS_UNSPECIFIED):
        beat = await fares.call(
            "Heartbeat",
            fare_pb2.HeartbeatRequest(**gate, status=reported),
            role=Role.GATE,
            sub="A/A-ENTRY-01",
        )
        assert (beat.status, beat.reported_status) == (MAINTENANCE, MAINTENANCE), reported
    listed = await fares.call("ListGates", fare_pb2.ListGatesRequest(terminal_code="A"))
    assert {g.gate_code: g.status for g in listed.gates}["A-ENTRY-01"] == MAINTENANCE
    back = await fares.call(
        "ChangeGateStatus",
        fare_pb2.ChangeGateStatusRequest(**gate, status=ONLINE, reason="reader fitted"),
        role=Role.OPERATOR,
    )
    assert back.status == ONLINE
    changes = [
        (e["oldStatus"], e["newStatus"], e["reason"])
        for e in await events(db, "gate.status_changed")
    ]
    assert changes[-2:] == [
        ("online", "maintenance", "new reader"),
        ("maintenance", "online", "reader fitted"),
    ]


async def test_a_gate_may_only_beat_for_itself(fares):
    await seed(fares)
    for terminal, code, subject in (
        ("A", "A-EXIT-01", "A/A-ENTRY-01"),  # another gate of its terminal
        ("A", "A-ENTRY-01", "B/A-ENTRY-01"),  # its gate code, at another terminal
        ("", "A-ENTRY-01", "A/A-ENTRY-01"),  # an empty terminal is nobody's
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fares.call(
                "Heartbeat",
                fare_pb2.HeartbeatRequest(terminal_code=terminal, gate_code=code),
                role=Role.GATE,
                sub=subject,
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, (terminal, code, subject)


async def test_a_silent_gate_shows_offline_then_the_sweeper_marks_it(start_fare, monkeypatch):
    monkeypatch.setenv("TIKET_GATE_OFFLINE_AFTER_SECONDS", "0.5")
    runtime = await start_fare(TIKET_SWEEP_INTERVAL_SECONDS="0.2")
    fares = caller_for(runtime)
    try:
        await fares.call("CreateTerminal", fare_pb2.CreateTerminalRequest(code="A", name="A"))
        request = fare_pb2.RegisterGateRequest(
            terminal_code="A", gate_code="A-IN-1", type=fare_pb2.GATE_TYPE_ENTRY
        )
        assert (await fares.call("RegisterGate", request)).status == ONLINE

        async def offline() -> bool:
            listed = await fares.call("ListGates", fare_pb2.ListGatesRequest(status=OFFLINE))
            return [g.gate_code for g in listed.gates] == ["A-IN-1"]

        await wait_until(offline, "the silent gate to be shown offline", within=3)

        async def swept() -> bool:
            listed = await fares.call("ListGates", fare_pb2.ListGatesRequest())
            return listed.gates[0].reported_status == OFFLINE

        await wait_until(swept, "the sweeper to mark the gate offline", within=3)
        back = await fares.call(
            "Heartbeat",
            fare_pb2.HeartbeatRequest(terminal_code="A", gate_code="A-IN-1"),
            role=Role.GATE,
            sub="A/A-IN-1",
        )
        assert back.status == ONLINE
    finally:
        await fares.channel.close()
    url = runtime.settings.database_url("fare")
    async with await psycopg.AsyncConnection.connect(url) as conn:
        changes = [
            (e["oldStatus"], e["newStatus"], e["reason"])
            for e in await events(conn, "gate.status_changed")
        ]
    assert changes == [
        ("online", "offline", "no heartbeat for 0.5 s"),
        ("offline", "online", "heartbeat"),
    ]


def test_an_invalid_offline_threshold_is_a_configuration_error():
    assert gate_offline_after({}).total_seconds() == 90
    assert gate_offline_after({"TIKET_GATE_OFFLINE_AFTER_SECONDS": "2.5"}).total_seconds() == 2.5
    for bad in ("soon", "0", "-3", "1e9"):
        with pytest.raises(ConfigError, match="TIKET_GATE_OFFLINE_AFTER_SECONDS"):
            gate_offline_after({"TIKET_GATE_OFFLINE_AFTER_SECONDS": bad})
