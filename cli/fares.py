"""`tiket fares …`: fare administration from the command line.

`tiket fares import-gtfs FEED.zip` checks the feed here first (a malformed file is reported
with its file, line and field before anything is sent), then hands the fare files to the
running fare service's ImportGtfsFares RPC with an admin token, and prints its report. The
service does the import (one transaction, idempotent), so the CLI never writes to the
service's database and the service's cache and events stay right.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import datetime
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from tiket.fare.v1 import fare_pb2, fare_pb2_grpc

from cli import keys
from cli.table import render
from libs import auth, tls
from libs.config import Settings
from libs.money import from_money, rupiah
from libs.timestamps import to_timestamp
from services.fare import gtfs

CALL_TIMEOUT = 120.0
# Statuses with which the fare service answers before it writes anything: the import was
# refused whole. After any other failure (a deadline, a lost connection mid-call, an internal
# error) the import may have been applied, or not.
REFUSED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNIMPLEMENTED,
}
# The report lists every rule of the feed, imported or skipped with its reason: several times
# the feed's size, past gRPC's default 4 MB a client takes for a network of a few hundred
# areas. It comes from the fare service the command called, so take it whole.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1)]
# A network of some hundred terminals takes tens of seconds to import: say it is still going.
PROGRESS_SECONDS = 10.0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `fares import-gtfs` to the `tiket` command's subcommands."""
    fares = commands.add_parser("fares", help="fare administration")
    actions = fares.add_subparsers(required=True, metavar="ACTION")
    imports = actions.add_parser(
        "import-gtfs",
        help="import the fare matrix of a GTFS Fares v2 feed into the running fare service",
        description=__doc__.split("\n\n")[1],
    )
    imports.add_argument("feed", type=Path, metavar="FEED.zip")
    imports.add_argument(
        "--effective-from",
        metavar="TIME",
        help="ISO 8601 instant with an offset, e.g. 2025-07-01T00:00:00+07:00 (default: now)",
    )
    imports.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="AREA=CODE",
        help="map a GTFS area to a terminal code (repeatable); otherwise an area maps to the "
        "terminal whose code is its area_id, or the one its stops name as stop_code",
    )
    imports.add_argument(
        "--dry-run", action="store_true", help="report what would change, change nothing"
    )
    imports.set_defaults(run=lambda args, settings: asyncio.run(import_gtfs(args, settings)))


async def import_gtfs(args: argparse.Namespace, settings: Settings) -> None:
    request = _request(args)
    metadata = keys.bearer(keys.cli_token(settings, auth.Role.ADMIN, "tiket-cli"))
    address = settings.addresses["fare"]
    credentials = tls.channel_credentials(settings)
    async with tls.open_channel(address, credentials, options=CHANNEL_OPTIONS) as channel:
        stub = fare_pb2_grpc.FareServiceStub(channel)
        progress = asyncio.create_task(_still_going(f"importing at the fare service {address}"))
        try:
            report = await stub.ImportGtfsFares(request, metadata=metadata, timeout=CALL_TIMEOUT)
        except grpc.RpcError as exc:
            sys.exit(_failure(exc, address))
        finally:
            progress.cancel()
    print(render_report(args.feed, report))


async def _still_going(what: str) -> None:
    """A line on stderr every PROGRESS_SECONDS until cancelled, so a long import does not
    look hung."""
    started = time.monotonic()
    while True:
        await asyncio.sleep(PROGRESS_SECONDS)
        waited = time.monotonic() - started
        print(f"tiket: still {what} ({waited:.0f} s) ...", file=sys.stderr, flush=True)


def _failure(exc: grpc.RpcError, address: str) -> str:
    """What the command says when the call fails: whether anything changed, and what to do."""
    code, details = exc.code(), exc.details()
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"tiket: no fare service at {address}: start it (tiket up)"
    if code in REFUSED:
        return f"tiket: import refused, nothing changed: {code.name}: {details}"
    return (
        f"tiket: the import may or may not have been applied ({code.name}: {details}); "
        "run the same command again: importing a feed again changes only what it has not "
        "changed yet"
    )


def _request(args: argparse.Namespace) -> fare_pb2.ImportGtfsFaresRequest:
    try:
        data = args.feed.read_bytes()
    except OSError as exc:
        sys.exit(f"tiket: cannot read {args.feed}: {exc.strerror}")
    try:
        gtfs.read_feed(data)
    except gtfs.GtfsError as exc:
        sys.exit(f"tiket: {args.feed}: {exc}; nothing imported")
    request = fare_pb2.ImportGtfsFaresRequest(feed=gtfs.slim(data), dry_run=args.dry_run)
    for item in args.map:
        area, _, code = item.partition("=")
        if not area or not code:
            sys.exit(f"tiket: --map {item!r}: expected AREA=CODE, e.g. --map pusat=E")
        request.area_terminals[area] = code
    if args.effective_from:
        request.effective_from.CopyFrom(_instant(args.effective_from))
    if request.ByteSize() > gtfs.MAX_UPLOAD_BYTES:
        sys.exit(
            f"tiket: {args.feed}: its fare files come to {_megabytes(len(request.feed))} "
            f"compressed; one import takes at most {_megabytes(gtfs.MAX_UPLOAD_BYTES)}. "
            "Import it in parts: feeds each with some of the leg rules and the stops and "
            "areas they name; nothing imported"
        )
    return request


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def _instant(text: str) -> Timestamp:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        sys.exit(f"tiket: --effective-from {text!r} is not an ISO 8601 time")
    if value.tzinfo is None:  # the example spells the time out: "2025-07-01+07:00" is 07:00
        example = f"{value.isoformat()}+07:00"
        sys.exit(f"tiket: --effective-from {text!r} needs an offset, e.g. {example}")
    return to_timestamp(value)


def render_report(feed: Path, report: fare_pb2.ImportGtfsFaresResponse) -> str:
    start = report.effective_from.ToDatetime().isoformat() + "Z"
    verb = "would import" if report.dry_run else "imported"
    lines = [f"tiket: {feed}: {verb} {len(report.imported)} fare(s), effective from {start}"]
    if report.dry_run:
        lines.append("(dry run: nothing was written)")
    if report.imported:
        rows = [
            (
                f"{f.origin_code} -> {f.destination_code}",
                _idr(f.previous_price) if f.HasField("previous_price") else "-",
                _idr(f.price),
                f.rule,
            )
            for f in report.imported
        ]
        lines += ["", render(["pair", "was", "now", "from"], rows)]
    if report.skipped:
        lines += ["", f"skipped {len(report.skipped)}:"]
        lines += [f"  {s.rule}  {s.reason}" for s in report.skipped]
    mapping = ", ".join(f"{area}={code}" for area, code in sorted(report.area_terminals.items()))
    lines += ["", f"areas: {mapping or 'none mapped to a terminal'}"]
    return "\n".join(lines)


def _idr(money) -> str:
    return rupiah(from_money(money))
