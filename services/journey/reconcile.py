"""SyncOfflineTaps: a gate's offline taps placed on their cards' timelines — timeline.py
states the rules, revision.py the money, offline_results.py the answers.

Each card of the batch is a saga of idempotent steps:
1. what is unsettled on the card is finished first (a closing, an adjustment): a journey
   whose money is in flight is never revised;
2. the replay is run once on what is on record to learn which prices and names it needs,
   and they are fetched: the fare service is never asked inside a transaction;
3. one transaction under the card's advisory lock: taps already known are set aside
   (DUPLICATE), the card's facts replayed with the new taps, the journeys written as the
   replay makes them (journey.revised for each one announced closed before), the
   adjustments and the new taps with their answers recorded. All or nothing: a crash
   leaves nothing (the re-sent batch applies it) or everything (DUPLICATE);
4. money, refunds first: adjustments moved, closings settled (closings.py), each idempotent
   by the adjustment's or the journey's id; a crash or a dependency down leaves them pending
   for the sweeper (jobs.py) or the card's next sync.
Cards are independent: a failure answers the whole call with its error, and the gate's
re-send finds the cards done before it DUPLICATE."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial

from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool
from tiket.journey.v1 import journey_pb2

from libs.db.transaction import in_transaction, read
from libs.errors import Aborted, FailedPrecondition, NotFound, TiketError
from services.journey import (
    events,
    messages,
    offline,
    offline_results,
    reconcile_store,
    revision,
)
from services.journey import timeline as tl
from services.journey.adjustments import Adjustments
from services.journey.closings import Closings
from services.journey.config import JourneyConfig
from services.journey.domain import Journey, Tap, TapKind, TapState, journey_id_of
from services.journey.lookups import FareLookups
from services.journey.offline import SyncBatch
from services.journey.reconcile_store import Adjustment
from services.journey.wallet import WalletClient

log = logging.getLogger(__name__)
ATTEMPTS = 6
PARALLEL_CARDS = 8
PARALLEL_LOOKUPS = 16
Result = journey_pb2.OfflineTapResult


class _Again(Exception):
    """The transaction saw something to do first (prices to fetch, money to settle, a tap
    another attempt recorded meanwhile, a tap still being answered online): rolled back,
    and tried again; after ATTEMPTS the call answers ABORTED and the gate re-sends later."""


@dataclass
class Scope:
    """A card's timeline as recorded, around the new taps."""

    new: list[Tap]
    duplicates: dict[uuid.UUID, Result] = field(default_factory=dict)
    facts: list[Tap] = field(default_factory=list)
    on_record: dict[uuid.UUID, Journey] = field(default_factory=dict)

    @property
    def held(self) -> dict[uuid.UUID, Decimal]:
        return {j.id: j.held_amount for j in self.on_record.values() if j.held_amount}


@dataclass
class Applied:
    results: dict[uuid.UUID, Result]
    changed: list[revision.Change] = field(default_factory=list)
    adjustments: list[Adjustment] = field(default_factory=list)


