"""The gate agent against the real user, fare and journey services: the snapshot it pulls,
online taps, the offline decision when the journey service is slow or cut, and the deny list
reaching the gate."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from decimal import Decimal

import pytest
from tiket.fare.v1 import fare_pb2, fare_pb2_grpc
from tiket.user.v1 import user_pb2

from gate import local_taps, snapshot
from gate.decide import Direction
from gate.local_taps import Tap
from gate.offline_db import now
from gate.status import read_status
from gate.tests.conftest import CLOCK_SKEW
from gate.tests.local_files import query
from libs.auth import Role
from libs.money import to_money
from libs.timestamps import to_timestamp
from services.journey.tests.mesh import new_rider, wallet
from tests.support import keys
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


async def test_the_snapshot_holds_cards_and_this_terminals_fares_with_scheduled_versions(
    gates, tmp_path
):
    mesh = gates.mesh
    _, card = await new_rider(mesh, 40_000)
    # A→E goes up from 12,000 to 15,000 in an hour: a tap after that is priced at 15,000.
    fares = fare_pb2_grpc.FareServiceStub(mesh.channels["fare"])
    in_an_hour = now() + timedelta(hours=1)
    await fares.SetFare(
        fare_pb2.SetFareRequest(
            origin_code="A",
            destination_code="E",
            price=to_money(Decimal(15_000)),
            effective_from=to_timestamp(in_an_hour),
            request_id=f"gate-{card}",
        ),
        metadata=mesh.metadata(),
    )
    async with gates.agent(gates.gate_config(tmp_path)) as agent:
        first = await snapshot.refresh_users(agent.db, agent.mesh)
        assert first.full and first.cards >= 1
        assert await snapshot.refresh_fares(agent.db, agent.mesh, "A") >= 8
        again = await snapshot.refresh_users(agent.db, agent.mesh)
        assert not again.full  # a delta from the watermark

        assert query(
            agent.db.path, "SELECT status, available_cents FROM users WHERE card_id = ?", card
        ) == [("active", 4_000_000)]
        assert len(query(agent.db.path, "SELECT * FROM terminals")) == 5
        prices = query(
            agent.db.path,
            """SELECT price_cents FROM fares WHERE origin_code = 'A' AND destination_code = 'E'
                ORDER BY effective_from_ms""",
        )
        assert prices == [(1_200_000,), (1_500_000,)]

        def max_fare(at):
            tap = Tap("t", card, Direction.CHECK_IN, at, "A", "A-ENTRY-01")
            return agent.db.run(lambda conn: local_taps.situation(conn, tap).max_fare)

        assert await max_fare(now()) == Decimal(12_000)
        assert await max_fare(in_an_hour + timedelta(minutes=1)) == Decimal(15_000)


async def test_an_online_tap_is_decided_by_the_journey_service(gates, tmp_path):
    mesh = gates.mesh
    user_id, card = await new_rider(mesh, 50_000)
    _, poor = await new_rider(mesh, 1_000)
    async with gates.agent(gates.gate_config(tmp_path)) as agent:
        entered = await agent.tap(card)
        assert (entered.open, entered.mode, entered.amount) == (True, "online", Decimal(12_000))
        assert "Rp 12.000" in entered.render("id")
        assert await wallet(mesh, user_id) == (Decimal(50_000), Decimal(12_000), Decimal(38_000))
        refused = await agent.tap(poor)
        assert (refused.open, refused.mode, refused.reason) == (
            False,
            "online",
            "INSUFFICIENT_BALANCE",
        )
        assert refused.render("en").startswith(f"CLOSED {poor} in  [online] Insufficient balance")
        wrong_way = await agent.tap(card, "out")
        assert (wrong_way.open, wrong_way.mode, wrong_way.reason) == (
            False,
            "gate",
            "WRONG_GATE_TYPE",
        )
        assert query(
            agent.db.path, "SELECT mode, amount_cents, synced FROM local_transactions"
        ) == [("online", 1_200_000, 1)]
        assert query(agent.db.path, "SELECT count(*) FROM offline_tasks") == [(0,)]


async def test_an_unregistered_gate_is_told_apart_from_an_unknown_card(gates, tmp_path, caplog):
    """NOT_FOUND is UNKNOWN_CARD only when the card is what the journey service did not find;
    a gate it does not know (configured with a direction, so it starts) says so to the rider
    and warns staff once, instead of calling every rider's card unknown."""
    _, card = await new_rider(gates.mesh, 30_000)
    unregistered = gates.gate_config(tmp_path, gate="A-ENTRY-77")
    with caplog.at_level("WARNING", logger="gate.agent"):
        async with gates.agent(unregistered) as agent:
            first, second = await agent.tap(card), await agent.tap(card)
    for decision in (first, second):
        assert (decision.open, decision.mode, decision.reason) == (
            False,
            "online",
            "GATE_NOT_REGISTERED",
        )
    assert "This gate is not registered. Please contact staff." in first.render("en")
    warnings = [
        r.getMessage() for r in caplog.records if "does not know this gate" in r.getMessage()
    ]
    assert len(warnings) == 1 and "A-ENTRY-77" in warnings[0]
    async with gates.agent(gates.gate_config(tmp_path)) as agent:
        stranger = await agent.tap("NOSUCHCARD0001")
    assert (stranger.open, stranger.mode, stranger.reason) == (False, "online", "UNKNOWN_CARD")


