"""`tiket gate …`: run a gate agent like a card reader would (`serve`), one tap (`tap`), and
how the gate stands (`status`). Settings come from TIKET_GATE_* variables; flags override."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from datetime import datetime
from pathlib import Path

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cli.table import render
from gate import clock
from gate.agent import JOURNEY_SERVICE, Decision, GateAgent
from gate.config import DIRECTIONS, LANGUAGES, GateConfig, load
from gate.mesh import Credential
from gate.offline_db import OfflineDb, now
from gate.status import GateStatus, read_status
from libs import tls
from libs.config import ConfigError, Settings, unread_settings_warnings

log = logging.getLogger(__name__)
USAGE = "one tap per line: CARD, or CARD in / CARD out"


def register(commands: argparse._SubParsersAction) -> None:
    gate = commands.add_parser("gate", help="run a gate device agent (online taps, offline SQLite)")
    actions = gate.add_subparsers(required=True, metavar="ACTION")

    serve = actions.add_parser("serve", help=f"read taps ({USAGE}) and print each decision")
    serve.add_argument("--socket", type=Path, help="read taps from this Unix socket, not stdin")
    serve.set_defaults(run=_serve)

    tap = actions.add_parser("tap", help="decide one tap and print it (exit 1 when CLOSED)")
    tap.add_argument("card")
    tap.add_argument("way", nargs="?", choices=["in", "out"], help="needed at a 'both' gate")
    tap.set_defaults(run=_tap)

    status = actions.add_parser("status", help="online or offline, pending taps, snapshot age")
    status.set_defaults(run=_status)

    for action in (serve, tap, status):
        action.add_argument("--terminal", help="terminal code (TIKET_GATE_TERMINAL), e.g. A")
        action.add_argument("--gate", help="gate code (TIKET_GATE_CODE), e.g. A-ENTRY-01")
        action.add_argument("--direction", choices=DIRECTIONS, help="TIKET_GATE_DIRECTION")
        action.add_argument(
            "--mesh",
            help="one address for the journey, user and fare services (TIKET_GATE_MESH_ADDR)",
        )
        action.add_argument("--db", help="the SQLite file (TIKET_GATE_DB)")
        action.add_argument("--deadline-ms", type=int, help="TIKET_GATE_DEADLINE_MS (300)")
        action.add_argument(
            "--lang", choices=LANGUAGES, help="rider's language (TIKET_GATE_LANG: id)"
        )


def _config(args: argparse.Namespace) -> GateConfig:
    """The gate's settings; a TIKET_* variable none of them reads (misspelt) is warned of."""
    config = load(
        overrides={
            "terminal_code": args.terminal,
            "gate_code": args.gate,
            "direction": args.direction,
            "mesh": args.mesh,
            "db": args.db,
            "deadline_ms": args.deadline_ms,
            "lang": args.lang,
        }
    )
    for warning in unread_settings_warnings(os.environ, "gate", "the gate"):
        log.warning("gate: %s", warning)
    return config


def parse_tap(line: str) -> tuple[str, str | None] | None:
    """(card, "in" / "out" / None) from a reader's line; None when it is not a tap."""
    parts = line.split()
    if len(parts) == 1:
        return parts[0].upper(), None
    if len(parts) == 2 and parts[1].lower() in ("in", "out"):
        return parts[0].upper(), parts[1].lower()
    return None


# --- serve ---------------------------------------------------------------------------


def _serve(args: argparse.Namespace, settings: Settings) -> None:
    asyncio.run(serve(_config(args), settings, args.socket))


async def serve(config: GateConfig, settings: Settings, socket: Path | None = None) -> None:
    agent = GateAgent(config, settings)
    await agent.start()
    print(
        f"gate {config.subject} ({agent.config.direction}) serving, SQLite "
        f"{agent.db.path}; {USAGE}{f' on {socket}' if socket else ''}"
    )
    try:
        if socket is None:
            while line := await asyncio.to_thread(sys.stdin.readline):
                print(await _answer(agent, line))
        else:
            await serve_socket(agent, socket)
    finally:
        await agent.stop()


async def _answer(agent: GateAgent, line: str) -> str:
    """The decision's line for a reader's line. A tap that fails unexpectedly is CLOSED
    (GATE_ERROR) with its traceback in the log: the gate keeps serving the next rider."""
    parsed = parse_tap(line)
    if parsed is None:
        return f"? {line.strip()!r}: {USAGE}" if line.strip() else ""
    try:
        decision: Decision = await agent.tap(*parsed)
    except Exception:
        log.exception("gate: the tap of %s failed", parsed[0])
        decision = Decision(False, parsed[0], None, "gate", "GATE_ERROR")
    return decision.render(agent.config.lang)


