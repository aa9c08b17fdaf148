"""Property test: random sequences of valid and malformed requests to every FareService RPC,
against one real service seeded with the demo data. Every answer is a success or a clear
refusal, never INTERNAL or UNKNOWN; a refusal writes nothing; the fare timeline stays free of
overlaps and gaps."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import grpc
import orjson
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import latlng_pb2, money_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from tiket.fare.v1 import fare_pb2

from libs.auth import Role
from services.fare import demo
from services.fare.tests.helpers import feed_zip, row_counts, seed, timeline_violations
from tests.support.fuzz import SERVICE_FUZZ

pytestmark = pytest.mark.timeout(120)
F = fare_pb2
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
}
WRITES = {
    "CreateTerminal",
    "UpdateTerminal",
    "RegisterGate",
    "Heartbeat",
    "ChangeGateStatus",
    "SetFare",
    "ImportGtfsFares",
}
METHODS = [m.name for m in F.DESCRIPTOR.services_by_name["FareService"].methods]
INT32, INT64 = (-(2**31), 2**31 - 1), (-(2**63), 2**63 - 1)

junk = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=30),
    st.sampled_from(["", " ", "\x00", "a\x00b", "'; DROP TABLE fares; --", "é" * 300, "ABCD"]),
)


def mostly(valid, malformed):
    return st.one_of(valid, valid, valid, malformed)


codes = mostly(st.sampled_from(["A", "B", "C", "D", "E", "F", "Z", "AB"]), junk)
gate_codes = mostly(st.sampled_from([g[1] for g in demo.DEMO_GATES] + ["F-IN-1"]), junk)
money = st.one_of(
    st.integers(0, 50_000).map(lambda units: money_pb2.Money(currency_code="IDR", units=units)),
    st.builds(
        money_pb2.Money,
        currency_code=st.sampled_from(["IDR", "", "USD"]),
        units=st.one_of(st.integers(-5, 200_000_000), st.integers(*INT64)),
        nanos=st.one_of(st.just(0), st.just(10_000_000), st.integers(*INT32)),
    ),
)
NOW = datetime.now(UTC)


def stamp(value: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(value)
    return result


timestamps = st.one_of(
    st.none(),
    st.integers(-3600, 86_400 * 30).map(lambda s: stamp(NOW + timedelta(seconds=s))),
    st.builds(
        Timestamp,
        seconds=st.one_of(st.integers(*INT64), st.sampled_from([2**62, -(2**62), 10**14])),
        nanos=st.one_of(st.just(0), st.integers(*INT32)),
    ),
)
coordinates = st.one_of(
    st.none(),
    st.builds(
        latlng_pb2.LatLng,
        latitude=st.floats(allow_nan=True, allow_infinity=True),
        longitude=st.floats(-200, 200),
    ),
)
enums = mostly(st.integers(0, 4), st.integers(*INT32))
page_sizes = mostly(st.integers(0, 500), st.integers(*INT32))
tokens = st.one_of(
    st.just(""),
    junk,
    st.lists(st.one_of(st.none(), st.integers(*INT64), st.text(max_size=5)), max_size=5).map(
        lambda key: base64.urlsafe_b64encode(orjson.dumps(key)).decode()
    ),
)
feeds = st.one_of(
    st.just(feed_zip()), st.binary(max_size=50), st.just(feed_zip(stops_txt="stop_id\n\n"))
)


def message(cls, **fields):
    return cls(**{k: v for k, v in fields.items() if v is not None})


def build(cls, **fields):
    return st.builds(message, st.just(cls), **fields)


REQUESTS = {
    "CreateTerminal": build(
        F.CreateTerminalRequest,
        code=codes,
        name=mostly(st.just("Terminal"), junk),
        location=junk,
        coordinates=coordinates,
        inactive=st.booleans(),
    ),
    "GetTerminal": build(F.GetTerminalRequest, code=codes),
    "ListTerminals": build(
        F.ListTerminalsRequest, active_only=st.booleans(), page_size=page_sizes, page_token=tokens
    ),
    "UpdateTerminal": build(
        F.UpdateTerminalRequest,
        terminal=build(
            F.Terminal, code=codes, name=junk, coordinates=coordinates, active=st.booleans()
        ),
        update_mask=st.lists(
            st.sampled_from(["name", "location", "coordinates", "active", "code", "id"])
        ).map(lambda paths: FieldMask(paths=paths)),
    ),
    "RegisterGate": build(
        F.RegisterGateRequest, terminal_code=codes, gate_code=gate_codes, type=enums
    ),
    "ListGates": build(
        F.ListGatesRequest,
        terminal_code=st.one_of(st.just(""), codes),
        status=enums,
        page_size=page_sizes,
        page_token=tokens,
    ),
    "Heartbeat": build(F.HeartbeatRequest, terminal_code=codes, gate_code=gate_codes, status=enums),
    "ChangeGateStatus": build(
        F.ChangeGateStatusRequest,
        terminal_code=codes,
        gate_code=gate_codes,
        status=enums,
        reason=junk,
    ),
    "SetFare": build(
        F.SetFareRequest,
        origin_code=codes,
        destination_code=codes,
        price=st.one_of(st.none(), money),
        effective_from=timestamps,
        request_id=st.one_of(st.just(""), st.sampled_from(["r1", "r2"]), junk),
    ),
    "GetFare": build(F.GetFareRequest, origin_code=codes, destination_code=codes, at=timestamps),
    "GetMaxFare": build(F.GetMaxFareRequest, origin_code=codes, at=timestamps),
    "ListFares": build(
        F.ListFaresRequest,
        origin_code=st.one_of(st.just(""), codes),
        destination_code=st.one_of(st.just(""), codes),
        in_force_at=timestamps,
        include_inactive=st.booleans(),
        page_size=page_sizes,
        page_token=tokens,
    ),
    "ExportFareSnapshot": build(
        F.ExportFareSnapshotRequest, terminal_code=st.one_of(st.just(""), codes)
    ),
    "ImportGtfsFares": build(
        F.ImportGtfsFaresRequest,
        feed=feeds,
        effective_from=timestamps,
        area_terminals=st.dictionaries(st.sampled_from(["depot", "x", ""]), codes, max_size=2),
        dry_run=st.booleans(),
    ),
}
ROLES = mostly(
    st.sampled_from([(Role.ADMIN, "tests"), (Role.OPERATOR, "ops")]),
    st.one_of(
        # A gate of the demo data (a heartbeat for itself passes, any other is refused).
        st.tuples(
            st.just(Role.GATE), st.sampled_from([f"{t}/{g}" for t, g, *_ in demo.DEMO_GATES])
        ),
        st.just((Role.SERVICE, "journey")),
        st.tuples(st.just(Role.USER), st.uuids().map(str)),
    ),
)


async def invoke(fares, method: str, request, role: Role, sub: str) -> tuple[grpc.StatusCode, str]:
    try:
        if method == "ExportFareSnapshot":
            await fares.stream(method, request, role=role, sub=sub)
        else:
            await fares.call(method, request, role=role, sub=sub)
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def test_every_rpc_has_a_strategy():
    assert set(REQUESTS) == set(METHODS)


@settings(SERVICE_FUZZ, max_examples=40)
@given(data=st.data())
async def test_fuzz_mixed_sequences(fares, db, data) -> None:
    if not getattr(fares, "seeded", False):
        await seed(fares)
        fares.seeded = True
    for method in data.draw(st.lists(st.sampled_from(METHODS), min_size=2, max_size=6)):
        request = data.draw(REQUESTS[method], label=method)
        role, sub = data.draw(ROLES, label="role")
        before = await row_counts(db)
        code, details = await invoke(fares, method, request, role, sub)
        assert code in ALLOWED, f"{method} answered {code.name}: {details!r}"
        if code is not grpc.StatusCode.OK and method in WRITES:
            assert await row_counts(db) == before, f"refused {method} wrote rows"
        assert await timeline_violations(db) == []