async def test_a_gate_whose_clock_runs_fast_still_decides_online_and_tells_staff(
    gates, tmp_path, caplog
):
    """A gate clock further ahead than the journey service allows (here CLOCK_SKEW, 6 h;
    5 min by default): the server refuses the tap's time, which is the gate's fault, not
    the rider's — the tap is asked again for the server's clock to time it, the rider goes
    through, and staff are told once."""
    user_id, card = await new_rider(gates.mesh, 30_000)
    _, other = await new_rider(gates.mesh, 30_000)
    fast = now() + CLOCK_SKEW + timedelta(minutes=10)
    with caplog.at_level("WARNING", logger="gate.agent"):
        async with gates.agent(gates.gate_config(tmp_path)) as agent:
            entered = await agent.tap(card, tapped_at=fast)
            also = await agent.tap(other, tapped_at=fast)
    assert (entered.open, entered.mode, entered.amount) == (True, "online", Decimal(12_000))
    assert (also.open, also.mode) == (True, "online")
    assert await wallet(gates.mesh, user_id) == (Decimal(30_000), Decimal(12_000), Decimal(18_000))
    warnings = [
        r.getMessage() for r in caplog.records if "refuses this gate's clock" in r.getMessage()
    ]
    assert len(warnings) == 1 and "tapped_at" in warnings[0] and "NTP" in warnings[0]


async def test_each_heartbeat_measures_the_gate_s_clock_and_a_drifted_one_is_told(
    gates, tmp_path, caplog, monkeypatch
):
    """The fare service stamps each heartbeat with its clock: the agent keeps how far its
    own is off for `tiket gate status`, and warns staff once when it is off by more than
    clock.TOLERANCE_SECONDS — before any tap's time is refused."""
    async with gates.agent(gates.gate_config(tmp_path)) as agent:
        await agent.heartbeat()
        measured = await agent.db.run(read_status)
        assert measured.clock_skew is not None and abs(measured.clock_skew) < 5
        ahead = timedelta(minutes=10)
        monkeypatch.setattr("gate.agent.now", lambda: now() + ahead)
        with caplog.at_level("WARNING", logger="gate.agent"):
            await agent.heartbeat()
            await agent.heartbeat()
        drifted = await agent.db.run(read_status)
    assert drifted.clock_skew is not None and abs(drifted.clock_skew - 600) < 5
    warnings = [r.getMessage() for r in caplog.records if "this gate's clock is" in r.getMessage()]
    assert len(warnings) == 1 and "ahead of the fare service's" in warnings[0]


async def test_a_failing_sqlite_file_neither_stops_the_agent_nor_opens_an_unrecorded_tap(
    gates, tmp_path, monkeypatch
):
    """The gate's disk fills up: an online OPEN stands (the server decided and keeps the
    tap), an offline tap that cannot be recorded for upload stays CLOSED (GATE_ERROR), the
    heartbeat reports the fault, and the agent decides on once the file works again. It
    used to raise out of `tap` — `tiket gate serve` ended at the first such tap."""
    _, card = await new_rider(gates.mesh, 50_000)
    _, other = await new_rider(gates.mesh, 50_000)
    full = sqlite3.OperationalError("database or disk is full")

    def failing(*args):
        raise full

    async with gates.agent(gates.gate_config(tmp_path)) as agent:
        await snapshot.refresh_users(agent.db, agent.mesh)
        await snapshot.refresh_fares(agent.db, agent.mesh, "A")
        with monkeypatch.context() as patch:
            patch.setattr("gate.agent.record_online", failing)
            online = await agent.tap(card)
            assert (online.open, online.mode) == (True, "online")
            assert agent.problem == "storage: database or disk is full"
            gates.journey_proxy.cut()
            patch.setattr("gate.agent.decide_offline", failing)
            refused = await agent.tap(other)
        assert (refused.open, refused.mode, refused.reason) == (False, "offline", "GATE_ERROR")
        assert "This gate has a fault" in refused.render("en")
        working = await agent.tap(other)
        assert (working.open, working.mode) == (True, "offline")
        assert agent.problem == ""
    assert query(agent.db.path, "SELECT count(*) FROM offline_tasks") == [(1,)]


