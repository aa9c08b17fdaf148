"""`tiket facility health`: seed 003's database health checks of facility booking, asked of
the running booking service (FacilityService/CheckFacilityHealth) with an operator token.

Prints one row per check — booking_conflicts (bookings of a facility holding overlapping
time: FAIL unless 0), index_usage (index against sequential scans of facility_bookings:
WARN when sequential scans win) — and exits like a monitoring plugin: 0 when every check
passes, 1 on a WARN, 2 on a FAIL, 3 when the service cannot be asked."""

from __future__ import annotations

import argparse
import asyncio
import sys

import grpc
from tiket.booking.v1 import facility_pb2, facility_pb2_grpc

from cli import keys
from cli.table import render
from libs import auth, tls
from libs.config import Settings

CALL_TIMEOUT = 10.0
EXIT_CODES = {"PASS": 0, "WARN": 1, "FAIL": 2}
UNKNOWN = 3


def register(commands: argparse._SubParsersAction) -> None:
    """Add `facility health` to the `tiket` command's subcommands."""
    facility = commands.add_parser("facility", help="facility booking administration")
    actions = facility.add_subparsers(required=True, metavar="ACTION")
    health = actions.add_parser(
        "health",
        help="the facility booking health checks (conflicts, index usage): PASS/WARN/FAIL",
        description=__doc__.split("\n\n")[1],
    )
    health.set_defaults(run=lambda args, settings: sys.exit(asyncio.run(check(settings))))


async def check(settings: Settings, out=print) -> int:
    """Print the checks; the exit status they call for."""
    metadata = keys.bearer(keys.cli_token(settings, auth.Role.OPERATOR, "tiket-cli"))
    address = settings.addresses["booking"]
    async with tls.open_channel(address, tls.channel_credentials(settings)) as channel:
        stub = facility_pb2_grpc.FacilityServiceStub(channel)
        try:
            answer = await stub.CheckFacilityHealth(
                facility_pb2.CheckFacilityHealthRequest(), metadata=metadata, timeout=CALL_TIMEOUT
            )
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                out(f"tiket: no booking service answers at {address}: start it (tiket up)")
            else:
                out(f"tiket: health check refused: {exc.code().name}: {exc.details()}")
            return UNKNOWN
    rows = [(c.check_name, c.status, c.value) for c in answer.checks]
    out(render(["check", "status", "value"], rows))
    return max((EXIT_CODES.get(c.status, UNKNOWN) for c in answer.checks), default=UNKNOWN)
