"""Bad input, unknown terminals, missing tokens and wrong roles get the documented status,
and write nothing."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import latlng_pb2, money_pb2
from tiket.fare.v1 import fare_pb2

from libs.auth import Role
from services.fare import gtfs
from services.fare.tests.helpers import idr, in_seconds, row_counts, seed, ts
from tests.support.grpc_errors import bad_request_fields

INVALID = grpc.StatusCode.INVALID_ARGUMENT
F = fare_pb2


BAD_INPUT = [
    ("CreateTerminal", F.CreateTerminalRequest(code="a", name="x"), "code"),
    ("CreateTerminal", F.CreateTerminalRequest(code="ABCD", name="x"), "code"),
    ("CreateTerminal", F.CreateTerminalRequest(code="F", name=" "), "name"),
    ("CreateTerminal", F.CreateTerminalRequest(code="F", name="x" * 101), "name"),
    (
        "CreateTerminal",
        F.CreateTerminalRequest(
            code="F", name="x", coordinates=latlng_pb2.LatLng(latitude=91, longitude=0)
        ),
        "coordinates.latitude",
    ),
    (
        "CreateTerminal",
        F.CreateTerminalRequest(
            code="F",
            name="x",
            coordinates=latlng_pb2.LatLng(latitude=float("nan"), longitude=0),
        ),
        "coordinates",
    ),
    ("GetTerminal", F.GetTerminalRequest(code=""), "code"),
    ("ListTerminals", F.ListTerminalsRequest(page_token="garbage"), "page_token"),
    ("ListTerminals", F.ListTerminalsRequest(page_size=501), "page_size"),
    (
        "UpdateTerminal",
        F.UpdateTerminalRequest(terminal=F.Terminal(code="A", name="x")),
        "update_mask",
    ),
    (
        "UpdateTerminal",
        F.UpdateTerminalRequest(
            terminal=F.Terminal(code="A", name="x"), update_mask=FieldMask(paths=["code"])
        ),
        "update_mask",
    ),
    (
        "UpdateTerminal",
        F.UpdateTerminalRequest(
            terminal=F.Terminal(code="A"), update_mask=FieldMask(paths=["name"])
        ),
        "terminal.name",
    ),
    (
        "RegisterGate",
        F.RegisterGateRequest(terminal_code="A", gate_code="a gate", type=F.GATE_TYPE_ENTRY),
        "gate_code",
    ),
    ("RegisterGate", F.RegisterGateRequest(terminal_code="A", gate_code="A-1"), "type"),
    ("ListGates", F.ListGatesRequest(status=42), "status"),
    ("ListGates", F.ListGatesRequest(terminal_code="a"), "terminal_code"),
    ("Heartbeat", F.HeartbeatRequest(terminal_code="A", gate_code="", status=1), "gate_code"),
    (
        "ChangeGateStatus",
        F.ChangeGateStatusRequest(terminal_code="A", gate_code="A-ENTRY-01"),
        "status",
    ),
    (
        "SetFare",
        F.SetFareRequest(origin_code="A", destination_code="A", price=idr(5000)),
        "destination_code",
    ),
    (
        "SetFare",
        F.SetFareRequest(origin_code="A", destination_code="B", price=idr(-1)),
        "price",
    ),
    ("SetFare", F.SetFareRequest(origin_code="A", destination_code="B"), "price"),
    (
        "SetFare",
        F.SetFareRequest(origin_code="A", destination_code="B", price=idr("100000000")),
        "price",
    ),
    (
        "SetFare",
        F.SetFareRequest(
            origin_code="A",
            destination_code="B",
            price=money_pb2.Money(currency_code="USD", units=1),
        ),
        "price.currency_code",
    ),
    (
        "SetFare",
        F.SetFareRequest(origin_code="AB1", destination_code="B", price=idr(1)),
        "origin_code",
    ),
    (
        "SetFare",
        F.SetFareRequest(
            origin_code="A",
            destination_code="B",
            price=idr(1),
            effective_from=ts(in_seconds(-3600)),
        ),
        "effective_from",
    ),
    (
        "SetFare",
        F.SetFareRequest(
            origin_code="A",
            destination_code="B",
            price=idr(1),
            effective_from=Timestamp(seconds=-100_000_000_000),
        ),
        "effective_from",
    ),
    (
        "SetFare",
        F.SetFareRequest(origin_code="A", destination_code="B", price=idr(1), request_id="x" * 101),
        "request_id",
    ),
    ("GetFare", F.GetFareRequest(origin_code="A", destination_code=""), "destination_code"),
    ("GetFare", F.GetFareRequest(origin_code="B", destination_code="B"), "destination_code"),
    ("GetMaxFare", F.GetMaxFareRequest(origin_code="1"), "origin_code"),
    ("ListFares", F.ListFaresRequest(page_token="e30="), "page_token"),
    ("ListFares", F.ListFaresRequest(destination_code="e"), "destination_code"),
    ("ImportGtfsFares", F.ImportGtfsFaresRequest(), "feed"),
    (
        "ImportGtfsFares",
        F.ImportGtfsFaresRequest(feed=b"x", area_terminals={"depot": "dd"}),
        "area_terminals[depot]",
    ),
]


async def test_bad_input_names_the_field_and_writes_nothing(fares, db):
    await seed(fares)
    before = await row_counts(db)
    for method, request, field in BAD_INPUT:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fares.call(method, request)
        assert err.value.code() == INVALID, (method, field, err.value.details())
        assert field in bad_request_fields(err.value), (method, field)
    assert await row_counts(db) == before


async def test_unknown_terminals_and_missing_fares_are_not_found(fares, db):
    await seed(fares)
    await fares.call("CreateTerminal", F.CreateTerminalRequest(code="F", name="Baru"))
    before = await row_counts(db)
    calls = [
        ("GetTerminal", F.GetTerminalRequest(code="Z"), "terminal Z"),
        ("UpdateTerminal", F.UpdateTerminalRequest(terminal=F.Terminal(code="Z", name="x"), update_mask=FieldMask(paths=["name"])), "terminal Z"),
        ("RegisterGate", F.RegisterGateRequest(terminal_code="Z", gate_code="Z-1", type=1), "terminal Z"),
        ("ListGates", F.ListGatesRequest(terminal_code="Z"), "terminal Z"),
        ("Heartbeat", F.HeartbeatRequest(terminal_code="A", gate_code="A-NOPE"), "gate A/A-NOPE"),
        ("SetFare", F.SetFareRequest(origin_code="A", destination_code="Z", price=idr(1)), "terminal Z"),
        ("GetFare", F.GetFareRequest(origin_code="Z", destination_code="A"), "terminal Z"),
        ("GetFare", F.GetFareRequest(origin_code="A", destination_code="F"), "no fare from A to F"),
        ("GetFare", F.GetFareRequest(origin_code="A", destination_code="B", at=ts(in_seconds(-86400 * 400))), "no fare from A to B in force at"),
        ("GetMaxFare", F.GetMaxFareRequest(origin_code="F"), "no fare from F"),
        ("GetMaxFare", F.GetMaxFareRequest(origin_code="Z"), "terminal Z"),
    ]  # fmt: skip
    for method, request, words in calls:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fares.call(method, request)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND, method
        assert words in err.value.details(), (method, err.value.details())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await fares.stream("ExportFareSnapshot", F.ExportFareSnapshotRequest(terminal_code="Z"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert await row_counts(db) == before


async def test_missing_token_is_unauthenticated_and_roles_are_enforced(fares, db):
    await seed(fares)
    before = await row_counts(db)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await fares.stub.GetFare(F.GetFareRequest(origin_code="A", destination_code="B"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    set_fare = F.SetFareRequest(origin_code="A", destination_code="B", price=idr(1))
    rider = str(uuid.uuid4())
    denied = [
        ("SetFare", set_fare, Role.GATE, "A/A-ENTRY-01"),
        ("SetFare", set_fare, Role.USER, rider),
        ("SetFare", set_fare, Role.SERVICE, "journey"),
        ("CreateTerminal", F.CreateTerminalRequest(code="F", name="x"), Role.GATE, "A/A-ENTRY-01"),
        ("ChangeGateStatus", F.ChangeGateStatusRequest(), Role.GATE, "A/A-ENTRY-01"),
        ("ExportFareSnapshot", F.ExportFareSnapshotRequest(), Role.USER, rider),
    ]
    for method, request, role, sub in denied:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            if method == "ExportFareSnapshot":
                await fares.stream(method, request, role=role, sub=sub)
            else:
                await fares.call(method, request, role=role, sub=sub)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, (method, role)
    # Reads are open to every authenticated caller, gates included.
    read = F.GetFareRequest(origin_code="A", destination_code="B")
    subjects = {Role.GATE: "A/A-ENTRY-01", Role.USER: rider, Role.SERVICE: "journey"}
    for role in Role:
        sub = subjects.get(role, "x")
        assert (await fares.call("GetFare", read, role=role, sub=sub)).price.units == 5000
    operator = await fares.call("SetFare", set_fare, role=Role.OPERATOR, sub="ops")
    assert operator.changed
    assert (await row_counts(db))[2] == before[2] + 1


async def test_a_feed_past_grpc_s_default_4_mb_reaches_the_importer_one_past_the_limit_does_not(
    fares, db
):
    """The fare files of a large network come to more than gRPC's default 4 MB message;
    the fare service takes up to gtfs.MAX_UPLOAD_BYTES, which the CLI checks beforehand."""
    before = await row_counts(db)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await fares.call("ImportGtfsFares", F.ImportGtfsFaresRequest(feed=b"x" * 6_000_000))
    assert err.value.code() == INVALID, err.value.details()
    assert "feed: is not a zip file" in err.value.details()

    too_large = F.ImportGtfsFaresRequest(feed=b"x" * (gtfs.MAX_UPLOAD_BYTES + 1))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await fares.call("ImportGtfsFares", too_large)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await row_counts(db) == before