async def test_a_given_token_close_to_its_expiry_is_told_to_staff_once(gates, tmp_path, caplog):
    """A gate given a token (variable or file) goes offline for good the moment it expires,
    every tap then decided without the server: the heartbeat warns an hour ahead."""
    subject = "A/A-ENTRY-01"
    short = keys.token(gates.mesh.settings, Role.GATE, subject, ttl_seconds=1800)
    with caplog.at_level("WARNING", logger="gate.agent"):
        async with gates.agent(gates.gate_config(tmp_path, token=short)) as agent:
            await agent.heartbeat()
            await agent.heartbeat()
            assert agent.mesh.credential.expires_at() is not None
    warnings = [r.getMessage() for r in caplog.records if "its token expires" in r.getMessage()]
    assert len(warnings) == 1 and "in 29 min" in warnings[0] and "TOKEN_FILE" in warnings[0]
    caplog.clear()
    longer = keys.token(gates.mesh.settings, Role.GATE, subject, ttl_seconds=7200)
    with caplog.at_level("WARNING", logger="gate.agent"):
        async with gates.agent(gates.gate_config(tmp_path, token=longer)) as agent:
            await agent.heartbeat()
    assert not [r for r in caplog.records if "token" in r.getMessage()]


async def test_a_slow_journey_service_gets_an_offline_decision_and_a_pending_task(gates, tmp_path):
    _, card = await new_rider(gates.mesh, 30_000)
    async with gates.agent(gates.gate_config(tmp_path, deadline=0.3)) as agent:
        await snapshot.refresh_users(agent.db, agent.mesh)
        await snapshot.refresh_fares(agent.db, agent.mesh, "A")
        gates.journey_proxy.stall()  # connections stay open, nothing gets through
        decision = await agent.tap(card)
        assert (decision.open, decision.mode) == (True, "offline")
        assert not agent.online
        assert query(agent.db.path, "SELECT card_id, task_type, status FROM offline_tasks") == [
            (card, "checkin", "pending")
        ]
        # Known offline now: the next tap does not wait for the server at all.
        again = await agent.tap(card)
        assert (again.open, again.mode, again.reason) == (False, "offline", "ALREADY_CHECKED_IN")


async def test_a_card_blocked_while_online_is_refused_offline_after_the_next_refresh(
    gates, tmp_path
):
    mesh = gates.mesh
    blocked_id, blocked = await new_rider(mesh, 30_000)
    _, other = await new_rider(mesh, 30_000)
    config = gates.gate_config(tmp_path, refresh_seconds=0.2, heartbeat_seconds=0.2)
    async with gates.agent(config, background=True) as agent:

        def status_of(card: str) -> list[tuple]:
            return query(agent.db.path, "SELECT status FROM users WHERE card_id = ?", card)

        await wait_until(lambda: status_of(blocked) == [("active",)], "the card in the snapshot")
        await mesh.users.ChangeUserStatus(
            user_pb2.ChangeUserStatusRequest(
                user_id=blocked_id, status=user_pb2.USER_STATUS_BLOCKED, reason="card reported lost"
            ),
            metadata=mesh.metadata(),
        )
        await wait_until(
            lambda: status_of(blocked) == [("blocked",)], "the block to reach the gate"
        )
        await agent.refresh_fares()

        gates.journey_proxy.cut()
        refused = await agent.tap(blocked)
        assert (refused.open, refused.mode, refused.reason) == (False, "offline", "USER_NOT_ACTIVE")
        assert "Kartu diblokir" in refused.render("id")
        admitted = await agent.tap(other)
        assert (admitted.open, admitted.mode) == (True, "offline")

        # The heartbeat tells the fare service the gate runs on its own.
        fares = fare_pb2_grpc.FareServiceStub(mesh.channels["fare"])

        async def reported_offline() -> bool:
            listed = await fares.ListGates(
                fare_pb2.ListGatesRequest(terminal_code="A"), metadata=mesh.metadata()
            )
            gate = next(g for g in listed.gates if g.gate_code == "A-ENTRY-01")
            return gate.reported_status == fare_pb2.GATE_STATUS_OFFLINE

        await wait_until(reported_offline, "an OFFLINE heartbeat")