async def serve_socket(agent: GateAgent, path: Path) -> None:
    """Each connection sends lines of taps and reads one line per tap back."""

    async def reader(stream: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answer = ""
        try:
            while line := await stream.readline():
                answer = await _answer(agent, line.decode(errors="replace"))
                print(answer)
                writer.write(answer.encode() + b"\n")
                await writer.drain()
        except ConnectionError as exc:  # a controller restarting: the next one connects anew
            log.warning("gate: a reader went away (%s); last answer: %s", exc, answer or "none")
        finally:
            writer.close()

    try:
        await asyncio.to_thread(path.unlink, missing_ok=True)
        server = await asyncio.start_unix_server(reader, path)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on the socket {path}: {exc.strerror or exc}; give --socket a path "
            "in a folder the agent may write"
        ) from None
    async with server:
        await server.serve_forever()


# --- tap -----------------------------------------------------------------------------


def _tap(args: argparse.Namespace, settings: Settings) -> None:
    decision = asyncio.run(tap_once(_config(args), settings, args.card.upper(), args.way))
    sys.exit(0 if decision.open else 1)


async def tap_once(config: GateConfig, settings: Settings, card: str, way: str | None) -> Decision:
    agent = GateAgent(config, settings)
    await agent.start(background=False)
    try:
        decision = await agent.tap(card, way)
    finally:
        await agent.stop()
    print(decision.render(config.lang))
    return decision


# --- status --------------------------------------------------------------------------


def _status(args: argparse.Namespace, settings: Settings) -> None:
    print(asyncio.run(status_table(_config(args), settings)))


async def status_table(config: GateConfig, settings: Settings) -> str:
    db = OfflineDb(config.sqlite_path(settings.state_dir))
    await db.open()
    try:
        status = await db.run(read_status)
    finally:
        await db.close()
    reachable = await _journey_answers(config, settings)
    rows = _rows(config, db.path, status, reachable)
    rows.insert(-1, ("token", _token_text(Credential(config, settings))))
    return render(["gate status", ""], rows)


def _token_text(credential: Credential) -> str:
    expires = credential.expires_at()
    if expires is None:
        return "no expiry read" if credential.given else "renewed by the agent (development)"
    left = expires - now()
    if left.total_seconds() <= 0:
        return f"EXPIRED at {expires:%Y-%m-%d %H:%M} UTC: renew it"
    return f"expires {expires:%Y-%m-%d %H:%M} UTC (in {_span(left.total_seconds())})"


def _span(seconds: float) -> str:
    if seconds < 7200:
        return f"{int(seconds // 60)} min"
    return f"{int(seconds // 3600)} h"


async def _journey_answers(config: GateConfig, settings: Settings) -> bool:
    channel = tls.open_channel(config.journey_addr, tls.channel_credentials(settings))
    async with channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=JOURNEY_SERVICE), timeout=1.0
            )
        except aio.AioRpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _direction(config: GateConfig, s: GateStatus) -> str:
    if config.direction:
        return config.direction
    if s.direction:
        return f"{s.direction}, from the registry"
    return "direction not learned yet"


def _rows(config: GateConfig, path: Path, s: GateStatus, reachable: bool) -> list[tuple]:
    pending = f"{s.pending_taps}"
    if s.oldest_pending_at:
        pending += f" (oldest tapped {_ago(s.oldest_pending_at)})"
    if s.last_upload_error:
        pending += f"; last upload: {s.last_upload_error}"
    return [
        ("gate", f"{config.subject} ({_direction(config, s)})"),
        ("journey service", f"{config.journey_addr}: {'answers' if reachable else 'no answer'}"),
        ("agent", f"{s.mode or 'never ran'}; last online {_ago(s.last_online_at)}"),
        ("pending taps", pending),
        (
            "users snapshot",
            f"{s.cards} cards ({s.blocked_cards} not active), refreshed {_ago(s.users_refreshed_at)}, "
            f"full reload {_ago(s.users_full_at)}",
        ),
        ("fares snapshot", f"{s.fare_versions} versions, generated {_ago(s.fares_generated_at)}"),
        ("last sync", _ago(s.last_sync_at)),
        ("clock", "not measured yet" if s.clock_skew is None else clock.describe(s.clock_skew)),
        ("SQLite", str(path)),
    ]


def _ago(at: datetime | None) -> str:
    if at is None:
        return "never"
    seconds = int((now() - at).total_seconds())
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"
