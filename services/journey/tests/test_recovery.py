"""Idempotency and the fail-safe: the same tap many times takes effect once; an attempt that
died half-way is finished by its retry or undone by the sweeper; journeys left open are
closed after the maximum trip time."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import psycopg
import pytest
from tiket.journey.v1 import journey_pb2
from tiket.user.v1 import user_pb2

from libs.auth import Role
from libs.errors import FailedPrecondition, Unavailable
from services.journey import domain, store, tap_store
from services.journey.domain import JourneyStatus, TapKind, TapRequest
from services.journey.tests.mesh import (
    active_trip,
    crashed_check_in,
    idr,
    journey_db,
    journeys_of,
    new_rider,
    offline_tap,
    sweeper_of,
    sync,
    tap_in,
    tap_out,
    tap_request,
    wallet,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def holds_of(mesh, user_id: str) -> list[tuple[str, str]]:
    async with await psycopg.AsyncConnection.connect(mesh.database_url("user")) as conn:
        cur = await conn.execute(
            "SELECT reference, status::text FROM holds WHERE user_id = %s", (user_id,)
        )
        return await cur.fetchall()


async def test_the_same_tap_five_times_at_once_makes_one_journey_one_hold_one_charge(mesh):
    user_id, card = await new_rider(mesh, 50_000)
    request = tap_request("in", card, "A", "A-ENTRY-01")
    md = mesh.metadata(Role.GATE, "A/A-ENTRY-01")
    entries = await asyncio.gather(*(mesh.journeys.CheckIn(request, metadata=md) for _ in range(5)))
    assert len({e.SerializeToString() for e in entries}) == 1
    exit_request = tap_request("out", card, "E", "E-EXIT-01")
    md = mesh.metadata(Role.GATE, "E/E-EXIT-01")
    exits = await asyncio.gather(
        *(mesh.journeys.CheckOut(exit_request, metadata=md) for _ in range(5))
    )
    assert len({e.SerializeToString() for e in exits}) == 1
    assert len(await holds_of(mesh, user_id)) == 1
    assert await wallet(mesh, user_id) == (Decimal(38_000), 0, Decimal(38_000))
    again = await mesh.journeys.CheckIn(request, metadata=mesh.metadata(Role.SERVICE))
    assert again == entries[0]  # later still the first answer, though the journey is over


async def test_a_retry_adopts_the_hold_of_an_attempt_that_died_before_the_journey(mesh):
    user_id, card = await new_rider(mesh, 50_000)
    tap = await crashed_check_in(mesh, user_id, card)
    entered = await tap_in(mesh, card, tap_id=str(tap.tap_id))
    assert entered.journey.id == str(tap.journey_id)
    assert await holds_of(mesh, user_id) == [(domain.hold_reference(tap.journey_id), "held")]
    assert await wallet(mesh, user_id) == (Decimal(50_000), Decimal(12_000), Decimal(38_000))


async def test_a_retry_refused_as_a_repeat_releases_the_hold_its_first_attempt_placed(mesh):
    """The first attempt placed the hold and died; meanwhile the card entered at another gate
    at that terminal. The retry is refused as a repeat of that entry (ALREADY_CHECKED_IN), and
    the hold its first attempt placed used to stay held for no journey: Rp 12.000 of the
    rider's balance blocked for hours (the money audit of test_concurrency caught it on a
    busy machine, about one run in ten)."""
    user_id, card = await new_rider(mesh, 50_000)
    tap = await crashed_check_in(mesh, user_id, card)
    entered = await tap_in(mesh, card)  # another tap at A: the journey it starts is active
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await tap_in(mesh, card, tap_id=str(tap.tap_id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "ALREADY_CHECKED_IN" in str(err.value.trailing_metadata())
    assert sorted(await holds_of(mesh, user_id)) == sorted(
        [
            (domain.hold_reference(uuid.UUID(entered.journey.id)), "held"),
            (domain.hold_reference(tap.journey_id), "released"),
        ]
    )
    assert await wallet(mesh, user_id) == (Decimal(50_000), Decimal(12_000), Decimal(38_000))


async def test_the_sweeper_releases_the_hold_of_an_attempt_nobody_retried(mesh):
    user_id, card = await new_rider(mesh, 50_000)
    tap = await crashed_check_in(mesh, user_id, card)
    async with sweeper_of(mesh, replace(mesh.config, orphan_after=timedelta(0))) as sweeper:
        assert await sweeper.expire_taps() >= 1
    assert await wallet(mesh, user_id) == (Decimal(50_000), 0, Decimal(50_000))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await tap_in(mesh, card, tap_id=str(tap.tap_id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "tap again" in err.value.details()


async def test_a_release_that_failed_after_the_tap_expired_is_retried(mesh):
    """The sweeper answers an orphan tap TAP_EXPIRED first, then releases its hold; when the
    wallet is down just then, the release stays owed and a later round makes it."""
    user_id, card = await new_rider(mesh, 50_000)
    await crashed_check_in(mesh, user_id, card)
    async with sweeper_of(mesh, replace(mesh.config, orphan_after=timedelta(0))) as sweeper:
        stub = sweeper.app.wallet.stub
        release = stub.ReleaseHold

        async def wallet_down(request, **kwargs):
            raise Unavailable("the wallet (user service) is unavailable")

        stub.ReleaseHold = wallet_down
        await sweeper.expire_taps()
        assert await wallet(mesh, user_id) == (Decimal(50_000), Decimal(12_000), Decimal(38_000))
        stub.ReleaseHold = release
        assert await sweeper.release_owed() >= 1
        assert await sweeper.release_owed() == 0  # nothing owed any more
    assert await wallet(mesh, user_id) == (Decimal(50_000), 0, Decimal(50_000))


async def test_journeys_open_past_the_maximum_trip_time_are_abandoned(mesh):
    user_id, card = await new_rider(mesh, 50_000)
    entered = await tap_in(mesh, card, "B", "B-ENTRY-01")
    async with sweeper_of(mesh, replace(mesh.config, max_trip=timedelta(0))) as sweeper:
        assert (await active_trip(sweeper, user_id))["journey_id"] == entered.journey.id
        assert await sweeper.close_overdue() >= 1
        assert await active_trip(sweeper, user_id) == {}  # status cleared
    conn = await journey_db(mesh)
    async with conn:
        journey = await store.journey(conn, uuid.UUID(entered.journey.id))
    assert journey is not None
    assert (journey.status, journey.settlement) == (JourneyStatus.ABANDONED, "paid")
    assert journey.fare_charged == Decimal(11_000)  # the dearest from B, as held
    assert await wallet(mesh, user_id) == (Decimal(39_000), 0, Decimal(39_000))
    left = await tap_out(mesh, card)  # the rider reappears: an exit without entry
    assert left.journey.status == journey_pb2.JOURNEY_STATUS_INCOMPLETE


async def test_a_later_offline_tap_does_not_reprice_an_exit_after_the_sweeper(mesh):
    """The sweeper abandoned the journey, the rider's late exit was an incomplete journey:
    an offline entry synced afterwards replays those taps and must come to the same (it
    completed the abandoned journey and cancelled the incomplete one, refunding Rp 15.000)."""
    user_id, card = await new_rider(mesh, 50_000)
    start = datetime.now(UTC)
    await tap_in(mesh, card, "B", "B-ENTRY-01")
    async with sweeper_of(mesh, replace(mesh.config, max_trip=timedelta(0))) as sweeper:
        assert await sweeper.close_overdue() >= 1
    late = start + mesh.config.max_trip + timedelta(minutes=30)  # the gate's clock
    left = await tap_out(mesh, card, "C", "C-EXIT-01", tapped_at=late)
    assert (left.journey.status, left.fare.units) == (journey_pb2.JOURNEY_STATUS_INCOMPLETE, 10_000)
    before = await journeys_of(mesh, user_id)
    synced = await sync(
        mesh, "C", "C-ENTRY-01", [offline_tap("in", card, late + timedelta(minutes=20))]
    )
    (result,) = synced.results
    assert result.outcome == journey_pb2.TAP_OUTCOME_APPLIED, result.reason
    assert (await journeys_of(mesh, user_id))[: len(before)] == before
    assert await wallet(mesh, user_id) == (Decimal(29_000), 0, Decimal(29_000))


@pytest.mark.parametrize("linked", [True, False], ids=["tap-names-journey", "journey-names-tap"])
async def test_a_check_out_that_died_after_its_claim_is_settled_and_answered(mesh, linked):
    user_id, card = await new_rider(mesh, 50_000)
    entered = await tap_in(mesh, card)
    exit_tap = TapRequest(TapKind.CHECKOUT, uuid.uuid4(), card, "C", "C-EXIT-01", datetime.now(UTC))
    conn = await journey_db(mesh)
    async with conn:  # what a check-out had written when its process died
        active = await store.active_journey(conn, uuid.UUID(user_id))
        assert active is not None and str(active.id) == entered.journey.id
        await tap_store.record_tap(conn, exit_tap, active.user_id, None)  # pending
        closing = domain.completing(
            active.entry, exit_tap, datetime.now(UTC), "Terminal Timur", Decimal(7_000), mesh.config
        )
        await store.claim(conn, active.id, closing)
        if linked:
            await tap_store.link_tap(conn, exit_tap.tap_id, active.id)
    orphans = replace(mesh.config, settle_after=timedelta(0), orphan_after=timedelta(0))
    async with sweeper_of(mesh, orphans) as sweeper:
        assert await sweeper.expire_taps() == 0  # the tap closed a journey: not an orphan
        assert await sweeper.settle_unfinished() >= 1
    assert await wallet(mesh, user_id) == (Decimal(43_000), 0, Decimal(43_000))
    answer = await tap_out(
        mesh, card, "C", "C-EXIT-01", tap_id=str(exit_tap.tap_id), tapped_at=exit_tap.tapped_at
    )
    assert answer.journey.id == entered.journey.id
    assert answer.remaining_balance.units == 43_000


async def test_a_check_out_refused_by_the_wallet_is_undone_and_the_gate_stays_shut(mesh):
    user_id, card = await new_rider(mesh, 12_000)
    entered = await tap_in(mesh, card)
    await mesh.users.ReleaseHold(  # staff freed the hold: the exit must charge directly …
        user_pb2.ReleaseHoldRequest(
            hold=user_pb2.HoldSelector(reference=entered.journey.hold_reference)
        ),
        metadata=mesh.metadata(),
    )
    await mesh.users.Charge(  # … and the rider spent the money meanwhile
        user_pb2.ChargeRequest(
            user_id=user_id, amount=idr(10_000), idempotency_key="shop", reference="shop-1"
        ),
        metadata=mesh.metadata(),
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await tap_out(mesh, card)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "insufficient balance" in err.value.details()
    conn = await journey_db(mesh)
    async with conn:
        active = await store.active_journey(conn, uuid.UUID(user_id))
    assert active is not None and str(active.id) == entered.journey.id  # still travelling
    await mesh.users.TopUp(
        user_pb2.TopUpRequest(user_id=user_id, amount=idr(20_000), idempotency_key="more"),
        metadata=mesh.metadata(),
    )
    left = await tap_out(mesh, card)
    assert left.fare.units == 12_000
    assert await wallet(mesh, user_id) == (Decimal(10_000), 0, Decimal(10_000))


async def test_a_retry_gets_the_first_answer_even_when_the_card_was_blocked_since(mesh):
    user_id, card = await new_rider(mesh, 50_000)
    tap_id = str(uuid.uuid4())
    entered = await tap_in(mesh, card, tap_id=tap_id)
    await mesh.users.ChangeUserStatus(
        user_pb2.ChangeUserStatusRequest(
            user_id=user_id, status=user_pb2.USER_STATUS_BLOCKED, reason="lost card"
        ),
        metadata=mesh.metadata(),
    )
    retry = TapRequest(TapKind.CHECKIN, uuid.UUID(tap_id), card, "A", "A-ENTRY-01", None)
    async with sweeper_of(mesh, mesh.config) as replica:  # fresh caches: it asks the wallet
        assert await replica.app.check_in(retry) == entered
        # A new tap is refused (at another terminal: at A it would repeat the check-in,
        # refused as ALREADY_CHECKED_IN).
        elsewhere = replace(retry, tap_id=uuid.uuid4(), terminal_code="D", gate_code="D-BI-01")
        with pytest.raises(FailedPrecondition) as refused:
            await replica.app.check_in(elsewhere)
    assert refused.value.reason == "USER_NOT_ACTIVE"
