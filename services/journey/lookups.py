"""What the journey service asks the fare service, remembered in-process for a short while:
gates, terminals and fares change rarely, and a tap must not wait on a second service for
them every time (libs.cache.LocalCache: concurrent misses of one key share a single call).

Correctness: the hold only needs to be the maximum fare at check-in, and a trip never costs
more than was held (domain.checkout_price), so a fare cached a few seconds past a change can
never overcharge; the final price comes from the fare in force at check-in time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from grpc import aio
from tiket.fare.v1 import fare_pb2, fare_pb2_grpc

from libs.cache import LocalCache
from libs.errors import FailedPrecondition, NotFound, not_found
from libs.money import from_money
from libs.timestamps import to_timestamp
from services.journey import remote
from services.journey.domain import Gate, GateType, Terminal

WHAT = "the fare service"
GATE_TYPES = {
    fare_pb2.GATE_TYPE_ENTRY: GateType.ENTRY,
    fare_pb2.GATE_TYPE_EXIT: GateType.EXIT,
    fare_pb2.GATE_TYPE_BIDIRECTIONAL: GateType.BIDIRECTIONAL,
}
# A gate missing from a terminal's cached list is looked up again, at most this often.
GATE_RECHECK_SECONDS = 2.0
PAGE = 500


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
        self._gates: LocalCache[str, dict[str, Gate]] = LocalCache(ttl)
        self._terminals: LocalCache[str, Terminal] = LocalCache(ttl)
        self._max_from: LocalCache[str, Decimal] = LocalCache(ttl)
        self._max_to: LocalCache[str, Decimal] = LocalCache(ttl)
        self._fares: LocalCache[tuple[str, str], FareVersion | None] = LocalCache(ttl)

    async def gate(self, terminal_code: str, gate_code: str) -> Gate:
        """NOT_FOUND for an unknown terminal or gate."""
        gates = await self._gates.get(terminal_code, lambda: self._load_gates(terminal_code))
        if gate_code not in gates and (self._gates.age(terminal_code) or 0) > GATE_RECHECK_SECONDS:
            self._gates.forget(terminal_code)  # registered since we looked?
            gates = await self._gates.get(terminal_code, lambda: self._load_gates(terminal_code))
        if gate_code not in gates:
            raise not_found("gate", f"{terminal_code}/{gate_code}")
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
