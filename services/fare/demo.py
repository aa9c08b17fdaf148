"""Demo data: seed 004's five terminals, ten gates (in the statuses the seed gives them) and
twenty-pair fare matrix. Loaded through the public API, idempotently: running it again
(every `make run`) changes nothing (terminal and gate codes are natural keys, fares carry a
request_id) and undoes nothing staff did since: a gate gets its seed status only while
nobody has changed it, and the matrix printed is the fares in force."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from google.type import latlng_pb2
from grpc import aio
from tiket.fare.v1 import fare_pb2, fare_pb2_grpc

from libs.money import from_money, to_money

DEMO_TERMINALS = [
    # code, name, location, latitude, longitude
    ("A", "Terminal Utara", "Jl. Raya Utara No.1", -7.250445, 112.768845),
    ("B", "Terminal Selatan", "Jl. Raya Selatan No.2", -7.265445, 112.768845),
    ("C", "Terminal Timur", "Jl. Raya Timur No.3", -7.257445, 112.778845),
    ("D", "Terminal Barat", "Jl. Raya Barat No.4", -7.257445, 112.758845),
    ("E", "Terminal Pusat", "Jl. Raya Pusat No.5", -7.257445, 112.768845),
]
DEMO_GATES = [
    # terminal, gate code, type, status
    ("A", "A-ENTRY-01", fare_pb2.GATE_TYPE_ENTRY, fare_pb2.GATE_STATUS_ONLINE),
    ("A", "A-EXIT-01", fare_pb2.GATE_TYPE_EXIT, fare_pb2.GATE_STATUS_ONLINE),
    ("A", "A-BI-01", fare_pb2.GATE_TYPE_BIDIRECTIONAL, fare_pb2.GATE_STATUS_MAINTENANCE),
    ("B", "B-ENTRY-01", fare_pb2.GATE_TYPE_ENTRY, fare_pb2.GATE_STATUS_ONLINE),
    ("B", "B-EXIT-01", fare_pb2.GATE_TYPE_EXIT, fare_pb2.GATE_STATUS_ONLINE),
    ("C", "C-ENTRY-01", fare_pb2.GATE_TYPE_ENTRY, fare_pb2.GATE_STATUS_ONLINE),
    ("C", "C-EXIT-01", fare_pb2.GATE_TYPE_EXIT, fare_pb2.GATE_STATUS_OFFLINE),
    ("D", "D-BI-01", fare_pb2.GATE_TYPE_BIDIRECTIONAL, fare_pb2.GATE_STATUS_ONLINE),
    ("E", "E-ENTRY-01", fare_pb2.GATE_TYPE_ENTRY, fare_pb2.GATE_STATUS_ONLINE),
    ("E", "E-EXIT-01", fare_pb2.GATE_TYPE_EXIT, fare_pb2.GATE_STATUS_ONLINE),
]
# origin -> destination -> price (IDR), seed 004's matrix
DEMO_FARES = {
    "A": {"B": 5000, "C": 7000, "D": 9000, "E": 12000},
    "B": {"A": 5000, "C": 6000, "D": 8000, "E": 11000},
    "C": {"A": 7000, "B": 6000, "D": 7000, "E": 10000},
    "D": {"A": 9000, "B": 8000, "C": 7000, "E": 9000},
    "E": {"A": 12000, "B": 11000, "C": 10000, "D": 9000},
}


async def load(
    channel: aio.Channel, metadata: list[tuple[str, str]], out: Callable[[str], None]
) -> None:
    stub = fare_pb2_grpc.FareServiceStub(channel)
    for code, name, location, latitude, longitude in DEMO_TERMINALS:
        terminal = await stub.CreateTerminal(
            fare_pb2.CreateTerminalRequest(
                code=code,
                name=name,
                location=location,
                coordinates=latlng_pb2.LatLng(latitude=latitude, longitude=longitude),
            ),
            metadata=metadata,
        )
        out(f"  terminal {terminal.code}  {terminal.name:<17} {terminal.location}")
    for terminal, gate_code, gate_type, status in DEMO_GATES:
        gate = await stub.RegisterGate(
            fare_pb2.RegisterGateRequest(
                terminal_code=terminal, gate_code=gate_code, type=gate_type
            ),
            metadata=metadata,
        )
        untouched = gate.updated_at == gate.created_at  # no status set, no heartbeat yet
        if status != fare_pb2.GATE_STATUS_ONLINE and untouched:
            await stub.ChangeGateStatus(
                fare_pb2.ChangeGateStatusRequest(
                    terminal_code=terminal, gate_code=gate_code, status=status, reason="demo data"
                ),
                metadata=metadata,
            )
    out(f"  gates    {', '.join(g[1] for g in DEMO_GATES)}")
    for origin, row in DEMO_FARES.items():
        for destination, price in row.items():
            await stub.SetFare(
                fare_pb2.SetFareRequest(
                    origin_code=origin,
                    destination_code=destination,
                    price=to_money(Decimal(price)),
                    request_id=f"demo-fare-{origin}-{destination}",
                ),
                metadata=metadata,
            )
    codes = list(DEMO_FARES)
    out("  fares (Rp)  " + "".join(f"{'to ' + c:>9}" for c in codes))
    for origin in codes:
        cells = [
            f"{await _price(stub, metadata, origin, c):>9,}" if c != origin else f"{'-':>9}"
            for c in codes
        ]
        out(f"  from {origin}      {''.join(cells)}")


async def _price(
    stub: fare_pb2_grpc.FareServiceStub,
    metadata: list[tuple[str, str]],
    origin: str,
    destination: str,
) -> int:
    """The pair's fare in force now, in whole rupiah."""
    request = fare_pb2.GetFareRequest(origin_code=origin, destination_code=destination)
    fare = await stub.GetFare(request, metadata=metadata)
    return int(from_money(fare.price))
