"""`tiket dlq …`: what the consumers gave up on, and sending it back once the cause is fixed.

An event that failed every retry (or could not be parsed) waits in its consumer's
dead-letter queue `<queue>.dlq`. `tiket dlq list` shows how many wait per consumer and, for
each, the events with why they failed; `tiket dlq replay TARGET` sends them back to the
queue of the consumer that gave up on them, and to no other. A consumer that already
handled an event ignores its replay, so replaying twice is harmless. `tiket dlq discard
TARGET EVENT_ID …` (or `--all`) removes the ones no fix will make right.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from cli.table import render
from libs.config import Settings
from libs.events.bus import BusUnavailable
from libs.events.dead_letters import (
    DeadLetter,
    discard_dead_letters,
    list_dead_letters,
    replay_dead_letters,
    waiting_counts,
)
from libs.events.topology import dead_letter_queue
from services import registry

ERROR_CHARS = 80


@dataclass(frozen=True)
class DeadLetterQueue:
    service: str
    consumer_queue: str

    @property
    def name(self) -> str:
        return dead_letter_queue(self.consumer_queue)


def register(commands: argparse._SubParsersAction) -> None:
    """Add `dlq list` and `dlq replay` to the `tiket` command's subcommands."""
    dlq = commands.add_parser("dlq", help="list and replay dead-lettered events")
    actions = dlq.add_subparsers(required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        help="dead letters waiting per consumer, with why each failed",
        description=__doc__.split("\n\n")[1],
    )
    listing.add_argument("target", nargs="?", help="a service, consumer queue or DLQ name")
    listing.add_argument("--limit", type=int, default=20, help="events shown per queue")
    listing.add_argument(
        "--full",
        action="store_true",
        help=f"each error whole (else cut at {ERROR_CHARS} characters) and each event's body",
    )
    listing.set_defaults(run=lambda args, settings: _run(list_command(args, settings)))

    replay = actions.add_parser(
        "replay",
        help="send dead letters back to the consumer that gave up on them",
        description=__doc__.split("\n\n")[1],
    )
    replay.add_argument("target", help="a service, consumer queue or DLQ name")
    replay.add_argument("--limit", type=int, help="replay at most this many (default: all)")
    replay.set_defaults(run=lambda args, settings: _run(replay_command(args, settings)))

    discard = actions.add_parser(
        "discard",
        help="remove dead letters no fix will make right (named by event id, or --all)",
        description=__doc__.split("\n\n")[1],
    )
    discard.add_argument("target", help="a service, consumer queue or DLQ name")
    discard.add_argument("event_ids", nargs="*", metavar="EVENT_ID", help="as `list` shows")
    discard.add_argument("--all", action="store_true", help="every dead letter of TARGET")
    discard.set_defaults(run=lambda args, settings: _run(discard_command(args, settings)))


def known_queues(settings: Settings) -> list[DeadLetterQueue]:
    """Every consumer's dead-letter queue on this deployment's events exchange."""
    return [
        DeadLetterQueue(service, queue)
        for service in registry.SERVICES
        for queue in registry.consumer_queues(service, settings.events_exchange)
    ]


def select(queues: list[DeadLetterQueue], target: str | None) -> list[DeadLetterQueue]:
    """The queues `target` names: a service, a consumer queue or a DLQ; all when None."""
    if target is None:
        return queues
    chosen = [q for q in queues if target in (q.service, q.consumer_queue, q.name)]
    if not chosen:
        names = ", ".join(sorted({q.service for q in queues} | {q.name for q in queues}))
        raise LookupError(f"no consumer queue matches {target!r}; known: {names}")
    return chosen


async def list_command(args: argparse.Namespace, settings: Settings) -> None:
    queues = select(known_queues(settings), args.target)
    counts = await waiting_counts(settings.amqp_url, [q.name for q in queues])
    rows = [(q.service, q.name, _count_text(counts[q.name])) for q in queues]
    print(render(["service", "dead-letter queue", "waiting"], rows))
    for queue in queues:
        if counts[queue.name]:
            letters = await list_dead_letters(settings.amqp_url, queue.name, args.limit)
            print(f"\n{queue.name} (first {len(letters)} of {counts[queue.name]}):")
            rows = _rows(letters, args.full)
            print(render(["event id", "type", "attempts", "failed at", "error"], rows))
            if args.full:
                for letter in letters:
                    print(f"\n{letter.event_id or '-'}:\n{letter.body.decode(errors='replace')}")
    if any(counts.values()):
        print("\nFix the cause, then: tiket dlq replay SERVICE|QUEUE")


async def replay_command(args: argparse.Namespace, settings: Settings) -> None:
    for queue in select(known_queues(settings), args.target):
        replayed = await replay_dead_letters(settings.amqp_url, queue.consumer_queue, args.limit)
        print(f"{queue.name}: replayed {replayed} event(s) to {queue.consumer_queue}")


async def discard_command(args: argparse.Namespace, settings: Settings) -> None:
    if bool(args.event_ids) == args.all:
        raise LookupError("name the events to discard (EVENT_ID …, as `list` shows) or --all")
    wanted = None if args.all else frozenset(args.event_ids)
    found: set[str] = set()
    for queue in select(known_queues(settings), args.target):
        discarded = await discard_dead_letters(settings.amqp_url, queue.name, wanted)
        found.update(discarded)
        print(f"{queue.name}: discarded {len(discarded)} event(s)")
    if missing := sorted((wanted or frozenset()) - found):
        raise LookupError(f"not in the dead letters of {args.target!r}: {', '.join(missing)}")


def _rows(letters: list[DeadLetter], full: bool) -> list[tuple[object, ...]]:
    return [
        (
            letter.event_id or "-",
            letter.event_type or letter.routing_key or "-",
            letter.attempts,
            letter.failed_at or "-",
            (letter.error or "-") if full else _shorten(letter.error or "-"),
        )
        for letter in letters
    ]


def _count_text(count: int | None) -> str:
    return "no queue yet (no service has run)" if count is None else str(count)


def _shorten(text: str) -> str:
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


def _run(command: Coroutine[Any, Any, None]) -> None:
    try:
        asyncio.run(command)
    except BusUnavailable as exc:
        sys.exit(f"tiket: {exc}; start RabbitMQ (`tiket up` does) or set TIKET_AMQP_URL")
    except (LookupError, RuntimeError) as exc:
        sys.exit(f"tiket: {exc}")
