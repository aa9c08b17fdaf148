"""The money audit of the journey tests and bench/taps.py: everything that would mean money
lost, taken twice or stuck, checked across the user and the journey databases."""

from __future__ import annotations

from decimal import Decimal

import psycopg

from services.user import store as user_store


async def audit(user_url: str, journey_url: str) -> list[str]:
    """Everything that would mean money lost, taken twice or stuck, across both databases:
    - the wallet's own invariants (balance = sum(ledger), held = sum(active holds));
    - per rider: balance = top-ups (± other moves) − the fares of their paid journeys;
    - per journey: exactly its fare taken under its reference once paid (net of the refunds
      and charges of its re-pricings, less a re-pricing charge refused), nothing otherwise;
    - no money taken for a journey that does not exist, no hold still held for a journey
      that is closed or never started;
    - at most one active journey per rider, no closing, tap or re-pricing left unfinished."""
    async with await psycopg.AsyncConnection.connect(user_url) as conn:
        problems = await user_store.invariant_violations(conn)
        cur = await conn.execute(
            """SELECT u.id::text, u.balance,
                      coalesce(sum(l.amount) FILTER (WHERE l.kind = 'top_up'
                         OR l.reference IS NULL OR l.reference NOT LIKE 'journey-%%'), 0)
                 FROM users u LEFT JOIN ledger_entries l ON l.user_id = u.id GROUP BY u.id"""
        )
        # top-ups and money moved for anything but journeys (a shop charge in a test)
        wallets = {uid: (balance, other) for uid, balance, other in await cur.fetchall()}
        cur = await conn.execute(  # net of the refunds of re-priced journeys (issue 16)
            """SELECT reference, -sum(amount) FROM ledger_entries
                WHERE kind IN ('capture', 'charge', 'refund') AND reference LIKE 'journey-%%'
                GROUP BY reference"""
        )
        taken = dict(await cur.fetchall())
        cur = await conn.execute("SELECT reference FROM holds WHERE status = 'held'")
        held = {row[0] for row in await cur.fetchall()}
    async with await psycopg.AsyncConnection.connect(journey_url) as conn:
        # a re-pricing charge the wallet refused is owed, not taken (an unpaid adjustment)
        cur = await conn.execute(
            """SELECT j.id, j.user_id::text, j.status, j.settlement, j.fare_charged
                      - coalesce((SELECT sum(a.amount) FROM journey_adjustments a
                                   WHERE a.journey_id = j.id AND a.state = 'unpaid'), 0)
                 FROM journey_history j"""
        )
        journeys = await cur.fetchall()
        cur = await conn.execute(
            """SELECT (SELECT count(*) FROM taps WHERE state = 'pending'),
                      (SELECT count(*) FROM journey_history WHERE settlement = 'pending')
                      + (SELECT count(*) FROM journey_adjustments WHERE state = 'pending')"""
        )
        pending_taps, pending_closings = await cur.fetchone()
    fares: dict[str, Decimal] = {}
    active: dict[str, int] = {}
    references = set()
    for journey_id, user_id, status, settlement, fare in journeys:
        reference = f"journey-{journey_id}"
        references.add(reference)
        expected = fare if settlement == "paid" else Decimal(0)
        if taken.get(reference, Decimal(0)) != expected:
            problems.append(f"{reference} ({status}, {settlement}): took {taken.get(reference)}")
        if settlement == "paid":
            fares[user_id] = fares.get(user_id, Decimal(0)) + fare
        if status == "active":
            active[user_id] = active.get(user_id, 0) + 1
        elif reference in held:
            problems.append(f"{reference} is {status} but its hold is still held")
    problems += [f"{r}: money taken for no journey" for r in set(taken) - references]
    problems += [f"{r}: hold held for no journey" for r in held - references]
    problems += [f"user {u} has {n} active journeys" for u, n in active.items() if n > 1]
    for user_id, (balance, top_ups) in wallets.items():
        if balance != top_ups - fares.get(user_id, Decimal(0)):
            problems.append(f"user {user_id}: balance {balance} != top-ups {top_ups} - fares")
    if pending_taps or pending_closings:
        problems.append(f"unfinished: {pending_taps} taps, {pending_closings} closings")
    return problems
