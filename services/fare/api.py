"""tiket.fare.v1.FareService: proto <-> domain, input validation. Errors raised here or below
are turned into status codes by the shared interceptor."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

from grpc import aio
from tiket.fare.v1 import fare_pb2, fare_pb2_grpc

from libs import paging
from libs.auth import current_principal
from libs.errors import InvalidArgument
from libs.money import to_decimal, to_money
from libs.timestamps import to_timestamp
from libs.validation import (
    gate_code_field,
    page_size_field,
    required_text_field,
    terminal_code_field,
    text_field,
    timestamp_field,
)
from services.fare import domain, messages
from services.fare.app import FareApp
from services.fare.domain import GateStatus, TerminalFields
from services.fare.importer import GtfsImporter
from services.fare.terminals import TerminalApp

COORDINATE = Decimal("0.00000001")  # terminals.latitude/longitude keep 8 decimals (seed 004)


class FareApi(fare_pb2_grpc.FareServiceServicer):
    def __init__(self, terminals: TerminalApp, fares: FareApp, importer: GtfsImporter) -> None:
        self.terminals = terminals
        self.fares = fares
        self.importer = importer

    # --- terminals -------------------------------------------------------------------------

    async def CreateTerminal(
        self, request: fare_pb2.CreateTerminalRequest, context: aio.ServicerContext
    ):
        fields = TerminalFields(
            name=required_text_field(request.name, "name", max_len=100),
            location=text_field(request.location, "location", max_len=500),
            is_active=not request.inactive,
            **_coordinates(request, "coordinates"),
        )
        terminal = await self.terminals.create_terminal(
            terminal_code_field(request.code, "code"), fields
        )
        return messages.terminal(terminal)

    async def GetTerminal(self, request: fare_pb2.GetTerminalRequest, context: aio.ServicerContext):
        return messages.terminal(
            await self.terminals.get_terminal(terminal_code_field(request.code, "code"))
        )

    async def ListTerminals(
        self, request: fare_pb2.ListTerminalsRequest, context: aio.ServicerContext
    ):
        limit = page_size_field(request.page_size)
        key = paging.decode(request.page_token, 1)
        after = terminal_code_field(key[0], "page_token") if key else None
        found = await self.terminals.list_terminals(request.active_only, after, limit + 1)
        token = paging.encode(found[limit - 1].code) if len(found) > limit else ""
        return fare_pb2.ListTerminalsResponse(
            terminals=[messages.terminal(t) for t in found[:limit]], next_page_token=token
        )

    async def UpdateTerminal(
        self, request: fare_pb2.UpdateTerminalRequest, context: aio.ServicerContext
    ):
        mask = list(dict.fromkeys(request.update_mask.paths))
        if not mask:
            raise InvalidArgument.field(
                "update_mask", f"name the fields to change: {', '.join(domain.UPDATABLE)}"
            )
        for path in mask:
            if path not in domain.UPDATABLE:
                raise InvalidArgument.field(
                    "update_mask",
                    f"{path!r} cannot be changed; one of {', '.join(domain.UPDATABLE)}",
                )
        t = request.terminal
        wanted = TerminalFields(
            name=required_text_field(t.name, "terminal.name", max_len=100)
            if "name" in mask
            else "",
            location=text_field(t.location, "terminal.location", max_len=500),
            is_active=t.active,
            **_coordinates(t, "terminal.coordinates"),
        )
        code = terminal_code_field(t.code, "terminal.code")
        return messages.terminal(await self.terminals.update_terminal(code, wanted, mask))

    # --- gates -----------------------------------------------------------------------------

    async def RegisterGate(
        self, request: fare_pb2.RegisterGateRequest, context: aio.ServicerContext
    ):
        if request.type not in messages.GATE_TYPE_FROM_PROTO:
            raise InvalidArgument.field("type", "must be ENTRY, EXIT or BIDIRECTIONAL")
        gate = await self.terminals.register_gate(
            terminal_code_field(request.terminal_code, "terminal_code"),
            gate_code_field(request.gate_code),
            messages.GATE_TYPE_FROM_PROTO[request.type],
        )
        return messages.gate(gate)

    async def ListGates(self, request: fare_pb2.ListGatesRequest, context: aio.ServicerContext):
        limit = page_size_field(request.page_size)
        key = paging.decode(request.page_token, 2)
        after = (
            (terminal_code_field(key[0], "page_token"), gate_code_field(key[1], "page_token"))
            if key
            else None
        )
        status = None
        if request.status != fare_pb2.GATE_STATUS_UNSPECIFIED:
            status = _status(request.status, "status")
        terminal = (
            terminal_code_field(request.terminal_code, "terminal_code")
            if request.terminal_code
            else None
        )
        gates = await self.terminals.list_gates(terminal, status, after, limit + 1)
        token = ""
        if len(gates) > limit:
            token = paging.encode(gates[limit - 1].terminal_code, gates[limit - 1].gate_code)
        return fare_pb2.ListGatesResponse(
            gates=[messages.gate(g) for g in gates[:limit]], next_page_token=token
        )

    async def Heartbeat(self, request: fare_pb2.HeartbeatRequest, context: aio.ServicerContext):
        status = GateStatus.ONLINE
        if request.status != fare_pb2.GATE_STATUS_UNSPECIFIED:
            status = _status(request.status, "status")
        gate = await self.terminals.heartbeat(
            terminal_code_field(request.terminal_code, "terminal_code"),
            gate_code_field(request.gate_code),
            status,
        )
        return messages.gate(gate)

    async def ChangeGateStatus(
        self, request: fare_pb2.ChangeGateStatusRequest, context: aio.ServicerContext
    ):
        status = _status(request.status, "status")
        reason = text_field(request.reason, "reason", max_len=255) or f"set by {_caller()}"
        gate = await self.terminals.change_gate_status(
            terminal_code_field(request.terminal_code, "terminal_code"),
            gate_code_field(request.gate_code),
            status,
            reason,
        )
        return messages.gate(gate)

    # --- fares -----------------------------------------------------------------------------

    async def SetFare(self, request: fare_pb2.SetFareRequest, context: aio.ServicerContext):
        origin, destination = _pair(request)
        if not request.HasField("price"):
            raise InvalidArgument.field("price", "is required (it may be zero)")
        price = domain.check_price(to_decimal(request.price, "price", positive=False))
        result = await self.fares.set_fare(
            origin,
            destination,
            price,
            timestamp_field(request, "effective_from"),
            request_id=text_field(request.request_id, "request_id", max_len=100),
            changed_by=_caller(),
        )
        response = fare_pb2.SetFareResponse(fare=messages.fare(result.fare), changed=result.changed)
        if result.previous is not None:
            response.previous.CopyFrom(messages.fare(result.previous))
        return response

    async def GetFare(self, request: fare_pb2.GetFareRequest, context: aio.ServicerContext):
        origin, destination = _pair(request)
        at = timestamp_field(request, "at") or datetime.now(UTC)
        return messages.fare(await self.fares.get_fare(origin, destination, at))

    async def GetMaxFare(self, request: fare_pb2.GetMaxFareRequest, context: aio.ServicerContext):
        origin = terminal_code_field(request.origin_code, "origin_code")
        at = timestamp_field(request, "at") or datetime.now(UTC)
        dearest = await self.fares.get_max_fare(origin, at)
        return fare_pb2.MaxFare(
            origin_code=origin, price=to_money(dearest.price), fare=messages.fare(dearest)
        )

    async def ListFares(self, request: fare_pb2.ListFaresRequest, context: aio.ServicerContext):
        limit = page_size_field(request.page_size)
        origin = (
            terminal_code_field(request.origin_code, "origin_code") if request.origin_code else None
        )
        destination = None
        if request.destination_code:
            destination = terminal_code_field(request.destination_code, "destination_code")
        versions = await self.fares.list_fares(
            origin,
            destination,
            timestamp_field(request, "in_force_at"),
            request.include_inactive,
            _after_fare(request.page_token),
            limit + 1,
        )
        token = ""
        if len(versions) > limit:
            last = versions[limit - 1]
            token = paging.encode(
                last.origin, last.destination, last.effective_from.isoformat(), last.id
            )
        return fare_pb2.ListFaresResponse(
            fares=[messages.fare(v) for v in versions[:limit]], next_page_token=token
        )

    async def ExportFareSnapshot(
        self, request: fare_pb2.ExportFareSnapshotRequest, context: aio.ServicerContext
    ) -> AsyncIterator[fare_pb2.ExportFareSnapshotResponse]:
        terminal = (
            terminal_code_field(request.terminal_code, "terminal_code")
            if request.terminal_code
            else None
        )
        async for item in self.fares.export_snapshot(terminal):
            if isinstance(item, domain.Terminal):
                yield fare_pb2.ExportFareSnapshotResponse(terminal=messages.terminal(item))
            elif isinstance(item, domain.FareVersion):
                yield fare_pb2.ExportFareSnapshotResponse(fare=messages.fare(item))
            else:
                generated_at, terminals, fares = item
                end = fare_pb2.SnapshotEnd(
                    generated_at=to_timestamp(generated_at), terminals=terminals, fares=fares
                )
                yield fare_pb2.ExportFareSnapshotResponse(end=end)

    async def ImportGtfsFares(
        self, request: fare_pb2.ImportGtfsFaresRequest, context: aio.ServicerContext
    ):
        if not request.feed:
            raise InvalidArgument.field("feed", "is required: the bytes of a GTFS zip")
        mapping = {}
        for area_id, code in request.area_terminals.items():
            field = f"area_terminals[{area_id}]"
            mapping[required_text_field(area_id, field, max_len=255)] = terminal_code_field(
                code, field
            )
        report = await self.importer.run(
            request.feed,
            timestamp_field(request, "effective_from"),
            mapping,
            dry_run=request.dry_run,
            changed_by=_caller(),
        )
        response = fare_pb2.ImportGtfsFaresResponse(
            effective_from=to_timestamp(report.effective_from),
            area_terminals=report.areas,
            dry_run=report.dry_run,
            skipped=[fare_pb2.SkippedRule(rule=s.rule, reason=s.reason) for s in report.skipped],
        )
        for fare in report.imported:
            imported = response.imported.add(
                origin_code=fare.origin,
                destination_code=fare.destination,
                price=to_money(fare.price),
                fare_id=fare.fare_id,
                rule=fare.rule,
            )
            if fare.previous_price is not None:
                imported.previous_price.CopyFrom(to_money(fare.previous_price))
        return response


# --- fields ----------------------------------------------------------------------------------


def _pair(request) -> tuple[str, str]:
    origin = terminal_code_field(request.origin_code, "origin_code")
    destination = terminal_code_field(request.destination_code, "destination_code")
    domain.check_pair(origin, destination)
    return origin, destination


def _status(value: int, field: str) -> GateStatus:
    if value not in messages.GATE_STATUS_FROM_PROTO:
        raise InvalidArgument.field(field, "must be ONLINE, OFFLINE, MAINTENANCE or ERROR")
    return messages.GATE_STATUS_FROM_PROTO[value]


def _coordinates(message, field: str) -> dict[str, Decimal | None]:
    if not message.HasField("coordinates"):
        return {"latitude": None, "longitude": None}
    c = message.coordinates
    if not (math.isfinite(c.latitude) and math.isfinite(c.longitude)):
        raise InvalidArgument.field(field, "latitude and longitude must be finite numbers")
    latitude, longitude = Decimal(repr(c.latitude)), Decimal(repr(c.longitude))
    domain.check_coordinates(latitude, longitude, field)
    return {"latitude": latitude.quantize(COORDINATE), "longitude": longitude.quantize(COORDINATE)}


def _after_fare(token: str) -> tuple[str, str, datetime, int] | None:
    key = paging.decode(token, 4)
    if key is None:
        return None
    origin, destination, start, fare_id = key
    try:
        if not isinstance(fare_id, int) or not isinstance(start, str):
            raise ValueError
        return (
            terminal_code_field(origin, "page_token"),
            terminal_code_field(destination, "page_token"),
            datetime.fromisoformat(start),
            fare_id,
        )
    except (ValueError, InvalidArgument):
        raise InvalidArgument.field(
            "page_token", "is not a token from a previous response"
        ) from None


def _caller() -> str:
    principal = current_principal()
    return f"{principal.role}:{principal.subject}" if principal else "anonymous"
