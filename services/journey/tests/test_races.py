"""Races between the attempts of one tap, the sweeper and the wallet, each forced into its
worst order — by a lock held from a test connection and a hook on the wallet or fare client
that lets the other side go first — never by sleeping and hoping."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import grpc
import psycopg
import pytest
from psycopg import errors
from tiket.user.v1 import user_pb2

from libs.money import from_money
from services.journey import tap_store
from services.journey.domain import TapKind, TapRequest
from services.journey.tests.mesh import (
    crashed_check_in,
    crashed_check_out,
    idr,
    journey_db,
    new_rider,
    sweeper_of,
    tap_in,
    tap_out,
    wallet,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def waiting_on_a_lock(url: str, besides: int) -> bool:
    """Whether a backend of the database (other than `besides`) waits on a lock."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            """SELECT count(*) FROM pg_stat_activity
                WHERE datname = current_database() AND wait_event_type = 'Lock'
                  AND pid <> %s""",
            (besides,),
        )
        row = await cur.fetchone()
    return row is not None and row[0] > 0


async def test_a_capture_that_commits_behind_an_expired_answer_is_not_charged_again(mesh):
    """The first attempt of a check-out sends CaptureHold just before the hold expires, and
    its statement is held up; the retry meets HOLD_EXPIRED and releases the hold, but the
    first capture commits before that release: the release answers HOLD_ALREADY_CAPTURED.
    The capture is the journey's payment — a direct charge on top would take the fare
    twice."""
    user_id, card = await new_rider(mesh, 50_000)
    entered = await tap_in(mesh, card)
    retry = await crashed_check_out(mesh, user_id, card, "E", "E-EXIT-01", 12_000)
    reference = entered.journey.hold_reference
    user_url = mesh.database_url("user")
    async with (
        await psycopg.AsyncConnection.connect(user_url, autocommit=True) as locker,
        sweeper_of(mesh, mesh.config) as replica,
    ):
        # The first capture reads the clock, then waits for the ledger behind this lock.
        await locker.execute("BEGIN")
        await locker.execute("LOCK TABLE ledger_entries IN SHARE MODE")
        first = asyncio.ensure_future(
            mesh.users.CaptureHold(
                user_pb2.CaptureHoldRequest(
                    hold=user_pb2.HoldSelector(reference=reference), final_amount=idr(12_000)
                ),
                metadata=mesh.metadata(),
            )
        )
        await wait_until(
            lambda: waiting_on_a_lock(user_url, locker.info.backend_pid), "the first capture"
        )
        async with await psycopg.AsyncConnection.connect(user_url, autocommit=True) as clock:
            await clock.execute(  # the hold's time runs out after the capture read the clock
                "UPDATE holds SET expires_at = clock_timestamp() WHERE reference = %s",
                (reference,),
            )
        release = replica.app.wallet.stub.ReleaseHold

        async def release_once_captured(request, **kwargs):
            await locker.execute("COMMIT")  # the first capture goes on, and commits
            await first
            return await release(request, **kwargs)

        replica.app.wallet.stub.ReleaseHold = release_once_captured
        answer = await replica.app.check_out(retry)
    assert from_money(answer.fare) == Decimal(12_000)
    assert from_money(answer.remaining_balance) == Decimal(38_000)
    assert await wallet(mesh, user_id) == (Decimal(38_000), 0, Decimal(38_000))


async def test_the_orphan_sweeper_leaves_the_hold_of_a_tap_its_retry_finished(mesh, monkeypatch):
    """The sweeper lists a check-in tap pending for a minute; the gate's retry of that tap
    lands just then, adopts the hold and starts the journey. The sweeper must not release
    the hold of the journey now active."""
    user_id, card = await new_rider(mesh, 50_000)
    tap = await crashed_check_in(mesh, user_id, card)
    listed = tap_store.stale_taps
    retried = []

    async def listed_then_retried(conn, older_than, limit):
        stale = await listed(conn, older_than, limit)
        retried.append(await tap_in(mesh, card, tap_id=str(tap.tap_id)))
        return stale

    monkeypatch.setattr(tap_store, "stale_taps", listed_then_retried)
    async with sweeper_of(mesh, replace(mesh.config, orphan_after=timedelta(0))) as sweeper:
        await sweeper.expire_taps()
    assert retried[0].journey.id == str(tap.journey_id)
    assert await wallet(mesh, user_id) == (Decimal(50_000), Decimal(12_000), Decimal(38_000))
    left = await tap_out(mesh, card)
    assert from_money(left.fare) == Decimal(12_000)
    assert await wallet(mesh, user_id) == (Decimal(38_000), 0, Decimal(38_000))


async def test_a_check_out_the_sweeper_paid_while_it_was_refused_answers_paid(mesh):
    """The live check-out's direct charge is refused (balance short); before it can undo the
    closing, the rider tops up and the sweeper settles that closing as paid. The live
    attempt must answer what was stored — paid — not the refusal: a refused rider taps
    again, and that exit without an entry would cost the penalty on top."""
    user_id, card = await new_rider(mesh, 12_000)
    entered = await tap_in(mesh, card)
    md = mesh.metadata()
    await mesh.users.ReleaseHold(  # staff freed the hold: the exit must charge directly …
        user_pb2.ReleaseHoldRequest(
            hold=user_pb2.HoldSelector(reference=entered.journey.hold_reference)
        ),
        metadata=md,
    )
    await mesh.users.Charge(  # … and the rider spent the money meanwhile
        user_pb2.ChargeRequest(
            user_id=user_id, amount=idr(10_000), idempotency_key="shop", reference="shop-1"
        ),
        metadata=md,
    )
    retry = await crashed_check_out(mesh, user_id, card, "E", "E-EXIT-01", 12_000)
    settling = replace(mesh.config, settle_after=timedelta(0))
    async with sweeper_of(mesh, mesh.config) as live, sweeper_of(mesh, settling) as sweeper:
        charge = live.app.wallet.stub.Charge

        async def refused_then_settled_elsewhere(request, **kwargs):
            try:
                return await charge(request, **kwargs)
            except grpc.aio.AioRpcError:
                await mesh.users.TopUp(
                    user_pb2.TopUpRequest(
                        user_id=user_id, amount=idr(20_000), idempotency_key="more"
                    ),
                    metadata=md,
                )
                assert await sweeper.settle_unfinished() >= 1
                raise

        live.app.wallet.stub.Charge = refused_then_settled_elsewhere
        answer = await live.app.check_out(retry)
    assert answer.journey.id == entered.journey.id
    assert from_money(answer.fare) == Decimal(12_000)
    assert await wallet(mesh, user_id) == (Decimal(10_000), 0, Decimal(10_000))


@pytest.mark.parametrize("entered", [True, False], ids=["fare", "no-entry-penalty"])
async def test_the_slow_check_out_prices_the_trip_before_it_locks_anything(mesh, entered):
    """Without the active_trip hint a check-out locks the rider's journey in a transaction:
    the fare service is asked before, never while a row lock and a pooled connection wait
    on it (a slow fare service would stall every exit of the rider and drain the pool)."""
    user_id, card = await new_rider(mesh, 50_000)
    if entered:
        await tap_in(mesh, card)
    no_hint = replace(mesh.config, active_trip_cache=False)
    async with sweeper_of(mesh, no_hint) as replica:
        pool, fares = replica.app.pool, replica.app.fares
        seen: list[tuple[int, bool]] = []

        def observed(call):
            async def priced(*args):
                stats = pool.get_stats()
                in_use = stats["pool_size"] - stats["pool_available"]
                seen.append((in_use, await journey_locked(mesh, user_id)))
                return await call(*args)

            return priced

        fares.fare = observed(fares.fare)
        fares.max_fare_to = observed(fares.max_fare_to)
        exit_tap = TapRequest(TapKind.CHECKOUT, uuid.uuid4(), card, "E", "E-EXIT-01", None)
        await replica.app.check_out(exit_tap)
    assert seen and all(s == (0, False) for s in seen), seen


async def journey_locked(mesh, user_id: str) -> bool:
    """Whether any journey of the rider is row-locked by someone else."""
    async with await journey_db(mesh) as conn:
        try:
            await conn.execute(
                "SELECT 1 FROM journey_history WHERE user_id = %s FOR UPDATE NOWAIT", (user_id,)
            )
        except errors.LockNotAvailable:
            return True
    return False