class Reconciler:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        wallet: WalletClient,
        fares: FareLookups,
        closings: Closings,
        config: JourneyConfig,
    ) -> None:
        self.pool = pool
        self.wallet = wallet
        self.fares = fares
        self.closings = closings
        self.adjustments = Adjustments(pool, wallet)
        self.config = config

    async def sync(self, batch: SyncBatch) -> journey_pb2.SyncOfflineTapsResponse:
        now = datetime.now(UTC)
        gate = await self.fares.gate(batch.terminal_code, batch.gate_code)
        results: dict[uuid.UUID, Result] = {}
        by_card: dict[str, list[offline.OfflineTap]] = {}
        for tap in batch.taps:
            if (rejection := offline.rejection(tap, gate, now, self.config)) is not None:
                results[tap.tap_id] = offline_results.rejected(tap.tap_id, rejection)
            else:
                by_card.setdefault(tap.card_id, []).append(tap)
        lanes = asyncio.Semaphore(PARALLEL_CARDS)

        async def card(card_id: str, taps: list[offline.OfflineTap]) -> None:
            async with lanes:
                user_id = await self._user_of(card_id)
                if user_id is None:
                    unknown = offline.Rejection(offline.UNKNOWN_CARD, f"no rider holds {card_id}")
                    results.update(
                        {t.tap_id: offline_results.rejected(t.tap_id, unknown) for t in taps}
                    )
                    return
                records = [offline.as_tap(t, batch, user_id) for t in taps]
                try:
                    results.update(await self.sync_card(user_id, records, now))
                except FailedPrecondition as exc:  # a tap with no fare in force then
                    unpriced = offline.Rejection(exc.reason, exc.message)
                    results.update(
                        {t.tap_id: offline_results.rejected(t.tap_id, unpriced) for t in taps}
                    )

        outcomes = await asyncio.gather(
            *(card(c, taps) for c, taps in by_card.items()), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return journey_pb2.SyncOfflineTapsResponse(results=[results[t.tap_id] for t in batch.taps])

    async def _user_of(self, card_id: str) -> uuid.UUID | None:
        try:
            return (await self.wallet.rider(card_id)).user_id
        except NotFound:
            return None

    async def sync_card(
        self, user_id: uuid.UUID, taps: list[Tap], now: datetime
    ) -> dict[uuid.UUID, Result]:
        """Place one card's new taps (steps 1-4 of the module's saga)."""
        await self.finish(user_id)
        book = await self._learn(user_id, taps, now)
        for attempt in range(ATTEMPTS):
            work = partial(self._apply, user_id=user_id, taps=taps, book=book, now=now)
            try:
                applied = await in_transaction(self.pool, work, pipeline=False)
            except (_Again, errors.UniqueViolation):  # UniqueViolation: an online entry raced
                await asyncio.sleep(0.05 * attempt)
                await self._fetch(book)
                await self.finish(user_id)
                continue
            await self._move_money(applied)
            return applied.results
        raise Aborted(f"the timeline of card {taps[0].card_id} kept changing; send the taps again")

    async def _learn(self, user_id: uuid.UUID, taps: list[Tap], now: datetime) -> tl.PriceBook:
        """Step 2: the prices a replay of what is on record needs, fetched."""
        book = tl.PriceBook()
        try:
            scope = await read(self.pool, partial(self._scope, user_id=user_id, taps=taps))
        except _Again:
            return book  # the transaction will find out again, and fetch
        if scope.new:
            tl.replay([*scope.facts, *scope.new], scope.held, book, self.config, now)
            await self._fetch(book)
        return book

    async def _scope(self, conn: AsyncConnection, user_id: uuid.UUID, taps: list[Tap]) -> Scope:
        known = await reconcile_store.taps(conn, [t.tap_id for t in taps])
        scope = Scope(new=[])
        duplicates: list[Tap] = []
        for tap in taps:
            first = known.get(tap.tap_id)
            if first is not None and first.state is TapState.PENDING:
                raise _Again(f"tap {tap.tap_id} is still being answered online")
            if first is None or (offline.adoptable(first) and offline.same_tap(first, tap)):
                scope.new.append(tap)
            elif offline.same_tap(first, tap):
                duplicates.append(first)
            else:
                conflict = offline.Rejection(
                    offline.TAP_ID_CONFLICT,
                    f"tap_id {tap.tap_id} names another tap ({first.kind} of card "
                    f"{first.card_id} at {first.gate_code}); a new tap needs a new tap_id",
                )
                scope.duplicates[tap.tap_id] = offline_results.rejected(tap.tap_id, conflict)
        linked = await reconcile_store.journeys(
            conn, [t.journey_id for t in duplicates if t.journey_id]
        )
        for first in duplicates:
            journey = linked.get(first.journey_id) if first.journey_id else None
            scope.duplicates[first.tap_id] = offline_results.duplicate(first, journey)
        if scope.new:
            earliest = min(t.tapped_at for t in scope.new)
            since = await reconcile_store.replay_start(conn, user_id, earliest)
            new_ids = {t.tap_id for t in scope.new}
            recorded = await reconcile_store.facts(conn, user_id, since)
            scope.facts = [t for t in recorded if t.tap_id not in new_ids]
            ids = {journey_id_of(t.tap_id) for t in [*scope.facts, *scope.new]}
            scope.on_record = await reconcile_store.journeys(conn, ids)
        return scope

    async def _apply(
        self,
        conn: AsyncConnection,
        user_id: uuid.UUID,
        taps: list[Tap],
        book: tl.PriceBook,
        now: datetime,
    ) -> Applied:
        await reconcile_store.lock_timeline(conn, user_id)
        scope = await self._scope(conn, user_id, taps)
        if not scope.new:
            return Applied(scope.duplicates)
        replayed = tl.replay([*scope.facts, *scope.new], scope.held, book, self.config, now)
        if book.missing:
            raise _Again("prices to fetch")
        try:
            changed = revision.changes(replayed, scope.on_record, now)
        except revision.Unsettled as exc:
            raise _Again(str(exc)) from None
        written = await reconcile_store.write_journeys(conn, [c.after for c in changed])
        changed = [replace(c, after=after) for c, after in zip(changed, written, strict=True)]
        for change in changed:
            if change.revises:
                assert change.before is not None
                await events.revised(conn, change.before, change.after)
        adjustments = [
            Adjustment(uuid.uuid4(), c.after.id, user_id, c.adjustment, offline_results.describe(c))
            for c in changed
            if c.adjustment
        ]
        await reconcile_store.insert_adjustments(conn, adjustments)
        links = [
            (t.tap_id, replayed.placed[t.tap_id])
            for t in scope.facts
            if t.kind is TapKind.CHECKOUT and t.tap_id in replayed.placed
        ]
        await reconcile_store.link_taps(conn, links)
        after = {**scope.on_record, **{c.after.id: c.after for c in changed}}
        results = offline_results.placed(scope.new, replayed, changed, after)
        new = [
            replace(t, journey_id=replayed.placed.get(t.tap_id))
            if t.kind is TapKind.CHECKOUT
            else t
            for t in scope.new
        ]
        answers = [(t, results[t.tap_id].SerializeToString()) for t in new]
        if await reconcile_store.record_offline(conn, answers) != len(new):
            raise _Again("another attempt recorded one of the taps meanwhile")
        for tap in new:
            if tap.kind is TapKind.CHECKIN and tap.tap_id not in replayed.repeats:
                journey_id = replayed.placed[tap.tap_id]
                await events.offline_checked_in(conn, tap, journey_id, book.name(tap.terminal_code))
        return Applied({**scope.duplicates, **results}, changed, adjustments)

    async def _move_money(self, applied: Applied) -> None:
        """Step 4: refunds, closings, then charges — each left to the sweeper on failure.
        The answers show each journey as it then is."""
        refunds = [a for a in applied.adjustments if a.amount < 0]
        charges = [a for a in applied.adjustments if a.amount > 0]
        for adjustment in refunds:
            await _leave_on_failure(self.adjustments.move(adjustment), adjustment.id)
        settled: dict[uuid.UUID, Journey] = {}
        for change in applied.changed:
            if change.settles:
                done = await _leave_on_failure(self.closings.settle(change.after), change.after.id)
                if isinstance(done, Journey):
                    settled[done.id] = done
        for adjustment in charges:
            await _leave_on_failure(self.adjustments.move(adjustment), adjustment.id)
        for result in applied.results.values():
            if result.journey.id and uuid.UUID(result.journey.id) in settled:
                result.journey.CopyFrom(messages.journey(settled[uuid.UUID(result.journey.id)]))

    async def finish(self, user_id: uuid.UUID | None = None) -> int:
        """Step 1 (and the sweeper's job with `user_id` None for the adjustments): the
        closings and adjustments still pending. How many were finished."""
        done = 0
        if user_id is not None:
            for journey in await read(self.pool, reconcile_store.unsettled, user_id):
                done += (
                    await _leave_on_failure(self.closings.settle(journey), journey.id) is not None
                )
        older = timedelta(0) if user_id is not None else self.config.settle_after
        for adjustment in await self.adjustments.pending(user_id, older, 200):
            done += (
                await _leave_on_failure(self.adjustments.move(adjustment), adjustment.id)
                is not None
            )
        return done

    async def _fetch(self, book: tl.PriceBook) -> None:
        """Every price and name the last replay missed."""
        lanes = asyncio.Semaphore(PARALLEL_LOOKUPS)

        async def one(key: tl.PriceKey) -> None:
            async with lanes:
                book.known[key] = await self._lookup(key)

        await asyncio.gather(*(one(k) for k in list(book.missing)))
        book.missing.clear()

    async def _lookup(self, key: tl.PriceKey):
        what, *args = key
        if what == "name":
            return (await self.fares.terminal(args[0])).name
        if what == "max_from":
            return await self.fares.max_fare_from(args[0], args[1])
        if what == "fare":
            return await self.fares.fare(args[0], args[1], args[2])
        return await self.fares.max_fare_to(args[0], args[1])


async def _leave_on_failure(step, what: uuid.UUID):
    """Await a money step; a refusal or an outage leaves it for the sweeper (None)."""
    try:
        return await step or True
    except FailedPrecondition as exc:  # a check-out refused online meanwhile: undone
        log.info("reconciliation: %s refused: %s", what, exc)
    except TiketError as exc:
        log.warning("reconciliation: %s left for the sweeper: %s", what, exc)
    return None
