"""`tiket demo ride` and `tiket demo booking`: scripted scenarios through the running mesh
(`tiket up --seed` first).

- ride: the card taps in at an entry gate and out at an exit gate with the gates' own tokens
  (role `gate`, subject = terminal/gate) — the path a real gate takes — and every step prints
  what the rider would see, with the wallet before and after.
- booking (cli/demo_booking.py): a pet owner books a clinic visit with their own `user`
  token."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid

import grpc
from tiket.journey.v1 import journey_pb2, journey_pb2_grpc
from tiket.user.v1 import user_pb2, user_pb2_grpc

from cli import demo_booking
from cli.scenario import available, metadata, rp
from libs import auth, tls
from libs.config import Settings
from libs.money import from_money

GATE_DEADLINE = 3.0  # seconds; what a gate waits before it falls back to offline mode


def register(commands: argparse._SubParsersAction) -> None:
    """Add `demo ride` and `demo booking` to the `tiket` command's subcommands."""
    demo = commands.add_parser("demo", help="scripted scenarios against the running mesh")
    scenarios = demo.add_subparsers(required=True, metavar="SCENARIO")
    ride = scenarios.add_parser("ride", help="tap a card in at one terminal and out at another")
    ride.add_argument("--card", default="CARD0001", help="card id (default CARD0001)")
    ride.add_argument("--entry", default="A", metavar="TERMINAL", help="default A")
    ride.add_argument("--entry-gate", default=None, help="default <entry>-ENTRY-01")
    ride.add_argument("--exit", default="E", metavar="TERMINAL", help="default E")
    ride.add_argument("--exit-gate", default=None, help="default <exit>-EXIT-01")
    ride.set_defaults(run=lambda args, settings: asyncio.run(_ride_or_exit(args, settings)))
    demo_booking.register(scenarios)


async def _ride_or_exit(args: argparse.Namespace, settings: Settings) -> None:
    try:
        await ride(args, settings)
    except grpc.RpcError as exc:
        sys.exit(f"tiket demo ride: {exc.code().name}: {exc.details()}")


async def ride(args: argparse.Namespace, settings: Settings, out=print) -> None:
    entry_gate = args.entry_gate or f"{args.entry}-ENTRY-01"
    exit_gate = args.exit_gate or f"{args.exit}-EXIT-01"
    admin = metadata(settings, auth.Role.ADMIN, "tiket-demo")
    credentials = tls.channel_credentials(settings)  # TLS when TIKET_TLS_CA is set
    async with (
        tls.open_channel(settings.addresses["user"], credentials) as user_channel,
        tls.open_channel(settings.addresses["journey"], credentials) as journey_channel,
    ):
        users = user_pb2_grpc.UserServiceStub(user_channel)
        journeys = journey_pb2_grpc.JourneyServiceStub(journey_channel)
        rider = await users.GetUser(user_pb2.GetUserRequest(card_id=args.card), metadata=admin)
        before = await available(users, rider.id, admin)
        out(f"rider    {rider.full_name} ({args.card}), available balance {rp(before)}")

        out(f"\n1. tap in  at {entry_gate} (terminal {args.entry})")
        entered = await journeys.CheckIn(
            _tap(journey_pb2.CheckInRequest, args.card, args.entry, entry_gate),
            metadata=metadata(settings, auth.Role.GATE, f"{args.entry}/{entry_gate}"),
            timeout=GATE_DEADLINE,
        )
        if entered.HasField("abandoned_journey"):
            old = entered.abandoned_journey
            charged = rp(from_money(old.fare))
            out(f"   an open journey from {old.checkin_terminal_name}: abandoned, {charged}")
        out(f"   gate opens: {entered.message}")
        out(f"   journey {entered.journey.id}, held {rp(from_money(entered.held_amount))}")

        active = await journeys.GetActiveJourney(
            journey_pb2.GetActiveJourneyRequest(user_id=rider.id),
            metadata=metadata(settings, auth.Role.USER, rider.id),
        )
        since = active.checkin_time.ToDatetime()
        out(f"\n2. riding from {active.checkin_terminal_name} since {since:%H:%M:%S} UTC")

        out(f"\n3. tap out at {exit_gate} (terminal {args.exit})")
        left = await journeys.CheckOut(
            _tap(journey_pb2.CheckOutRequest, args.card, args.exit, exit_gate),
            metadata=metadata(settings, auth.Role.GATE, f"{args.exit}/{exit_gate}"),
            timeout=GATE_DEADLINE,
        )
        out(f"   gate opens: {left.message}")
        fare, minutes = rp(from_money(left.fare)), left.journey.duration_minutes
        out(f"   fare {fare} ({left.journey.pricing}), {minutes} min")

        after = await available(users, rider.id, admin)
        change = rp(after - before)
        out(f"\nwallet   before {rp(before)}  after {rp(after)}  difference {change}")


def _tap(message, card: str, terminal: str, gate: str):
    return message(card_id=card, terminal_code=terminal, gate_code=gate, tap_id=str(uuid.uuid4()))
