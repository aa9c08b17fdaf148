"""The notification queue takes the wallet events riders are told about and no other: a
ride's hold_placed and hold_captured would cost RabbitMQ and the consumer's inbox
transaction twice per ride only to be ignored. Pure: no server."""

from __future__ import annotations

import uuid
from fnmatch import fnmatchcase

import pytest
from tiket.events.v1 import wallet_pb2

from libs.events.envelope import new_event
from services.notification import consumers, intake

IGNORED_WALLET_EVENTS = ("wallet.hold_placed", "wallet.hold_captured", "wallet.charged")


def bound(event_type: str) -> bool:
    """Whether a topic binding of the queue matches `event_type` (one-word `*` patterns)."""
    return any(
        fnmatchcase(event_type, pattern) and pattern.count(".") == event_type.count(".")
        for pattern in consumers.BINDINGS
    )


def test_the_wallet_events_bound_are_exactly_those_riders_are_told_about() -> None:
    wallet_bindings = {b for b in consumers.BINDINGS if b.startswith("wallet.")}
    assert wallet_bindings == set(intake.TOLD_WALLET_EVENTS)
    assert all(bound(t) for t in intake.TOLD_WALLET_EVENTS)
    assert not any(bound(t) for t in IGNORED_WALLET_EVENTS)


def test_the_old_catch_all_is_unbound_when_the_queue_is_declared() -> None:
    [queue] = consumers.queues("tiket.events")
    assert queue.retired == ("wallet.*",)
    assert not set(queue.retired) & set(queue.bindings)


@pytest.mark.parametrize("event_type", IGNORED_WALLET_EVENTS)
def test_the_unbound_wallet_events_would_tell_nobody_anything(event_type: str) -> None:
    user_id = str(uuid.uuid4())
    data = wallet_pb2.WalletHoldChanged(user_id=user_id, reference="journey-1")
    assert intake.plan(new_event("/tests", event_type, user_id, data)) is None
