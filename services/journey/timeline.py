"""A card's timeline (issue 16): the journeys an in-order replay of the card's taps makes,
whatever order the taps reached the server in. Pure, like domain.py.

The rules (journey.proto, SyncOfflineTaps, says the same to gates):
1. Facts are the taps that opened a gate: online taps answered OK and every offline tap
   SyncOfflineTaps accepted. They are replayed in tapped_at order (ties by tap_id) from the
   card's last check-in before the earliest new tap: that check-in closed whatever was open
   before it, so nothing earlier can change.
2. A check-in closes the journey open at that time as abandoned (charged the maximum fare
   held at its check-in) and opens a journey — unless it is at the terminal of the open
   journey's check-in, less than the anti-passback window after it: a repeat, ignored.
3. A check-out completes the journey open at that time, priced as online
   (domain.checkout_price: the fare in force at its check-in time, never more than the
   maximum held); with none open it makes an incomplete journey charged the no-entry penalty
   in force at its time — unless it repeats the card's previous exit at that terminal within
   the window (ignored). A journey open longer than the maximum trip time is no longer open
   for a check-out: the sweeper abandoned it (rule 5), and online the exit then found no
   journey — unless the record says this very tap completed it (it came before the sweeper).
4. A journey is named by the tap that started it (its check-in; an incomplete journey's
   check-out). A journey the replay no longer makes is cancelled (revision.py): fare 0, what
   it took refunded. So a late check-in before an orphan check-out cancels the incomplete
   journey (penalty refunded) and completes its own journey at the fare (charged): the rider
   gets the difference back.
5. A journey still open at the end of the replay whose check-in is older than the maximum
   trip time is abandoned, as the sweeper would have done.
6. A journey's held maximum is kept as first recorded; a journey started offline holds the
   maximum fare from its terminal in force at its check-in time (no wallet hold is placed:
   its fare is charged directly when it closes)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.journey import domain
from services.journey.config import JourneyConfig
from services.journey.domain import Entry, JourneyStatus, Pricing, Tap, TapKind

# (what, terminal(s), instant): ("max_from", code, at), ("fare", origin, destination, at),
# ("max_to", code, at), ("name", code).
PriceKey = tuple[Any, ...]


class PriceBook:
    """The prices and terminal names a replay reads, fetched before it runs (reconcile.py).
    A lookup not in the book is noted in `missing` and answered with a stand-in, so one pass
    finds everything to fetch: which journeys a replay makes never depends on a price, only
    what they cost."""

    def __init__(self, known: Mapping[PriceKey, Any] | None = None) -> None:
        self.known: dict[PriceKey, Any] = dict(known or {})
        self.missing: set[PriceKey] = set()

    def _get(self, key: PriceKey, stand_in: Any) -> Any:
        if key in self.known:
            return self.known[key]
        self.missing.add(key)
        return stand_in

    def max_from(self, terminal: str, at: datetime) -> Decimal:
        return self._get(("max_from", terminal, at), Decimal(1))

    def fare(self, origin: str, destination: str, at: datetime) -> Decimal | None:
        return self._get(("fare", origin, destination, at), None)

    def max_to(self, terminal: str, at: datetime) -> Decimal:
        return self._get(("max_to", terminal, at), Decimal(0))

    def name(self, terminal: str) -> str:
        return self._get(("name", terminal), terminal)


@dataclass(frozen=True)
class Planned:
    """A journey as the replay makes it."""

    id: uuid.UUID
    status: JourneyStatus
    entry: Tap | None
    entry_name: str | None
    held: Decimal | None
    exit: Tap | None = None
    exit_name: str | None = None
    checkout_time: datetime | None = None
    fare: Decimal | None = None
    pricing: Pricing | None = None
    reason: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    # The tap that closed it: its check-out, or the entry that abandoned it.
    closed_by: uuid.UUID | None = None

    @property
    def closing_tap_id(self) -> uuid.UUID | None:
        return None if self.exit is None else self.exit.tap_id


@dataclass
class Replay:
    journeys: dict[uuid.UUID, Planned] = field(default_factory=dict)
    # tap -> the journey it started, closed, or repeats
    placed: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    # taps ignored as repeats (anti-passback): their journey is the one they repeat
    repeats: set[uuid.UUID] = field(default_factory=set)


def ordered(taps: Iterable[Tap]) -> list[Tap]:
    return sorted(taps, key=lambda t: (t.tapped_at, t.tap_id))


def replay(
    taps: Iterable[Tap],
    held: Mapping[uuid.UUID, Decimal],
    book: PriceBook,
    config: JourneyConfig,
    now: datetime,
) -> Replay:
    """The journeys `taps` make in tapped_at order (rules 1-6). `held`: the maximum held
    by journeys on record (rule 6)."""
    out = Replay()
    window = config.anti_passback
    open_: Planned | None = None
    last_exit: dict[str, tuple[datetime, uuid.UUID]] = {}
    for tap in ordered(taps):
        if tap.kind is TapKind.CHECKOUT and open_ is not None and _overdue(open_, tap, config):
            out.journeys[open_.id] = abandoned(open_, f"no exit within {config.max_trip}")
            open_ = None  # the sweeper abandoned it before this exit (rule 3)
        if tap.kind is TapKind.CHECKIN:
            if open_ is not None and _repeats_entry(open_, tap, config):
                out.placed[tap.tap_id] = open_.id
                out.repeats.add(tap.tap_id)
                continue
            if open_ is not None:
                reason = f"entry at {tap.gate_code} ({book.name(tap.terminal_code)}) before an exit"
                out.journeys[open_.id] = replace(abandoned(open_, reason), closed_by=tap.tap_id)
            open_ = opened(tap, held, book)
            out.journeys[open_.id] = open_
            out.placed[tap.tap_id] = open_.id
        elif open_ is not None:
            done = completed(open_, tap, book, config)
            out.journeys[done.id] = done
            out.placed[tap.tap_id] = done.id
            assert done.checkout_time is not None
            last_exit[tap.terminal_code] = (done.checkout_time, done.id)
            open_ = None
        elif (last := last_exit.get(tap.terminal_code)) and abs(tap.tapped_at - last[0]) < window:
            out.placed[tap.tap_id] = last[1]
            out.repeats.add(tap.tap_id)
        else:
            made = incomplete(tap, book, config)
            out.journeys[made.id] = made
            out.placed[tap.tap_id] = made.id
            last_exit[tap.terminal_code] = (tap.tapped_at, made.id)
    if open_ is not None and open_.entry and open_.entry.tapped_at < now - config.max_trip:
        out.journeys[open_.id] = abandoned(open_, f"no exit within {config.max_trip}")
    return out


def _overdue(open_: Planned, exit_: Tap, config: JourneyConfig) -> bool:
    """Whether the sweeper had abandoned `open_` when the check-out `exit_` was tapped: open
    longer than the maximum trip time then, and not completed by that very tap online (an
    exit answered before the sweeper's round: what it was told stands)."""
    entry = open_.entry
    assert entry is not None
    return exit_.tapped_at - entry.tapped_at > config.max_trip and exit_.journey_id != open_.id


def _repeats_entry(open_: Planned, tap: Tap, config: JourneyConfig) -> bool:
    entry = open_.entry
    assert entry is not None
    return (
        entry.terminal_code == tap.terminal_code
        and abs(tap.tapped_at - entry.tapped_at) < config.anti_passback
    )


def opened(tap: Tap, held: Mapping[uuid.UUID, Decimal], book: PriceBook) -> Planned:
    journey_id = domain.journey_id_of(tap.tap_id)
    maximum = held.get(journey_id) or book.max_from(tap.terminal_code, tap.tapped_at)
    return Planned(journey_id, JourneyStatus.ACTIVE, tap, book.name(tap.terminal_code), maximum)


def abandoned(open_: Planned, reason: str) -> Planned:
    """Entered and never exited: charged the maximum held at its check-in."""
    return replace(
        open_,
        status=JourneyStatus.ABANDONED,
        fare=open_.held,
        pricing=Pricing.ABANDONED,
        reason=reason,
    )


def completed(open_: Planned, tap: Tap, book: PriceBook, config: JourneyConfig) -> Planned:
    """The open journey completed by the check-out `tap`, priced as online."""
    assert open_.entry is not None and open_.held is not None
    entry = Entry(open_.id, open_.entry.terminal_code, open_.entry.tapped_at, open_.held)
    ended, adjusted = domain.checkout_time(entry, tap.tapped_at)
    fare = None
    if entry.terminal_code != tap.terminal_code:
        fare = book.fare(entry.terminal_code, tap.terminal_code, entry.time)
    amount, pricing, notes = domain.checkout_price(entry, tap.terminal_code, ended, fare, config)
    if adjusted:
        notes = {**notes, "gate_clock_adjusted_from": tap.tapped_at.isoformat()}
    return replace(
        open_,
        status=JourneyStatus.COMPLETED,
        exit=tap,
        exit_name=book.name(tap.terminal_code),
        checkout_time=ended,
        fare=amount,
        pricing=pricing,
        notes=notes,
        closed_by=tap.tap_id,
    )


def incomplete(tap: Tap, book: PriceBook, config: JourneyConfig) -> Planned:
    """An exit with no journey open: charged the no-entry penalty in force at its time."""
    penalty = config.no_entry_penalty
    if penalty is None:
        penalty = book.max_to(tap.terminal_code, tap.tapped_at)
    return Planned(
        domain.journey_id_of(tap.tap_id),
        JourneyStatus.INCOMPLETE,
        entry=None,
        entry_name=None,
        held=None,
        exit=tap,
        exit_name=book.name(tap.terminal_code),
        checkout_time=tap.tapped_at,
        fare=penalty,
        pricing=Pricing.NO_ENTRY_PENALTY,
        reason=f"exit at {tap.gate_code} without an entry",
        closed_by=tap.tap_id,
    )
