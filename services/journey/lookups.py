"""What the journey service asks the fare service, remembered in-process for a short while:
gates, terminals and fares change rarely, and a tap must not wait on a second service for
them every time. Concurrent misses of one key share a single call.

Correctness: the hold only needs to be the maximum fare at check-in, and a trip never costs
more than was held (domain.checkout_price), so a fare cached a few seconds past a change can
never overcharge; the final price comes from the fare in force at check-in time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Generic, TypeVar

from grpc import aio
from tiket.fare.v1 import fare_pb2, fare_pb2_grpc

from libs.errors import FailedPrecondition, NotFound
from libs.money import from_money
from libs.timestamps import to_timestamp
from services.journey import remote
from services.journey.domain import Gate, GateType, Terminal

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
WHAT = "the fare service"
GATE_TYPES = {
    fare_pb2.GATE_TYPE_ENTRY: GateType.ENTRY,
    fare_pb2.GATE_TYPE_EXIT: GateType.EXIT,
    fare_pb2.GATE_TYPE_BIDIRECTIONAL: GateType.BIDIRECTIONAL,
}
# A gate missing from a terminal's cached list is looked up again, at most this often.
GATE_RECHECK_SECONDS = 2.0
PAGE = 500


class TtlCache(Generic[K, V]):
    """Values kept for `ttl` seconds; one load per key at a time; failures not kept."""

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[K, tuple[V, float]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}

    def age(self, key: K) -> float | None:
        """Seconds since `key` was loaded, None when not held."""
        entry = self._entries.get(key)
        return None if entry is None else time.monotonic() - entry[1]

    async def get(
        self, key: K, load: Callable[[], Awaitable[V]], usable: Callable[[V], bool] | None = None
    ) -> V:
        entry = self._entries.get(key)
        fresh = entry is not None and time.monotonic() - entry[1] < self.ttl
        if entry is not None and fresh and (usable is None or usable(entry[0])):
            return entry[0]
        loading = self._loading.get(key)
        if loading is None:
            loading = asyncio.ensure_future(load())
            self._loading[key] = loading
            loading.add_done_callback(lambda done: self._loaded(key, done))
        return await asyncio.shield(loading)

    def forget(self, key: K) -> None:
        self._entries.pop(key, None)

    def _loaded(self, key: K, done: asyncio.Future[V]) -> None:
        self._loading.pop(key, None)
        if done.cancelled() or done.exception() is not None:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (done.result(), time.monotonic())


@dataclass(frozen=True)
class FareVersion:
    price: Decimal
    effective_from: datetime
    effective_until: datetime | None

    def in_force_at(self, at: datetime) -> bool:
        return self.effective_from <= at and (
            self.effective_until is None or at < self.effective_until
        )


class FareLookups:
    def __init__(self, channel: aio.Channel, ttl: float, timeout: float) -> None:
        self.stub = fare_pb2_grpc.FareServiceStub(channel)
        self.ttl = ttl
        self.timeout = timeout
        self._gates: TtlCache[str, dict[str, Gate]] = TtlCache(ttl)
        self._terminals: TtlCache[str, Terminal] = TtlCache(ttl)
        self._max_from: TtlCache[str, Decimal] = TtlCache(ttl)
        self._max_to: TtlCache[str, Decimal] = TtlCache(ttl)
        self._fares: TtlCache[tuple[str, str], FareVersion | None] = TtlCache(ttl)

    async def gate(self, terminal_code: str, gate_code: str) -> Gate:
        """NOT_FOUND for an unknown terminal or gate."""
        gates = await self._gates.get(terminal_code, lambda: self._load_gates(terminal_code))
        if gate_code not in gates and (self._gates.age(terminal_code) or 0) > GATE_RECHECK_SECONDS:
            self._gates.forget(terminal_code)  # registered since we looked?
            gates = await self._gates.get(terminal_code, lambda: self._load_gates(terminal_code))
        if gate_code not in gates:
            raise NotFound(f"gate {gate_code} of terminal {terminal_code} not found")
        return gates[gate_code]

    async def terminal(self, code: str) -> Terminal:
        return await self._terminals.get(code, lambda: self._load_terminal(code))

    async def max_fare_from(self, origin: str, at: datetime) -> Decimal:
        """What a check-in at `origin` holds: the largest fare from it in force at `at`.
        FAILED_PRECONDITION (NO_FARE) when the terminal has no fare at all."""
        if self._near_now(at):
            return await self._max_from.get(origin, lambda: self._load_max_from(origin, None))
        return await self._load_max_from(origin, at)

    async def max_fare_to(self, destination: str, at: datetime) -> Decimal:
        """The largest fare to `destination` in force at `at`: the default no-entry penalty."""
        if self._near_now(at):
            return await self._max_to.get(destination, lambda: self._load_max_to(destination, None))
        return await self._load_max_to(destination, at)

    async def fare(self, origin: str, destination: str, at: datetime) -> Decimal | None:
        """The fare of the pair in force at `at`; None when the pair has none."""
        key = (origin, destination)

        def in_force(version: FareVersion | None) -> bool:
            return version is not None and version.in_force_at(at)

        version = await self._fares.get(key, lambda: self._load_fare(key, at), in_force)
        if not in_force(version):  # shared a load for another instant, or no fare then
            version = await self._load_fare(key, at)
        return version.price if version is not None and version.in_force_at(at) else None

    def _near_now(self, at: datetime) -> bool:
        return abs((datetime.now(UTC) - at).total_seconds()) < self.ttl

    # --- loads (one RPC each) ----------------------------------------------------------

    async def _load_gates(self, terminal_code: str) -> dict[str, Gate]:
        gates: dict[str, Gate] = {}
        token = ""
        while True:
            page = await remote.call(
                self.stub.ListGates,
                fare_pb2.ListGatesRequest(
                    terminal_code=terminal_code, page_size=PAGE, page_token=token
                ),
                WHAT,
                self.timeout,
            )
            for g in page.gates:
                if g.type in GATE_TYPES:
                    in_service = g.status != fare_pb2.GATE_STATUS_MAINTENANCE
                    gates[g.gate_code] = Gate(
                        g.terminal_code, g.gate_code, GATE_TYPES[g.type], in_service
                    )
            token = page.next_page_token
            if not token:
                return gates

    async def _load_terminal(self, code: str) -> Terminal:
        t = await remote.call(
            self.stub.GetTerminal, fare_pb2.GetTerminalRequest(code=code), WHAT, self.timeout
        )
        return Terminal(t.code, t.name, t.active)

    async def _load_max_from(self, origin: str, at: datetime | None) -> Decimal:
        request = fare_pb2.GetMaxFareRequest(origin_code=origin)
        if at is not None:
            request.at.CopyFrom(to_timestamp(at))
        try:
            found = await remote.call(self.stub.GetMaxFare, request, WHAT, self.timeout)
        except NotFound as exc:
            raise FailedPrecondition("NO_FARE", f"no fare from terminal {origin}: {exc}") from None
        price = from_money(found.price)
        if price <= 0:  # a wallet hold must be positive; free networks are not supported
            raise FailedPrecondition("NO_FARE", f"every fare from terminal {origin} is free")
        return price

    async def _load_max_to(self, destination: str, at: datetime | None) -> Decimal:
        best: Decimal | None = None
        token = ""
        while True:
            request = fare_pb2.ListFaresRequest(
                destination_code=destination, page_size=PAGE, page_token=token
            )
            request.in_force_at.CopyFrom(to_timestamp(at or datetime.now(UTC)))
            page = await remote.call(self.stub.ListFares, request, WHAT, self.timeout)
            for fare in page.fares:
                price = from_money(fare.price)
                best = price if best is None or price > best else best
            token = page.next_page_token
            if not token:
                break
        if best is None:
            raise FailedPrecondition("NO_FARE", f"no fare to terminal {destination}")
        return best

    async def _load_fare(self, key: tuple[str, str], at: datetime) -> FareVersion | None:
        request = fare_pb2.GetFareRequest(origin_code=key[0], destination_code=key[1])
        request.at.CopyFrom(to_timestamp(at))
        try:
            fare = await remote.call(self.stub.GetFare, request, WHAT, self.timeout)
        except NotFound:
            return None
        until = fare.effective_until.ToDatetime(UTC) if fare.HasField("effective_until") else None
        return FareVersion(from_money(fare.price), fare.effective_from.ToDatetime(UTC), until)
