"""Domain records -> tiket.fare.v1 messages, and the enum mappings both ways."""

from __future__ import annotations

from google.type import latlng_pb2
from tiket.fare.v1 import fare_pb2

from libs.money import to_money
from libs.timestamps import to_timestamp
from services.fare.domain import FareVersion, Gate, GateStatus, GateType, Terminal

GATE_TYPE_TO_PROTO = {
    GateType.ENTRY: fare_pb2.GATE_TYPE_ENTRY,
    GateType.EXIT: fare_pb2.GATE_TYPE_EXIT,
    GateType.BIDIRECTIONAL: fare_pb2.GATE_TYPE_BIDIRECTIONAL,
}
GATE_TYPE_FROM_PROTO = {v: k for k, v in GATE_TYPE_TO_PROTO.items()}
GATE_STATUS_TO_PROTO = {
    GateStatus.ONLINE: fare_pb2.GATE_STATUS_ONLINE,
    GateStatus.OFFLINE: fare_pb2.GATE_STATUS_OFFLINE,
    GateStatus.MAINTENANCE: fare_pb2.GATE_STATUS_MAINTENANCE,
    GateStatus.ERROR: fare_pb2.GATE_STATUS_ERROR,
}
GATE_STATUS_FROM_PROTO = {v: k for k, v in GATE_STATUS_TO_PROTO.items()}


def terminal(t: Terminal) -> fare_pb2.Terminal:
    message = fare_pb2.Terminal(
        id=t.id,
        code=t.code,
        name=t.name,
        location=t.location or "",
        active=t.is_active,
        created_at=to_timestamp(t.created_at),
        updated_at=to_timestamp(t.updated_at),
    )
    if t.latitude is not None and t.longitude is not None:
        message.coordinates.CopyFrom(
            latlng_pb2.LatLng(latitude=float(t.latitude), longitude=float(t.longitude))
        )
    return message


def gate(g: Gate) -> fare_pb2.Gate:
    return fare_pb2.Gate(
        id=g.id,
        terminal_code=g.terminal_code,
        gate_code=g.gate_code,
        type=GATE_TYPE_TO_PROTO[g.gate_type],
        status=GATE_STATUS_TO_PROTO[g.status],
        reported_status=GATE_STATUS_TO_PROTO[g.reported_status],
        last_heartbeat_at=to_timestamp(g.last_heartbeat),
        created_at=to_timestamp(g.created_at),
        updated_at=to_timestamp(g.updated_at),
    )


def fare(v: FareVersion) -> fare_pb2.Fare:
    message = fare_pb2.Fare(
        id=v.id,
        origin_code=v.origin,
        destination_code=v.destination,
        price=to_money(v.price),
        effective_from=to_timestamp(v.effective_from),
        source=v.source,
        created_at=to_timestamp(v.created_at),
        active=v.is_active,
    )
    if v.effective_until is not None:
        message.effective_until.CopyFrom(to_timestamp(v.effective_until))
    return message
