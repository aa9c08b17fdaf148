"""A small pure model of what an always-online card pays: its taps replayed in tapped_at
order with the rules online taps follow (demo fares, the same-terminal fare, the abandoned
journey's held maximum, the no-entry penalty), and the same charges read from the server.
Taps are assumed past the anti-passback window of each other (the model has no repeats)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from tiket.journey.v1 import journey_pb2

from services.fare.demo import DEMO_FARES
from services.journey.tests.mesh import Mesh, journeys_of

J = journey_pb2
MAX_FROM = {o: max(row.values()) for o, row in DEMO_FARES.items()}
MAX_TO = {d: max(row[d] for row in DEMO_FARES.values() if d in row) for d in DEMO_FARES}
SAME_TERMINAL_FARE, SAME_TERMINAL_WINDOW = 2_000, timedelta(minutes=20)
# A charge: (status, origin, destination, fare in IDR).
Charge = tuple[str, str, str, int]


def in_order(taps: Iterable[tuple[str, str, datetime]]) -> tuple[list[Charge], str | None]:
    """The charges of (kind "in"/"out", terminal, tapped_at) taps replayed in time order, and
    the terminal of the journey left open (None)."""
    charges: list[Charge] = []
    open_: tuple[str, datetime, int] | None = None
    for kind, terminal, at in sorted(taps, key=lambda t: t[2]):
        if kind == "in":
            if open_ is not None:
                charges.append(("abandoned", open_[0], "", open_[2]))
            open_ = (terminal, at, MAX_FROM[terminal])
        elif open_ is not None:
            origin, since, held = open_
            if origin != terminal:
                fare = min(DEMO_FARES[origin][terminal], held)
            elif at - since <= SAME_TERMINAL_WINDOW:
                fare = min(SAME_TERMINAL_FARE, held)
            else:
                fare = held
            charges.append(("completed", origin, terminal, fare))
            open_ = None
        else:
            charges.append(("incomplete", "", terminal, MAX_TO[terminal]))
    return sorted(charges), open_[0] if open_ else None


STATUS = {
    J.JOURNEY_STATUS_COMPLETED: "completed",
    J.JOURNEY_STATUS_ABANDONED: "abandoned",
    J.JOURNEY_STATUS_INCOMPLETE: "incomplete",
}


async def on_server(mesh: Mesh, user_id: str) -> tuple[list[Charge], str | None]:
    """The rider's journeys as the same charges (cancelled ones left out), and the terminal
    of the active one (None)."""
    charges, open_ = [], None
    for j in await journeys_of(mesh, user_id):
        if j.status == J.JOURNEY_STATUS_ACTIVE:
            open_ = j.checkin_terminal_code
        elif j.status != J.JOURNEY_STATUS_CANCELLED:
            fare = j.fare.units
            charges.append(
                (STATUS[j.status], j.checkin_terminal_code, j.checkout_terminal_code, fare)
            )
    return sorted(charges), open_
