"""Property tests: malformed and valid requests, mixed by hypothesis, against the real journey
service (with the real user and fare services). Every answer is a success or a clear
refusal — never INTERNAL, UNKNOWN or UNAVAILABLE; a refusal of bad input writes nothing; the
money audit holds when the module ends (conftest)."""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field

import grpc
import orjson
import pytest
from google.protobuf import timestamp_pb2
from google.type import money_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from tiket.journey.v1 import journey_pb2

from libs.auth import Role
from services.journey.tests.mesh import counts, new_rider
from tests.support.fuzz import SERVICE_FUZZ, well_formed

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]
ANSWERS = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,  # a gate token minted for a junk gate code (only then)
}
# Refusals of bad input: nothing may be written. (FAILED_PRECONDITION may record a refused
# tap, its answer to any retry.)
WRITES_NOTHING = ANSWERS - {grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION}
FUZZ = settings(SERVICE_FUZZ, max_examples=25)
# (terminal, gate) of seed 004 — entries, exits, a bidirectional gate — and a mismatch.
GATES = [
    ("A", "A-ENTRY-01"),
    ("A", "A-EXIT-01"),
    ("B", "B-ENTRY-01"),
    ("D", "D-BI-01"),
    ("E", "E-EXIT-01"),
    ("C", "C-EXIT-01"),
    ("B", "A-ENTRY-01"),
]


@dataclass
class World:
    cards: list[str]
    user_ids: list[str]
    tap_ids: list[str] = field(default_factory=list)
    journey_ids: list[str] = field(default_factory=list)


async def world_of(mesh) -> World:
    """Seeded once per mesh: a rich rider and one too poor for most holds."""
    if (world := getattr(mesh, "fuzz_world", None)) is None:
        riders = [await new_rider(mesh, 200_000), await new_rider(mesh, 3_000)]
        world = mesh.fuzz_world = World([c for _, c in riders], [u for u, _ in riders])
    return world


junk = st.one_of(
    st.just(""),
    st.text(max_size=30),
    st.sampled_from(["\x00", " A", "a-1", "ÄÖ", "'; DROP TABLE taps; --", "Z" * 300]),
)


def mostly(valid, malformed):
    """`valid` four times in five (hypothesis does not draw one_of's branches evenly), so
    most examples get past the first check and malformed values meet the code behind it."""
    return st.integers(0, 4).flatmap(lambda i: malformed if i == 0 else valid)


def pick(items: list[str]):
    return st.integers(0, 2**16).map(lambda i: items[i % len(items)] if items else "")


NOW = int(time.time())
timestamp = st.one_of(
    st.none(),
    st.builds(
        timestamp_pb2.Timestamp,
        seconds=mostly(
            st.integers(NOW - 3_600, NOW + 60),
            st.one_of(
                st.integers(-(2**63), 2**63 - 1),
                st.sampled_from([0, -62_135_596_801, 253_402_300_800, 2**62, NOW + 86_400]),
            ),
        ),
        nanos=mostly(st.just(0), st.integers(-(2**31), 2**31 - 1)),
    ),
)
token_keys = st.lists(
    st.one_of(
        st.none(),
        # orjson encodes integers of at most 64 bits
        st.integers(-(2**63), 2**64 - 1),
        st.text(max_size=10),
        st.uuids().map(str),
    ),
    max_size=3,
)
page_token = st.one_of(
    st.just(""),
    junk,
    token_keys.map(lambda k: base64.urlsafe_b64encode(orjson.dumps(k)).decode()),
)


def message(cls, **fields):
    return cls(**{k: v for k, v in fields.items() if v is not None})


def taps(world: World, cls):
    gate = mostly(st.sampled_from(GATES), st.tuples(st.one_of(junk, st.just("ZZ")), junk))
    return gate.flatmap(
        lambda g: st.builds(
            message,
            st.just(cls),
            card_id=mostly(pick(world.cards), st.one_of(junk, st.just("NOSUCHCARD1"))),
            terminal_code=st.just(g[0]),
            gate_code=st.just(g[1]),
            tap_id=mostly(
                st.one_of(st.uuids().map(str), pick(world.tap_ids)),
                st.one_of(junk, st.just("1")),
            ),
            tapped_at=timestamp,
        )
    )


def offline_taps(world: World):
    """SyncOfflineTapsRequest: a gate and up to four of its offline taps (issue 16)."""
    gate = mostly(st.sampled_from(GATES), st.tuples(st.one_of(junk, st.just("ZZ")), junk))
    tap = st.builds(
        message,
        st.just(journey_pb2.OfflineTap),
        tap_id=mostly(st.uuids().map(str), st.one_of(junk, pick(world.tap_ids))),
        card_id=mostly(pick(world.cards), st.one_of(junk, st.just("NOSUCHCARD1"))),
        direction=mostly(st.integers(1, 2), st.integers(-(2**31), 2**31 - 1)),
        tapped_at=timestamp,
        offline_amount=st.one_of(st.none(), money),
    )
    return gate.flatmap(
        lambda g: st.builds(
            message,
            st.just(journey_pb2.SyncOfflineTapsRequest),
            terminal_code=st.just(g[0]),
            gate_code=st.just(g[1]),
            taps=st.lists(tap, max_size=4),
        )
    )


