"""What the tap use cases (checkin.py, checkout.py) and the sweeper ask of a tap's record."""

from __future__ import annotations

import uuid

from psycopg_pool import AsyncConnectionPool

from libs.db.transaction import in_statement, read
from services.journey import domain, tap_store
from services.journey.domain import Tap, TapRequest, TapState
from services.journey.wallet import WalletClient


async def first_answer(pool: AsyncConnectionPool, request: TapRequest) -> Tap | None:
    """The tap's first answer, if it has one. Taps are checked (gate, card, fare) before
    the database is read, so a check that fails now — the card blocked since, say — asks
    this before refusing: a retry gets the first answer, whatever changed meanwhile."""
    first = await read(pool, tap_store.tap, request.tap_id)
    if first is None or first.state is TapState.PENDING:
        return None
    return domain.same_tap(first, request)


async def final_tap(pool: AsyncConnectionPool, tap_id: uuid.UUID) -> Tap:
    """The record of a tap another attempt (or the sweeper) has answered."""
    final = await read(pool, tap_store.tap, tap_id)
    assert final is not None and final.state is not TapState.PENDING
    return final


async def release_hold_of(pool: AsyncConnectionPool, wallet: WalletClient, tap: Tap) -> None:
    """Release the hold of a check-in tap answered without its journey (its release noted
    as owed first), then note it done. A failure leaves it owed, for the sweeper."""
    assert tap.journey_id is not None
    await wallet.release(domain.hold_reference(tap.journey_id))
    await in_statement(pool, lambda conn: tap_store.released(conn, tap.tap_id))
