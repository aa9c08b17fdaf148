"""The journey and user databases drop every connection, again and again, in the middle of a
burst of rides (pg_terminate_backend, as a failover, a restart or a cut network does). Every
tap answers OK or UNAVAILABLE — never INTERNAL, never a refusal it did not earn — the gates'
retries (same tap_id) finish every ride, and once the sweepers have run the money audit holds
and every rider paid each ride exactly once.

A ride here enters twice (at A, then at D, which abandons the journey from A at its held
fare) before it exits at E, so the taps also read and close journeys other than their own."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from decimal import Decimal

import grpc
import psycopg
import pytest

from libs.auth import Role
from services.journey.tests.audit import audit
from services.journey.tests.mesh import Mesh, new_rider, settle, tap_request

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]
RIDERS = 20
RIDES = 3
RIDE = (("in", "A", "A-ENTRY-01"), ("in", "D", "D-BI-01"), ("out", "E", "E-EXIT-01"))
RIDE_COSTS = 12_000 + 9_000  # A abandoned at the dearest fare from A, then D -> E
BALANCE = 100_000
KILL_EVERY = 4  # answered taps between two rounds of killing
# Only keeps a broken run from hanging: a tap is retried until it answers.
GIVE_UP_SECONDS = 60.0


class Killer:
    """Drops every connection to the journey and user databases each time KILL_EVERY more
    taps have been answered, until stopped: the faults keep pace with the burst."""

    def __init__(self, mesh: Mesh) -> None:
        self.databases = [mesh.database_url(name) for name in ("journey", "user")]
        self.answered = 0
        self.rounds = 0
        self.killed = 0
        self._progress = asyncio.Condition()
        self._stopped = False

    async def answer(self) -> None:
        async with self._progress:
            self.answered += 1
            self._progress.notify_all()

    async def stop(self) -> None:
        async with self._progress:
            self._stopped = True
            self._progress.notify_all()

    def _due(self, target: int):
        return lambda: self._stopped or self.answered >= target

    async def run(self) -> None:
        while True:
            async with self._progress:
                await self._progress.wait_for(self._due(self.answered + KILL_EVERY))
                if self._stopped:
                    return
            for url in self.databases:
                self.killed += await terminate_others(url)
            self.rounds += 1


async def terminate_others(url: str) -> int:
    """Terminate every other backend connected to the database of `url`."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            """SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
                WHERE datname = current_database() AND pid <> pg_backend_pid()"""
        )
        row = await cur.fetchone()
    return 0 if row is None else row[0]


async def gate_rides(mesh: Mesh, card: str, killer: Killer, codes: Counter[str]) -> None:
    """A rider's rides; each tap retried with its tap_id while UNAVAILABLE (the journey
    service's circuit to a failing user service stays open 5 s at a time)."""
    for _ in range(RIDES):
        for kind, terminal, gate in RIDE:
            request = tap_request(kind, card, terminal, gate)
            call = mesh.journeys.CheckIn if kind == "in" else mesh.journeys.CheckOut
            metadata = mesh.metadata(Role.GATE, f"{terminal}/{gate}")
            give_up = time.monotonic() + GIVE_UP_SECONDS
            while True:
                try:
                    await call(request, metadata=metadata, timeout=GIVE_UP_SECONDS)
                except grpc.aio.AioRpcError as exc:
                    codes[exc.code().name] += 1
                    if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > give_up:
                        raise
                    await asyncio.sleep(0.02)  # a gate's pause before it retries
                    continue
                codes["OK"] += 1
                await killer.answer()
                break


async def test_connections_dropped_mid_burst_lose_and_double_nothing(mesh):
    riders = [await new_rider(mesh, BALANCE) for _ in range(RIDERS)]
    killer = Killer(mesh)
    killing = asyncio.create_task(killer.run())
    codes: Counter[str] = Counter()
    try:
        await asyncio.gather(*(gate_rides(mesh, card, killer, codes) for _, card in riders))
    finally:
        await killer.stop()
        await killing
    assert set(codes) <= {"OK", "UNAVAILABLE"}, codes
    assert codes["OK"] == RIDERS * RIDES * len(RIDE)
    assert codes["UNAVAILABLE"] > 0 and killer.killed > 0, "the kills interrupted nothing"

    await settle(mesh)
    assert await audit(mesh.database_url("user"), mesh.database_url("journey")) == []
    async with await psycopg.AsyncConnection.connect(mesh.database_url("user")) as conn:
        cur = await conn.execute(
            "SELECT balance, held FROM users WHERE id = ANY(%s)", ([u for u, _ in riders],)
        )
        wallets = await cur.fetchall()
    assert set(wallets) == {(Decimal(BALANCE - RIDES * RIDE_COSTS), 0)}  # each ride paid once
