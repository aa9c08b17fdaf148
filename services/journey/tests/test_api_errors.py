"""Bad taps get the documented status, name the field, and write nothing; tokens reach only
what their role allows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from tiket.journey.v1 import journey_pb2

from libs.auth import Role
from services.journey.tests.mesh import counts, new_rider, tap_in, tap_out, tap_request

pytestmark = pytest.mark.asyncio(loop_scope="module")
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def details_of(error: grpc.aio.AioRpcError):
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw, f"{error.code()} without details"
    status = status_pb2.Status.FromString(raw)
    kinds = (
        error_details_pb2.BadRequest,
        error_details_pb2.ErrorInfo,
        error_details_pb2.ResourceInfo,
    )
    for kind in kinds:
        detail = kind()
        if status.details[0].Unpack(detail):
            return detail
    raise AssertionError("unknown detail")


async def refused(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("tap_id", {"tap_id": "not-a-uuid"}),
        ("card_id", {"card_id": "card 1"}),
        ("terminal_code", {"terminal_code": "a1"}),
        ("gate_code", {"gate_code": "-BAD"}),
    ],
)
async def test_malformed_fields_are_invalid_argument_naming_the_field(mesh, field, change):
    _, card = await new_rider(mesh)
    before = await counts(mesh)
    request = tap_request("in", card, "A", "A-ENTRY-01")
    for name, value in change.items():
        setattr(request, name, value)
    error = await refused(mesh.journeys.CheckIn(request, metadata=mesh.metadata(Role.SERVICE)))
    assert error.code() == INVALID
    assert [v.field for v in details_of(error).field_violations] == [field]
    assert await counts(mesh) == before


async def test_a_tap_far_in_the_future_is_invalid_and_writes_nothing(mesh):
    _, card = await new_rider(mesh)
    before = await counts(mesh)
    future = datetime.now(UTC) + timedelta(days=1)
    error = await refused(tap_in(mesh, card, tapped_at=future))
    assert error.code() == INVALID
    assert [v.field for v in details_of(error).field_violations] == ["tapped_at"]
    assert await counts(mesh) == before


@pytest.mark.parametrize(
    ("card", "terminal", "gate", "code", "reason"),
    [
        ("NOSUCHCARD01", "A", "A-ENTRY-01", grpc.StatusCode.NOT_FOUND, ("card", "NOSUCHCARD01")),
        (None, "A", "A-ENTRY-99", grpc.StatusCode.NOT_FOUND, ("gate", "A/A-ENTRY-99")),
        (None, "Z", "Z-ENTRY-01", grpc.StatusCode.NOT_FOUND, ("terminal", "Z")),
        (None, "A", "A-EXIT-01", grpc.StatusCode.FAILED_PRECONDITION, "WRONG_GATE_TYPE"),
    ],
)
async def test_unknown_card_gate_terminal_and_exit_gates_refuse_entry(
    mesh, card, terminal, gate, code, reason
):
    """A NOT_FOUND says what was not found (google.rpc.ResourceInfo): a gate tells a rider's
    unknown card from its own missing registration."""
    _, rider = await new_rider(mesh)
    before = await counts(mesh)
    error = await refused(tap_in(mesh, card or rider, terminal, gate))
    assert error.code() == code
    if code is grpc.StatusCode.NOT_FOUND:
        info = details_of(error)
        assert (info.resource_type, info.resource_name) == reason
    else:
        assert details_of(error).reason == reason
    assert await counts(mesh) == before


async def test_an_entry_gate_refuses_exit(mesh):
    _, card = await new_rider(mesh)
    before = await counts(mesh)
    error = await refused(tap_out(mesh, card, "E", "E-ENTRY-01"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details_of(error).reason == "WRONG_GATE_TYPE"
    assert await counts(mesh) == before


async def test_a_gate_in_maintenance_refuses_taps_without_a_trace(mesh):
    from tiket.fare.v1 import fare_pb2, fare_pb2_grpc

    fares = fare_pb2_grpc.FareServiceStub(mesh.channels["fare"])
    # A terminal of its own, so no cached gate list of another test hides the new gate.
    await fares.CreateTerminal(
        fare_pb2.CreateTerminalRequest(code="MNT", name="Terminal Perawatan"),
        metadata=mesh.metadata(),
    )
    await fares.RegisterGate(
        fare_pb2.RegisterGateRequest(
            terminal_code="MNT", gate_code="MNT-BI-01", type=fare_pb2.GATE_TYPE_BIDIRECTIONAL
        ),
        metadata=mesh.metadata(),
    )
    await fares.ChangeGateStatus(
        fare_pb2.ChangeGateStatusRequest(
            terminal_code="MNT",
            gate_code="MNT-BI-01",
            status=fare_pb2.GATE_STATUS_MAINTENANCE,
            reason="turnstile jammed",
        ),
        metadata=mesh.metadata(),
    )
    _, card = await new_rider(mesh)
    before = await counts(mesh)
    for tap in (tap_in, tap_out):
        error = await refused(tap(mesh, card, "MNT", "MNT-BI-01"))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert details_of(error).reason == "GATE_OUT_OF_SERVICE"
    assert await counts(mesh) == before


async def test_a_blocked_card_is_refused_without_a_trace(mesh):
    from tiket.user.v1 import user_pb2

    user_id, card = await new_rider(mesh)
    await mesh.users.ChangeUserStatus(
        user_pb2.ChangeUserStatusRequest(
            user_id=user_id, status=user_pb2.USER_STATUS_BLOCKED, reason="lost card"
        ),
        metadata=mesh.metadata(),
    )
    before = await counts(mesh)
    error = await refused(tap_in(mesh, card))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details_of(error).reason == "USER_NOT_ACTIVE"
    assert await counts(mesh) == before


async def test_a_tap_id_reused_for_another_tap_is_already_exists(mesh):
    _, card = await new_rider(mesh)
    _, other = await new_rider(mesh)
    tap_id = str(uuid.uuid4())
    await tap_in(mesh, card, tap_id=tap_id)
    error = await refused(tap_in(mesh, other, tap_id=tap_id))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    error = await refused(tap_out(mesh, card, tap_id=tap_id))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_a_gate_token_taps_only_for_its_own_gate(mesh):
    _, card = await new_rider(mesh)
    request = tap_request("in", card, "A", "A-ENTRY-01")
    for role, sub in (
        (Role.GATE, "B/B-ENTRY-01"),  # another gate
        (Role.GATE, "B/A-ENTRY-01"),  # the same gate code at another terminal
        (Role.USER, str(uuid.uuid4())),
        (Role.OPERATOR, "ops"),
    ):
        error = await refused(mesh.journeys.CheckIn(request, metadata=mesh.metadata(role, sub)))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, (role, sub)
    error = await refused(mesh.journeys.CheckIn(request))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    entered = await mesh.journeys.CheckIn(request, metadata=mesh.metadata(Role.SERVICE, "tests"))
    assert entered.open_gate


async def test_riders_read_only_their_own_journeys_operators_read_all(mesh):
    user_id, card = await new_rider(mesh)
    other_id, _ = await new_rider(mesh)
    entered = await tap_in(mesh, card)
    mine = mesh.metadata(Role.USER, user_id)
    theirs = mesh.metadata(Role.USER, other_id)
    journey_id = entered.journey.id

    got = await mesh.journeys.GetJourney(
        journey_pb2.GetJourneyRequest(journey_id=journey_id), metadata=mine
    )
    assert got.id == journey_id
    for request in (
        journey_pb2.GetJourneyRequest(journey_id=journey_id),
        journey_pb2.GetJourneyRequest(journey_id=str(uuid.uuid4())),
    ):
        error = await refused(mesh.journeys.GetJourney(request, metadata=theirs))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    error = await refused(
        mesh.journeys.GetJourney(
            journey_pb2.GetJourneyRequest(journey_id=str(uuid.uuid4())), metadata=mesh.metadata()
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND

    active = await mesh.journeys.GetActiveJourney(
        journey_pb2.GetActiveJourneyRequest(user_id=user_id), metadata=mine
    )
    assert active.id == journey_id
    by_card = await mesh.journeys.GetActiveJourney(
        journey_pb2.GetActiveJourneyRequest(card_id=card), metadata=mesh.metadata(Role.OPERATOR)
    )
    assert by_card.id == journey_id
    for request in (
        journey_pb2.GetActiveJourneyRequest(user_id=user_id),
        journey_pb2.GetActiveJourneyRequest(card_id=card),
    ):
        error = await refused(mesh.journeys.GetActiveJourney(request, metadata=theirs))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    error = await refused(
        mesh.journeys.GetActiveJourney(
            journey_pb2.GetActiveJourneyRequest(user_id=other_id), metadata=theirs
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND

    listed = await mesh.journeys.ListJourneys(
        journey_pb2.ListJourneysRequest(user_id=user_id), metadata=mine
    )
    assert [j.id for j in listed.journeys] == [journey_id]
    error = await refused(
        mesh.journeys.ListJourneys(journey_pb2.ListJourneysRequest(), metadata=mine)
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_operators_list_by_terminal_and_time_range_in_pages(mesh):
    start = datetime.now(UTC)
    ids = []
    for _ in range(3):
        _, card = await new_rider(mesh)
        ids.append((await tap_in(mesh, card, "C", "C-ENTRY-01")).journey.id)
    _, elsewhere = await new_rider(mesh)
    await tap_in(mesh, elsewhere, "B", "B-ENTRY-01")
    request = journey_pb2.ListJourneysRequest(terminal_code="C", page_size=2)
    request.started_from.FromDatetime(start)
    first = await mesh.journeys.ListJourneys(request, metadata=mesh.metadata(Role.OPERATOR))
    request.page_token = first.next_page_token
    rest = await mesh.journeys.ListJourneys(request, metadata=mesh.metadata(Role.OPERATOR))
    assert [j.id for j in [*first.journeys, *rest.journeys]] == ids[::-1]
    assert rest.next_page_token == ""
    bad = journey_pb2.ListJourneysRequest(page_token="garbage")
    error = await refused(mesh.journeys.ListJourneys(bad, metadata=mesh.metadata()))
    assert error.code() == INVALID
