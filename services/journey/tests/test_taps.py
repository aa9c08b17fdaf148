"""Check-in and check-out through the real services: what each tap holds, charges and
answers, and how journeys end (completed, same terminal, abandoned, incomplete)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial

import grpc
import psycopg
import pytest
from tiket.journey.v1 import journey_pb2
from tiket.user.v1 import user_pb2

from libs.events import outbox
from libs.money import from_money
from services.journey.tests.mesh import (
    active_trip,
    new_rider,
    sweeper_of,
    tap_in,
    tap_out,
    wallet,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_ride_a_to_e_holds_the_maximum_then_charges_the_fare(mesh):
    user_id, card = await new_rider(mesh, 150_000)
    entered = await tap_in(mesh, card)
    assert entered.open_gate
    assert from_money(entered.held_amount) == Decimal(12_000)
    assert from_money(entered.available_balance) == Decimal(138_000)
    assert entered.journey.status == journey_pb2.JOURNEY_STATUS_ACTIVE
    assert entered.journey.checkin_terminal_name == "Terminal Utara"
    assert "Rp 12.000" in entered.message
    assert await wallet(mesh, user_id) == (Decimal(150_000), Decimal(12_000), Decimal(138_000))

    left = await tap_out(mesh, card)
    assert left.open_gate
    assert left.journey.id == entered.journey.id
    assert left.journey.status == journey_pb2.JOURNEY_STATUS_COMPLETED
    assert left.journey.settlement == journey_pb2.SETTLEMENT_PAID
    assert left.journey.pricing == "fare"
    assert left.journey.HasField("duration_minutes")
    assert from_money(left.fare) == Decimal(12_000)
    assert from_money(left.remaining_balance) == Decimal(138_000)
    assert left.message == (
        "Perjalanan selesai dari Terminal Utara ke Terminal Pusat. Tarif: Rp 12.000. "
        "Sisa saldo: Rp 138.000."
    )
    assert await wallet(mesh, user_id) == (Decimal(138_000), 0, Decimal(138_000))

    async with await psycopg.AsyncConnection.connect(mesh.database_url("journey")) as conn:
        cur = await conn.execute(
            "SELECT event_type, body->'data' FROM outbox WHERE body->>'subject' = %s ORDER BY seq",
            (user_id,),
        )
        (entry_type, entry), (exit_type, exit_) = await cur.fetchall()
    assert (entry_type, exit_type) == ("journey.checked_in", "journey.checked_out")
    # What a rider notification needs (seed 004 §2.4's texts).
    assert entry["terminalName"] == "Terminal Utara" and entry["heldAmount"]["units"] == "12000"
    assert entry["availableBalance"]["units"] == "138000" and entry["checkinTime"]
    assert (exit_["originName"], exit_["destinationName"]) == ("Terminal Utara", "Terminal Pusat")
    assert exit_["fare"]["units"] == "12000" and exit_["remainingBalance"]["units"] == "138000"
    assert exit_["checkinTime"] and exit_["checkoutTime"] and "durationMinutes" in exit_


async def test_the_active_trip_entry_lives_from_check_in_to_check_out(mesh):
    user_id, card = await new_rider(mesh, 50_000)
    entered = await tap_in(mesh, card)
    async with sweeper_of(mesh, mesh.config) as reader:  # an app on the same Redis
        entry = await active_trip(reader, user_id)
        assert entry["journey_id"] == entered.journey.id and entry["card_id"] == card
        assert (entry["checkin_terminal"], Decimal(entry["expected_fare"])) == ("A", 12_000)
        assert entry["checkin_time"]
        await tap_out(mesh, card)
        assert await active_trip(reader, user_id) == {}  # status cleared


async def test_a_cheaper_trip_captures_its_fare_and_releases_the_rest(mesh):
    user_id, card = await new_rider(mesh, 50_000)
    await tap_in(mesh, card)
    left = await tap_out(mesh, card, "B", "B-EXIT-01")
    assert from_money(left.fare) == Decimal(5_000)
    assert await wallet(mesh, user_id) == (Decimal(45_000), 0, Decimal(45_000))


async def test_the_trip_is_priced_by_the_duration_trigger(mesh):
    _, card = await new_rider(mesh)
    start = datetime.now(UTC)
    await tap_in(mesh, card, tapped_at=start)
    left = await tap_out(mesh, card, tapped_at=start + timedelta(minutes=42, seconds=1))
    assert left.journey.duration_minutes == 43  # CEIL, seed 004


async def test_exit_at_the_entry_terminal_within_the_window_costs_the_minimum(mesh):
    user_id, card = await new_rider(mesh, 20_000)
    await tap_in(mesh, card)
    left = await tap_out(mesh, card, "A", "A-EXIT-01")
    assert left.journey.pricing == "same_terminal"
    assert from_money(left.fare) == mesh.config.same_terminal_fare
    assert (await wallet(mesh, user_id))[0] == 20_000 - mesh.config.same_terminal_fare


async def test_exit_at_the_entry_terminal_after_the_window_costs_the_held_fare(mesh):
    _, card = await new_rider(mesh, 20_000)
    await tap_in(mesh, card)
    later = datetime.now(UTC) + mesh.config.same_terminal_window + timedelta(seconds=1)
    left = await tap_out(mesh, card, "A", "A-EXIT-01", tapped_at=later)
    assert left.journey.pricing == "same_terminal_late"
    assert from_money(left.fare) == Decimal(12_000)


async def test_exit_without_entry_is_an_incomplete_journey_charged_the_maximum_to_it(mesh):
    user_id, card = await new_rider(mesh, 30_000)
    left = await tap_out(mesh, card, "B", "B-EXIT-01")
    assert left.journey.status == journey_pb2.JOURNEY_STATUS_INCOMPLETE
    assert left.journey.pricing == "no_entry_penalty"
    assert not left.journey.checkin_terminal_code
    assert from_money(left.fare) == Decimal(11_000)  # E -> B, the dearest fare to B
    assert await wallet(mesh, user_id) == (Decimal(19_000), 0, Decimal(19_000))


async def test_entry_while_active_abandons_the_old_journey_at_its_held_fare(mesh):
    user_id, card = await new_rider(mesh, 50_000)
    first = await tap_in(mesh, card)
    second = await tap_in(mesh, card, "D", "D-BI-01")
    assert second.abandoned_journey.id == first.journey.id
    assert second.abandoned_journey.status == journey_pb2.JOURNEY_STATUS_ABANDONED
    assert from_money(second.abandoned_journey.fare) == Decimal(12_000)
    assert from_money(second.held_amount) == Decimal(9_000)  # the dearest from D
    assert await wallet(mesh, user_id) == (Decimal(38_000), Decimal(9_000), Decimal(29_000))
    left = await tap_out(mesh, card, "D", "D-BI-01")  # bidirectional gates work both ways
    assert left.journey.id == second.journey.id


async def test_a_released_hold_is_charged_directly(mesh):
    user_id, card = await new_rider(mesh, 30_000)
    entered = await tap_in(mesh, card)
    await mesh.users.ReleaseHold(
        user_pb2.ReleaseHoldRequest(
            hold=user_pb2.HoldSelector(reference=entered.journey.hold_reference)
        ),
        metadata=mesh.metadata(),
    )
    left = await tap_out(mesh, card, "C", "C-EXIT-01")
    assert from_money(left.fare) == Decimal(7_000)
    assert await wallet(mesh, user_id) == (Decimal(23_000), 0, Decimal(23_000))


async def test_insufficient_balance_is_refused_and_the_refusal_is_the_taps_answer(mesh):
    user_id, card = await new_rider(mesh, 10_000)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await tap_in(mesh, card, tap_id=(tap := "6f1c1b2e-0d7a-4c1e-9a53-0c1d2e3f4a5b"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "insufficient balance" in refused.value.details()
    await mesh.users.TopUp(
        user_pb2.TopUpRequest(
            user_id=user_id, amount=from_money_input(10_000), idempotency_key="more"
        ),
        metadata=mesh.metadata(),
    )
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await tap_in(mesh, card, tap_id=tap)  # the same tap: the first answer
    assert again.value.details() == refused.value.details()
    entered = await tap_in(mesh, card)  # a new tap
    assert entered.open_gate


def from_money_input(amount: int):
    from services.journey.tests.mesh import idr

    return idr(amount)


async def test_tap_events_wake_the_relays_at_commit_not_at_their_poll(mesh):
    """Both services wake their relay after each commit that wrote an event
    (libs/events/outbox.py), rather than leaving it to the relays' 1 s poll: each tap commits
    an event in the user service (the hold) and one in the journey service, so it wakes the
    relays (all in this process) at least twice. Checked by the wake-ups, not by how soon
    the events are sent, which depends on how busy the machine is."""
    wakes = 0

    def woken() -> None:
        nonlocal wakes
        wakes += 1

    subjects = []
    outbox.add_waker(woken)
    try:
        for _ in range(5):
            user_id, card = await new_rider(mesh)
            for tap in (tap_in, tap_out):
                before = wakes
                await tap(mesh, card)
                assert wakes - before >= 2, tap.__name__
            subjects.append(user_id)
    finally:
        outbox.remove_waker(woken)
    for service, types in (
        ("journey", ["journey.checked_in", "journey.checked_out"]),
        ("user", ["wallet.hold_placed", "wallet.hold_captured"]),
    ):
        sent = partial(all_sent, mesh.database_url(service), subjects, types)
        await wait_until(sent, f"{service}'s events to be sent")


async def all_sent(url: str, subjects: list[str], types: list[str]) -> bool:
    """Whether the riders' events of these types are all written and sent."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "SELECT count(*), count(sent_at) FROM outbox"
            " WHERE body->>'subject' = ANY(%s) AND event_type = ANY(%s)",
            (subjects, types),
        )
        row = await cur.fetchone()
    return row is not None and row[0] >= 2 * len(subjects) and row[0] == row[1]
