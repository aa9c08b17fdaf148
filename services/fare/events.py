"""Events of the terminal & fare service, written to the outbox in the caller's transaction."""

from __future__ import annotations

from datetime import datetime

from psycopg import AsyncConnection
from tiket.events.v1 import fare_pb2

from libs.events.outbox import emit
from libs.money import to_money
from services.fare.domain import FareVersion, Gate, GateStatus, Terminal

SOURCE = "/tiket/fare"
FARE_UPDATED = "fare.updated"


async def fare_updated(
    conn: AsyncConnection,
    new: FareVersion,
    previous: FareVersion | None,
    names: dict[str, str],
    changed_by: str,
) -> None:
    """`names`: terminal code -> name, for the riders' notification text."""
    data = fare_pb2.FareUpdated(
        fare_id=new.id,
        origin_code=new.origin,
        origin_name=names.get(new.origin, ""),
        destination_code=new.destination,
        destination_name=names.get(new.destination, ""),
        new_price=to_money(new.price),
        previous_fare_id=previous.id if previous else 0,
        source=new.source,
        changed_by=changed_by,
    )
    data.effective_from.FromDatetime(new.effective_from)
    if previous is not None:
        data.old_price.CopyFrom(to_money(previous.price))
    await emit(conn, SOURCE, FARE_UPDATED, f"{new.origin}-{new.destination}", data)


async def terminal_changed(
    conn: AsyncConnection, terminal: Terminal, changed_fields: list[str] | None
) -> None:
    """terminal.created when `changed_fields` is None, else terminal.updated."""
    data = fare_pb2.TerminalChanged(
        terminal_id=terminal.id,
        code=terminal.code,
        name=terminal.name,
        location=terminal.location or "",
        active=terminal.is_active,
        changed_fields=changed_fields or [],
    )
    if terminal.latitude is not None and terminal.longitude is not None:
        data.latitude = float(terminal.latitude)
        data.longitude = float(terminal.longitude)
    event_type = "terminal.created" if changed_fields is None else "terminal.updated"
    await emit(conn, SOURCE, event_type, terminal.code, data)


async def gate_status_changed(
    conn: AsyncConnection,
    gate: Gate,
    old: GateStatus,
    new: GateStatus,
    reason: str,
    last_heartbeat: datetime,
) -> None:
    data = fare_pb2.GateStatusChanged(
        gate_id=gate.id,
        terminal_code=gate.terminal_code,
        gate_code=gate.gate_code,
        gate_type=gate.gate_type.value,
        old_status=old.value,
        new_status=new.value,
        reason=reason,
    )
    data.last_heartbeat_at.FromDatetime(last_heartbeat)
    await emit(conn, SOURCE, "gate.status_changed", f"{gate.terminal_code}/{gate.gate_code}", data)