money = st.builds(
    money_pb2.Money,
    currency_code=mostly(st.just("IDR"), junk),
    units=mostly(st.integers(0, 20_000), st.integers(-(2**63), 2**63 - 1)),
    nanos=mostly(st.just(0), st.integers(-(2**31), 2**31 - 1)),
)


def requests(world: World) -> dict[str, st.SearchStrategy]:
    ids = mostly(pick(world.user_ids), st.one_of(st.uuids().map(str), junk))
    return {
        "CheckIn": taps(world, journey_pb2.CheckInRequest),
        "CheckOut": taps(world, journey_pb2.CheckOutRequest),
        "GetActiveJourney": st.one_of(
            st.just(journey_pb2.GetActiveJourneyRequest()),
            ids.map(lambda v: journey_pb2.GetActiveJourneyRequest(user_id=v)),
            mostly(pick(world.cards), junk).map(
                lambda v: journey_pb2.GetActiveJourneyRequest(card_id=v)
            ),
        ),
        "GetJourney": mostly(pick(world.journey_ids), st.one_of(st.uuids().map(str), junk)).map(
            lambda v: journey_pb2.GetJourneyRequest(journey_id=v)
        ),
        "ListJourneys": st.builds(
            message,
            st.just(journey_pb2.ListJourneysRequest),
            user_id=st.one_of(st.just(""), ids),
            terminal_code=st.one_of(st.just(""), st.sampled_from("ACE"), junk),
            started_from=timestamp,
            started_before=timestamp,
            status=st.one_of(st.integers(0, 5), st.integers(-(2**31), 2**31 - 1)),
            page_size=st.one_of(st.integers(0, 500), st.integers(-(2**31), 2**31 - 1)),
            page_token=page_token,
        ),
        "SyncOfflineTaps": offline_taps(world),
    }


def gate_of(pair: tuple[str, str]) -> str:
    """A gate token's subject: TERMINAL/GATE."""
    return f"{pair[0]}/{pair[1]}"


def caller(world: World, method: str, request):
    """Mostly a caller the RPC admits (a gate tapping for itself, staff reading), so most
    examples reach the service; sometimes one it must turn away."""
    if method in ("CheckIn", "CheckOut", "SyncOfflineTaps"):
        own_gate = gate_of((request.terminal_code, request.gate_code))
        allowed = st.sampled_from([(Role.SERVICE, "tests"), (Role.GATE, own_gate)])
    else:
        allowed = st.sampled_from(
            [(Role.ADMIN, "a"), (Role.OPERATOR, "o"), (Role.SERVICE, "tests")]
        )
    # Gate tokens of other gates (GATES has A-ENTRY-01 at terminal B too), staff, riders.
    others = st.one_of(
        st.tuples(st.just(Role.GATE), st.sampled_from(GATES).map(gate_of)),
        st.tuples(st.just(Role.ADMIN), st.sampled_from(GATES).map(lambda g: g[1])),
        st.tuples(st.just(Role.USER), pick(world.user_ids)),
    )
    return mostly(allowed, others)


async def check(mesh, data, method: str) -> None:
    world = await world_of(mesh)
    request = data.draw(requests(world)[method], label="request")
    role, sub = data.draw(caller(world, method, request), label="caller")
    before = await counts(mesh)
    try:
        response = await getattr(mesh.journeys, method)(
            request, metadata=mesh.metadata(role, sub), timeout=10
        )
        code = grpc.StatusCode.OK
    except grpc.aio.AioRpcError as error:
        code, response = error.code(), None
        assert code in ANSWERS, f"{method} answered {code.name}: {error.details()!r}"
        if code == grpc.StatusCode.UNAUTHENTICATED:
            assert not well_formed(role, sub), f"{method} refused {role} {sub!r}: {error.details()}"
    if code in WRITES_NOTHING:
        assert await counts(mesh) == before, f"{method} refused with {code.name} but wrote"
    if response is not None and method in ("CheckIn", "CheckOut"):
        world.tap_ids.append(request.tap_id)
        world.journey_ids.append(response.journey.id)


async def test_every_rpc_is_fuzzed() -> None:
    described = journey_pb2.DESCRIPTOR.services_by_name["JourneyService"].methods_by_name
    assert sorted(requests(World(["X"], [str(uuid.uuid4())]))) == sorted(described)


@FUZZ
@given(data=st.data())
async def test_fuzz_check_in(mesh, data) -> None:
    await check(mesh, data, "CheckIn")


@FUZZ
@given(data=st.data())
async def test_fuzz_check_out(mesh, data) -> None:
    await check(mesh, data, "CheckOut")


@FUZZ
@given(data=st.data())
async def test_fuzz_get_active_journey(mesh, data) -> None:
    await check(mesh, data, "GetActiveJourney")


@FUZZ
@given(data=st.data())
async def test_fuzz_get_journey(mesh, data) -> None:
    await check(mesh, data, "GetJourney")


@FUZZ
@given(data=st.data())
async def test_fuzz_list_journeys(mesh, data) -> None:
    await check(mesh, data, "ListJourneys")


@FUZZ
@given(data=st.data())
async def test_fuzz_sync_offline_taps(mesh, data) -> None:
    await check(mesh, data, "SyncOfflineTaps")
