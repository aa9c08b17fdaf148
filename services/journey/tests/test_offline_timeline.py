"""Property: whatever order a card's taps reach the server in — some online as they happen,
some decided offline and uploaded later, in batches of any split and order — the card ends
with the charges of an in-order replay of the same taps (replay_model.py, written
from the rules online taps follow), and the money audit holds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tiket.journey.v1 import journey_pb2

from services.journey.tests.mesh import (
    new_rider,
    offline_tap,
    settle,
    sync,
    tap_in,
    tap_out,
    wallet,
)
from services.journey.tests.replay_model import in_order, on_server
from tests.support.fuzz import SERVICE_FUZZ

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(240),
    pytest.mark.usefixtures("audited"),
]
J = journey_pb2
BALANCE = 500_000
SLOT = timedelta(minutes=2)  # taps of a card are at least this far apart: past anti-passback
ENTRY = {"A": "A-ENTRY-01", "B": "B-ENTRY-01", "C": "C-ENTRY-01", "D": "D-BI-01", "E": "E-ENTRY-01"}
EXIT = {"A": "A-EXIT-01", "B": "B-EXIT-01", "C": "C-EXIT-01", "D": "D-BI-01", "E": "E-EXIT-01"}


@dataclass(frozen=True)
class Tap:
    card: int
    kind: str  # "in" | "out"
    terminal: str
    slot: int
    online: bool
    delay: float  # how late an offline tap is uploaded, 0..1 of what is left of the run

    @property
    def gate(self) -> str:
        return (ENTRY if self.kind == "in" else EXIT)[self.terminal]


def reference(taps: list[Tap], base: datetime) -> tuple[list[tuple], str | None]:
    """The in-order replay of one card's taps: (charges, terminal of the open journey)."""
    return in_order((t.kind, t.terminal, base + t.slot * SLOT) for t in taps)


@st.composite
def runs(draw) -> list[Tap]:
    cards = draw(st.integers(1, 2))
    count = draw(st.integers(1, 8))
    slots = draw(st.lists(st.integers(0, 75), min_size=count, max_size=count, unique=True))
    return [
        Tap(
            card=draw(st.integers(0, cards - 1)),
            kind=draw(st.sampled_from(["in", "out"])),
            terminal=draw(st.sampled_from("ABCDE")),
            slot=slot,
            online=draw(st.booleans()),
            delay=draw(st.floats(0, 1)),
        )
        for slot in slots
    ]


def deliveries(taps: list[Tap], split: bool, reverse: bool) -> list[list[Tap]]:
    """What reaches the server, in order: an online tap alone, as it happens; an offline
    tap in its gate's batch, uploaded `delay` after it happened (never before)."""
    online = sorted((t for t in taps if t.online), key=lambda t: t.slot)
    uploads: dict[int, dict[str, list[Tap]]] = {}
    for tap in (t for t in taps if not t.online):
        earliest = sum(1 for o in online if o.slot < tap.slot)
        at = earliest + round(tap.delay * (len(online) - earliest))
        uploads.setdefault(at, {}).setdefault(tap.gate, []).append(tap)
    out: list[list[Tap]] = []
    for position in range(len(online) + 1):
        for batch in uploads.get(position, {}).values():
            batch = batch[::-1] if reverse else batch
            if split and len(batch) > 1:
                out += [batch[: len(batch) // 2], batch[len(batch) // 2 :]]
            else:
                out.append(batch)
        if position < len(online):
            out.append([online[position]])
    return out


@settings(SERVICE_FUZZ, max_examples=15)
@given(taps=runs(), split=st.booleans(), reverse=st.booleans())
async def test_any_arrival_order_charges_what_an_in_order_replay_charges(
    mesh, taps, split, reverse
):
    riders = [await new_rider(mesh, BALANCE) for _ in range(1 + max(t.card for t in taps))]
    base = datetime.now(UTC) + timedelta(minutes=1)
    for delivery in deliveries(taps, split, reverse):
        first = delivery[0]
        card = riders[first.card][1]
        at = base + first.slot * SLOT
        if first.online:
            tap = tap_in if first.kind == "in" else tap_out
            await tap(mesh, card, first.terminal, first.gate, tapped_at=at)
            continue
        batch = [offline_tap(t.kind, riders[t.card][1], base + t.slot * SLOT) for t in delivery]
        answer = await sync(mesh, first.terminal, first.gate, batch)
        assert J.TAP_OUTCOME_REJECTED not in [r.outcome for r in answer.results]
    await settle(mesh)
    for n, (user_id, _) in enumerate(riders):
        mine = [t for t in taps if t.card == n]
        expected = reference(mine, base)
        assert await on_server(mesh, user_id) == expected, (mine, split, reverse)
        paid = sum(fare for *_, fare in expected[0])
        assert (await wallet(mesh, user_id))[0] == Decimal(BALANCE - paid)
