"""Anti-passback: a second entry tap of a card at the terminal it just entered, or a second
exit tap where it just left, within the window (measured on tapped_at) is the same passage
again — a rider tapping twice, or a gate retrying with a new tap_id after UNAVAILABLE when
the first attempt succeeded. It is refused with the journey it repeats and charges nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import pytest
import pytest_asyncio
from tiket.fare.v1 import fare_pb2, fare_pb2_grpc
from tiket.journey.v1 import journey_pb2

from libs.money import from_money
from services.journey.tests.mesh import new_rider, refusal_of, tap_in, tap_out, wallet

pytestmark = pytest.mark.asyncio(loop_scope="module")
SECOND_GATE = "A-ENTRY-02"


@pytest_asyncio.fixture(scope="module", loop_scope="module", autouse=True)
async def second_entry_gate(mesh) -> None:
    """A second entry gate at A, registered before any tap fills the gate cache."""
    await fare_pb2_grpc.FareServiceStub(mesh.channels["fare"]).RegisterGate(
        fare_pb2.RegisterGateRequest(
            terminal_code="A", gate_code=SECOND_GATE, type=fare_pb2.GATE_TYPE_ENTRY
        ),
        metadata=mesh.metadata(),
    )


async def refused(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
    return err.value


async def test_a_second_entry_within_the_window_is_already_checked_in(mesh):
    user_id, card = await new_rider(mesh, 50_000)
    start = datetime.now(UTC)
    first = await tap_in(mesh, card, tapped_at=start)
    again = "2b7e7a3c-6a8e-4f55-9d59-5d1b8f1f7a11"
    error = await refused(tap_in(mesh, card, tap_id=again, tapped_at=start + timedelta(seconds=20)))
    reason, journeys = refusal_of(error)
    assert reason == "ALREADY_CHECKED_IN"
    assert [j.id for j in journeys] == [first.journey.id]
    assert journeys[0].status == journey_pb2.JOURNEY_STATUS_ACTIVE
    assert await wallet(mesh, user_id) == (Decimal(50_000), Decimal(12_000), Decimal(38_000))
    # The same second tap again (the gate retries it): the same answer, still nothing more.
    retried = await refused(
        tap_in(mesh, card, tap_id=again, tapped_at=start + timedelta(seconds=20))
    )
    assert retried.details() == error.details() and refusal_of(retried) == (reason, journeys)
    left = await tap_out(mesh, card, tapped_at=start + timedelta(minutes=30))
    assert left.journey.id == first.journey.id
    assert await wallet(mesh, user_id) == (Decimal(38_000), 0, Decimal(38_000))


async def test_another_gate_of_the_terminal_counts_and_order_by_tapped_at(mesh):
    """The window is on the card's timeline: a tap sent late, placed before the check-in it
    repeats, is refused as well."""
    _, card = await new_rider(mesh, 50_000)
    start = datetime.now(UTC)
    first = await tap_in(mesh, card, tapped_at=start)
    error = await refused(
        tap_in(mesh, card, "A", SECOND_GATE, tapped_at=start - timedelta(seconds=5))
    )
    assert refusal_of(error)[0] == "ALREADY_CHECKED_IN"
    assert refusal_of(error)[1][0].id == first.journey.id
    await tap_out(mesh, card, tapped_at=start + timedelta(minutes=30))


async def test_an_entry_after_the_window_abandons_the_journey_as_before(mesh):
    user_id, card = await new_rider(mesh, 50_000)
    start = datetime.now(UTC)
    first = await tap_in(mesh, card, tapped_at=start)
    later = start + mesh.config.anti_passback + timedelta(seconds=1)
    second = await tap_in(mesh, card, tapped_at=later)
    assert second.abandoned_journey.id == first.journey.id
    await tap_out(mesh, card, tapped_at=later + timedelta(minutes=30))
    assert (await wallet(mesh, user_id))[0] == Decimal(50_000 - 12_000 - 12_000)


async def test_two_entry_taps_at_once_start_one_journey(mesh):
    user_id, card = await new_rider(mesh, 50_000)
    answers = await asyncio.gather(
        tap_in(mesh, card), tap_in(mesh, card, "A", SECOND_GATE), return_exceptions=True
    )
    entered = [a for a in answers if isinstance(a, journey_pb2.CheckInResponse)]
    errors = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert len(entered) == 1 and len(errors) == 1, answers
    assert refusal_of(errors[0]) == ("ALREADY_CHECKED_IN", [entered[0].journey])
    assert await wallet(mesh, user_id) == (Decimal(50_000), Decimal(12_000), Decimal(38_000))
    await tap_out(mesh, card)


async def test_a_second_exit_within_the_window_is_already_checked_out(mesh):
    user_id, card = await new_rider(mesh, 50_000)
    start = datetime.now(UTC)
    await tap_in(mesh, card, tapped_at=start)
    left = await tap_out(mesh, card, tapped_at=start + timedelta(minutes=30))
    error = await refused(tap_out(mesh, card, tapped_at=start + timedelta(minutes=30, seconds=8)))
    reason, journeys = refusal_of(error)
    assert reason == "ALREADY_CHECKED_OUT"
    assert journeys == [left.journey]
    assert await wallet(mesh, user_id) == (Decimal(38_000), 0, Decimal(38_000))  # no penalty


async def test_a_second_exit_without_entry_costs_one_penalty(mesh):
    user_id, card = await new_rider(mesh, 30_000)
    start = datetime.now(UTC)
    left = await tap_out(mesh, card, "B", "B-EXIT-01", tapped_at=start)
    assert left.journey.status == journey_pb2.JOURNEY_STATUS_INCOMPLETE
    error = await refused(tap_out(mesh, card, "B", "B-EXIT-01", tapped_at=start))
    assert refusal_of(error) == ("ALREADY_CHECKED_OUT", [left.journey])
    assert await wallet(mesh, user_id) == (Decimal(19_000), 0, Decimal(19_000))


async def test_an_exit_elsewhere_or_after_the_window_is_a_new_exit(mesh):
    user_id, card = await new_rider(mesh, 50_000)
    start = datetime.now(UTC)
    await tap_out(mesh, card, "B", "B-EXIT-01", tapped_at=start)  # 11 000
    elsewhere = await tap_out(mesh, card, "C", "C-EXIT-01", tapped_at=start)  # 10 000
    later = start + mesh.config.anti_passback + timedelta(seconds=1)
    again = await tap_out(mesh, card, "B", "B-EXIT-01", tapped_at=later)  # 11 000
    assert from_money(elsewhere.fare) == Decimal(10_000) and from_money(again.fare) == 11_000
    assert (await wallet(mesh, user_id))[0] == Decimal(50_000 - 32_000)
