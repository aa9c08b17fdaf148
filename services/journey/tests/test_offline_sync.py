"""SyncOfflineTaps against the real user, fare and journey services: taps placed on the
card's timeline by tapped_at (services/journey/timeline.py), re-pricing as ledger entries,
idempotency by tap_id, validation. After every test the system settles and the money audit
must hold."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from tiket.journey.v1 import journey_pb2
from tiket.user.v1 import user_pb2

from libs.auth import Role
from libs.money import from_money, to_money
from services.journey.tests.mesh import (
    counts,
    journey_db,
    journeys_of,
    new_rider,
    offline_tap,
    settle,
    sync,
    tap_in,
    tap_out,
    wallet,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.usefixtures("audited")]
J = journey_pb2
MINUTE = timedelta(minutes=1)


def start() -> datetime:
    """08:00 of a scenario: fares start when the mesh seeds them, so scenarios run ahead."""
    return datetime.now(UTC) + MINUTE


def trips(journeys: list[J.Journey]) -> list[tuple[str, str, int, int]]:
    """(origin, destination, status, fare) of each journey that costs something."""
    return [
        (j.checkin_terminal_code, j.checkout_terminal_code, j.status, j.fare.units)
        for j in journeys
        if j.status != J.JOURNEY_STATUS_CANCELLED
    ]


async def test_the_issues_out_of_order_taps_charge_exactly_two_trips(mesh):
    """In at A 08:00, out at offline gate E 08:30, in at B 09:00, E's upload at 09:10, out
    at C: A→E and B→C, nothing else."""
    user_id, card = await new_rider(mesh, 100_000)
    t = start()
    await tap_in(mesh, card, "A", "A-ENTRY-01", tapped_at=t)
    await tap_in(mesh, card, "B", "B-ENTRY-01", tapped_at=t + 60 * MINUTE)  # abandons A
    answer = await sync(mesh, "E", "E-EXIT-01", [offline_tap("out", card, t + 30 * MINUTE, 12_000)])
    (result,) = answer.results
    assert result.outcome == J.TAP_OUTCOME_APPLIED, result
    assert (result.journey.checkin_terminal_code, result.journey.checkout_terminal_code) == (
        "A",
        "E",
    )
    active = await mesh.journeys.GetActiveJourney(
        J.GetActiveJourneyRequest(card_id=card), metadata=mesh.metadata()
    )
    assert active.checkin_terminal_code == "B"  # B's journey is still open
    await tap_out(mesh, card, "D", "D-BI-01", tapped_at=t + 100 * MINUTE)  # C-EXIT is offline
    await settle(mesh)
    done = J.JOURNEY_STATUS_COMPLETED
    assert trips(await journeys_of(mesh, user_id)) == [
        ("A", "E", done, 12_000),
        ("B", "D", done, 8_000),
    ]
    assert (await wallet(mesh, user_id))[0] == Decimal(100_000 - 12_000 - 8_000)


async def test_out_at_c_after_the_upload_is_b_to_c(mesh):
    """The same scenario with the real exit at C (its exit gate runs offline in the demo,
    so C's tap is uploaded too): A→E 12,000 and B→C 6,000."""
    user_id, card = await new_rider(mesh, 100_000)
    t = start()
    await tap_in(mesh, card, "A", "A-ENTRY-01", tapped_at=t)
    await tap_in(mesh, card, "B", "B-ENTRY-01", tapped_at=t + 60 * MINUTE)
    await sync(mesh, "C", "C-EXIT-01", [offline_tap("out", card, t + 100 * MINUTE, 6_000)])
    answer = await sync(mesh, "E", "E-EXIT-01", [offline_tap("out", card, t + 30 * MINUTE, 12_000)])
    assert answer.results[0].outcome == J.TAP_OUTCOME_APPLIED
    await settle(mesh)
    done = J.JOURNEY_STATUS_COMPLETED
    assert trips(await journeys_of(mesh, user_id)) == [
        ("A", "E", done, 12_000),
        ("B", "C", done, 6_000),
    ]
    assert (await wallet(mesh, user_id))[0] == Decimal(100_000 - 18_000)


async def test_a_late_check_out_reprices_the_abandoned_journey_and_refunds_the_difference(mesh):
    user_id, card = await new_rider(mesh, 100_000)
    t = start()
    await tap_in(mesh, card, "A", "A-ENTRY-01", tapped_at=t)
    await tap_in(mesh, card, "B", "B-ENTRY-01", tapped_at=t + 60 * MINUTE)  # A abandoned: 12,000
    await settle(mesh)
    assert (await wallet(mesh, user_id))[0] == Decimal(88_000)
    answer = await sync(mesh, "D", "D-BI-01", [offline_tap("out", card, t + 30 * MINUTE, 9_000)])
    (result,) = answer.results
    assert result.outcome == J.TAP_OUTCOME_ADJUSTED
    assert from_money(result.price_change) == Decimal(-3_000)
    assert "re-priced from 12000" in result.reason and "9000" in result.reason
    assert result.journey.status == J.JOURNEY_STATUS_COMPLETED
    assert from_money(result.journey.fare) == Decimal(9_000)
    await settle(mesh)
    assert (await wallet(mesh, user_id))[0] == Decimal(91_000)
    refunds = [
        e for e in await ledger(mesh, user_id) if e.kind == user_pb2.LEDGER_ENTRY_KIND_REFUND
    ]
    assert [from_money(e.amount) for e in refunds] == [Decimal(3_000)]
    assert "re-priced" in refunds[0].description


async def test_a_late_check_in_merges_with_the_orphan_check_out(mesh):
    """Out at E without an entry (penalty: the maximum fare to E), then B's offline entry
    before it arrives: B→E at its fare, the penalty refunded."""
    user_id, card = await new_rider(mesh, 100_000)
    t = start()
    await tap_out(mesh, card, "E", "E-EXIT-01", tapped_at=t + 40 * MINUTE)
    await settle(mesh)
    assert (await wallet(mesh, user_id))[0] == Decimal(88_000)  # penalty: A→E, 12,000
    answer = await sync(mesh, "B", "B-ENTRY-01", [offline_tap("in", card, t, 11_000)])
    (result,) = answer.results
    assert result.outcome == J.TAP_OUTCOME_ADJUSTED
    assert from_money(result.price_change) == Decimal(11_000 - 12_000)
    await settle(mesh)
    journeys = await journeys_of(mesh, user_id)
    assert trips(journeys) == [("B", "E", J.JOURNEY_STATUS_COMPLETED, 11_000)]
    assert [j.status for j in journeys].count(J.JOURNEY_STATUS_CANCELLED) == 1
    assert (await wallet(mesh, user_id))[0] == Decimal(89_000)


async def test_offline_trips_are_charged_at_the_fare_and_a_resent_batch_is_duplicate(mesh):
    user_id, card = await new_rider(mesh, 50_000)
    t = start()
    taps = [offline_tap("in", card, t, 12_000), offline_tap("in", card, t + 30 * MINUTE, 12_000)]
    entries = await sync(mesh, "A", "A-ENTRY-01", taps)
    exits = await sync(mesh, "B", "B-EXIT-01", [offline_tap("out", card, t + 50 * MINUTE, 5_000)])
    # the second entry abandons the first journey: its price is counted on that entry
    assert [r.outcome for r in entries.results] == [J.TAP_OUTCOME_APPLIED, J.TAP_OUTCOME_ADJUSTED]
    assert from_money(entries.results[1].price_change) == Decimal(12_000)
    assert exits.results[0].outcome == J.TAP_OUTCOME_APPLIED
    await settle(mesh)
    before = (await counts(mesh), await wallet(mesh, user_id))
    again = await sync(mesh, "A", "A-ENTRY-01", taps)
    assert [r.outcome for r in again.results] == [J.TAP_OUTCOME_DUPLICATE] * 2
    assert [r.journey.id for r in again.results] == [r.journey.id for r in entries.results]
    await settle(mesh)
    assert (await counts(mesh), await wallet(mesh, user_id)) == before
    abandoned, done = J.JOURNEY_STATUS_ABANDONED, J.JOURNEY_STATUS_COMPLETED
    assert trips(await journeys_of(mesh, user_id)) == [
        ("A", "", abandoned, 12_000),  # the second entry at A, 30 minutes later
        ("A", "B", done, 5_000),
    ]
    assert (await wallet(mesh, user_id))[0] == Decimal(50_000 - 17_000)


async def announced(mesh, user_id: str) -> list[tuple[str, dict]]:
    """The journey events of a rider, in the order they were written."""
    async with await journey_db(mesh) as conn:
        cur = await conn.execute(
            "SELECT event_type, body->'data' FROM outbox WHERE body->>'subject' = %s ORDER BY seq",
            (user_id,),
        )
        return await cur.fetchall()


async def test_a_late_check_out_announces_the_abandoned_journey_revised(mesh):
    """The journey announced abandoned (at A, the maximum fare) is announced again as
    completed A→D when the late exit completes it: analytics counts the trip, D's exit tap,
    and no longer the abandoned journey."""
    user_id, card = await new_rider(mesh, 100_000)
    t = start()
    await tap_in(mesh, card, "A", "A-ENTRY-01", tapped_at=t)
    await tap_in(mesh, card, "B", "B-ENTRY-01", tapped_at=t + 60 * MINUTE)  # A abandoned
    await settle(mesh)
    await sync(mesh, "D", "D-BI-01", [offline_tap("out", card, t + 30 * MINUTE, 9_000)])
    await settle(mesh)
    events = await announced(mesh, user_id)
    assert [kind for kind, _ in events] == [
        "journey.checked_in",
        "journey.abandoned",
        "journey.checked_in",
        "journey.revised",
    ]
    abandoned, revised = events[1][1], events[3][1]
    assert revised["previous"] == abandoned
    current = revised["current"]
    assert (current["status"], current["originCode"], current["destinationCode"]) == (
        "completed",
        "A",
        "D",
    )
    assert current["fare"]["units"] == "9000" and current["durationMinutes"] == 30
    assert current["journeyId"] == abandoned["journeyId"]


async def test_a_late_check_in_announces_the_orphan_check_out_cancelled(mesh):
    """The exit announced incomplete (penalty at E) is announced cancelled when a late entry
    merges it into B→E, which is announced checked out: E's exit tap counts once."""
    user_id, card = await new_rider(mesh, 100_000)
    t = start()
    await tap_out(mesh, card, "E", "E-EXIT-01", tapped_at=t + 40 * MINUTE)
    await settle(mesh)
    await sync(mesh, "B", "B-ENTRY-01", [offline_tap("in", card, t, 11_000)])
    await settle(mesh)
    events = await announced(mesh, user_id)
    kinds = sorted(kind for kind, _ in events)
    assert kinds == [
        "journey.checked_in",
        "journey.checked_out",
        "journey.incomplete",
        "journey.revised",
    ]
    [incomplete] = [data for kind, data in events if kind == "journey.incomplete"]
    [revised] = [data for kind, data in events if kind == "journey.revised"]
    assert revised["previous"] == incomplete
    assert revised["current"]["status"] == "cancelled"
    assert revised["current"]["fare"].get("units", "0") == "0"


async def test_an_online_check_in_a_late_entry_makes_a_repeat_is_cancelled_its_hold_released(
    mesh,
):
    """In at A offline, then 30 s later at A online (a repeat within the anti-passback
    window): the upload keeps the offline entry's journey open and cancels the online one,
    releasing its hold. It answered INTERNAL (a cancelled journey had no closing event) and
    left the cancellation pending, every later upload of the card failing alike."""
    user_id, card = await new_rider(mesh, 100_000)
    t = start()
    await tap_in(mesh, card, "A", "A-ENTRY-01", tapped_at=t + timedelta(seconds=30))
    answer = await sync(mesh, "A", "A-ENTRY-01", [offline_tap("in", card, t, 12_000)])
    assert [r.outcome for r in answer.results] == [J.TAP_OUTCOME_APPLIED]
    await settle(mesh)
    journeys = {j.status: j for j in await journeys_of(mesh, user_id)}
    assert set(journeys) == {J.JOURNEY_STATUS_ACTIVE, J.JOURNEY_STATUS_CANCELLED}
    assert journeys[J.JOURNEY_STATUS_CANCELLED].settlement == J.SETTLEMENT_PAID
    assert journeys[J.JOURNEY_STATUS_ACTIVE].checkin_time.ToDatetime(tzinfo=UTC) == t
    assert await wallet(mesh, user_id) == (Decimal(100_000), 0, Decimal(100_000))
    assert [kind for kind, _ in await announced(mesh, user_id)] == ["journey.checked_in"] * 2


async def test_an_offline_trip_announces_its_duration_like_an_online_one(mesh):
    """journey.checked_out of a trip closed by SyncOfflineTaps carries durationMinutes (the
    database trigger's ceil of minutes), as an online check-out's does: the analytics route
    matrix averages the trips' durations from it."""
    user_id, card = await new_rider(mesh, 50_000)
    t = start()
    await sync(mesh, "A", "A-ENTRY-01", [offline_tap("in", card, t, 12_000)])
    await sync(mesh, "B", "B-EXIT-01", [offline_tap("out", card, t + 25.5 * MINUTE, 5_000)])
    await settle(mesh)
    async with await journey_db(mesh) as conn:
        cur = await conn.execute(
            """SELECT body->'data' FROM outbox
                WHERE body->>'subject' = %s AND event_type = 'journey.checked_out'""",
            (user_id,),
        )
        [(data,)] = await cur.fetchall()
    assert data["durationMinutes"] == 26
    [trip] = await journeys_of(mesh, user_id)
    assert trip.duration_minutes == 26


async def test_an_offline_entry_is_announced_once_as_an_offline_check_in(mesh):
    """journey.checked_in for an entry a gate decided offline (analytics counts the terminal's
    check-ins from it), once however often the batch is re-sent; the rejected tap, none."""
    user_id, card = await new_rider(mesh, 50_000)
    t = start()
    entry = offline_tap("in", card, t, 12_000)
    unknown = offline_tap("in", "CARD99999999", t)
    for _ in range(2):
        await sync(mesh, "A", "A-ENTRY-01", [entry, unknown])
    await settle(mesh)
    async with await journey_db(mesh) as conn:
        cur = await conn.execute(
            """SELECT body->'data' FROM outbox
                WHERE body->>'subject' = %s AND event_type = 'journey.checked_in'""",
            (user_id,),
        )
        [(data,)] = await cur.fetchall()
    [journey] = await journeys_of(mesh, user_id)
    assert data["offline"] is True and data["journeyId"] == journey.id
    assert (data["terminalCode"], data["terminalName"], data["gateCode"]) == (
        "A",
        "Terminal Utara",
        "A-ENTRY-01",
    )
    assert data["checkinTime"] == entry.tapped_at.ToJsonString()
    assert "heldAmount" not in data and "availableBalance" not in data


async def test_an_online_entry_an_earlier_offline_one_repeats_is_cancelled_and_its_hold_freed(
    mesh,
):
    """In at A online; the A gate beside it, offline, had let the card in 30 s earlier: the
    online entry repeats that one (anti-passback) and its journey is cancelled — its hold
    given back, no event (no consumer knows a cancelled journey) — not an INTERNAL error
    that left the closing unsettled and failed every round of the sweeper."""
    user_id, card = await new_rider(mesh, 50_000)
    t = start()
    online = await tap_in(mesh, card, "A", "A-ENTRY-01", tapped_at=t + timedelta(seconds=30))
    answer = await sync(mesh, "A", "A-ENTRY-01", [offline_tap("in", card, t)])
    (result,) = answer.results
    assert result.outcome in (J.TAP_OUTCOME_APPLIED, J.TAP_OUTCOME_ADJUSTED), result.reason
    assert result.journey.status == J.JOURNEY_STATUS_ACTIVE
    opened, cancelled = await journeys_of(mesh, user_id)  # by check-in time
    assert (cancelled.id, cancelled.status, cancelled.settlement, cancelled.fare.units) == (
        online.journey.id,
        J.JOURNEY_STATUS_CANCELLED,
        J.SETTLEMENT_PAID,
        0,
    )
    assert (opened.id, opened.status) == (result.journey.id, J.JOURNEY_STATUS_ACTIVE)
    assert await wallet(mesh, user_id) == (Decimal(50_000), 0, Decimal(50_000))
    async with await journey_db(mesh) as conn:
        cur = await conn.execute(
            "SELECT event_type FROM outbox WHERE body->>'subject' = %s ORDER BY event_type",
            (user_id,),
        )
        assert [row[0] for row in await cur.fetchall()] == ["journey.checked_in"] * 2


async def test_an_offline_trip_is_not_refused_for_balance_it_becomes_a_debt(mesh):
    user_id, card = await new_rider(mesh, 3_000)
    t = start()
    await sync(mesh, "A", "A-ENTRY-01", [offline_tap("in", card, t, 12_000)])
    answer = await sync(mesh, "E", "E-EXIT-01", [offline_tap("out", card, t + 20 * MINUTE, 12_000)])
    assert answer.results[0].outcome == J.TAP_OUTCOME_APPLIED
    await settle(mesh)
    (journey,) = await journeys_of(mesh, user_id)
    assert (journey.status, journey.settlement) == (
        J.JOURNEY_STATUS_COMPLETED,
        J.SETTLEMENT_PAID,
    )
    # taken whole into the wallet's debt (test_offline_debt.py: the card is suspended)
    assert (await wallet(mesh, user_id))[0] == Decimal(3_000 - 12_000)


async def test_taps_that_cannot_be_placed_are_rejected_and_not_recorded(mesh):
    _, card = await new_rider(mesh)
    t = start()
    before = await counts(mesh)
    answer = await sync(
        mesh,
        "A",
        "A-EXIT-01",
        [
            offline_tap("in", card, t),  # an exit gate takes no check-in
            offline_tap("out", "NOBODY000001", t),
            offline_tap("out", card, datetime.now(UTC) - timedelta(days=8)),
            # a gate clock a day ahead: this tap alone, not the batch (the gate re-sends it)
            offline_tap("out", card, datetime.now(UTC) + timedelta(days=1)),
        ],
    )
    reasons = [(r.outcome, r.reason.split(":")[0]) for r in answer.results]
    rejected = J.TAP_OUTCOME_REJECTED
    assert reasons == [
        (rejected, "WRONG_GATE_TYPE"),
        (rejected, "UNKNOWN_CARD"),
        (rejected, "TAP_EXPIRED"),
        (rejected, "TAP_IN_FUTURE"),
    ]
    assert await counts(mesh) == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.ClearField("taps"), "taps"),
        (lambda r: r.taps[1].ClearField("tapped_at"), "taps[1].tapped_at"),
        (lambda r: setattr(r.taps[2], "tap_id", r.taps[0].tap_id), "taps[2].tap_id"),
        (lambda r: setattr(r.taps[1], "card_id", "bad card"), "taps[1].card_id"),
        (lambda r: setattr(r.taps[0], "direction", 0), "taps[0].direction"),
        (lambda r: setattr(r.taps[2], "tap_id", "nope"), "taps[2].tap_id"),
        (lambda r: r.taps[1].offline_amount.CopyFrom(from_units(-5)), "taps[1].offline_amount"),
        (lambda r: setattr(r, "gate_code", ""), "gate_code"),
        (lambda r: r.taps.extend([r.taps[0]] * 500), "taps"),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field_and_writes_nothing(
    mesh, change, field
):
    _, card = await new_rider(mesh)
    t = start()
    request = J.SyncOfflineTapsRequest(
        terminal_code="A",
        gate_code="A-ENTRY-01",
        taps=[offline_tap("in", card, t + n * MINUTE) for n in range(3)],
    )
    change(request)
    before = await counts(mesh)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mesh.journeys.SyncOfflineTaps(request, metadata=mesh.metadata(Role.SERVICE))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in fields_of(err.value)
    assert await counts(mesh) == before


async def test_a_gate_sends_only_its_own_taps(mesh):
    _, card = await new_rider(mesh)
    request = J.SyncOfflineTapsRequest(
        terminal_code="A", gate_code="A-ENTRY-01", taps=[offline_tap("in", card, start())]
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mesh.journeys.SyncOfflineTaps(
            request, metadata=mesh.metadata(Role.GATE, "B/B-ENTRY-01")
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_tap_first_tried_online_and_answered_is_duplicate(mesh):
    """The gate sent it online, gave up waiting, opened offline and syncs it later."""
    user_id, card = await new_rider(mesh)
    t = start()
    tap_id = str(uuid.uuid4())
    await tap_in(mesh, card, "A", "A-ENTRY-01", tap_id=tap_id, tapped_at=t)
    answer = await sync(mesh, "A", "A-ENTRY-01", [offline_tap("in", card, t, tap_id=tap_id)])
    assert answer.results[0].outcome == J.TAP_OUTCOME_DUPLICATE
    assert answer.results[0].journey.status == J.JOURNEY_STATUS_ACTIVE
    await tap_out(mesh, card, "B", "B-EXIT-01", tapped_at=t + 10 * MINUTE)
    await settle(mesh)
    assert (await wallet(mesh, user_id))[0] == Decimal(100_000 - 5_000)


# --- helpers --------------------------------------------------------------------------------


def from_units(units: int):
    return to_money(Decimal(units))


def fields_of(error: grpc.aio.AioRpcError) -> list[str]:
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw, error.details()
    found = []
    for detail in status_pb2.Status.FromString(raw).details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found += [v.field for v in bad.field_violations]
    return found


async def ledger(mesh, user_id: str) -> list[user_pb2.LedgerEntry]:
    found = await mesh.users.ListLedgerEntries(
        user_pb2.ListLedgerEntriesRequest(user_id=user_id, page_size=100),
        metadata=mesh.metadata(),
    )
    return list(found.entries)


async def test_a_tap_synced_offline_cannot_be_replayed_online(mesh):
    _, card = await new_rider(mesh)
    t = start()
    tap_id = str(uuid.uuid4())
    await sync(mesh, "A", "A-ENTRY-01", [offline_tap("in", card, t, tap_id=tap_id)])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await tap_in(mesh, card, "A", "A-ENTRY-01", tap_id=tap_id, tapped_at=t)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    await tap_out(mesh, card, "B", "B-EXIT-01", tapped_at=t + 10 * MINUTE)
