"""Dead letters: an event failing every attempt, or unreadable, waits in its consumer's DLQ,
is listed in place, and is replayed to that consumer once the cause is fixed."""

from __future__ import annotations

from collections import Counter
from contextlib import AsyncExitStack

import pytest
from psycopg_pool import AsyncConnectionPool

from libs.events.dead_letters import (
    discard_dead_letters,
    list_dead_letters,
    replay_dead_letters,
)
from libs.events.envelope import BadEvent
from libs.events.topology import dead_letter_queue, retry_queue
from libs.tests.events.support import (
    AMQP_URL,
    EVENT_TYPE,
    Broker,
    Recorder,
    effect_counts,
    event_body,
    start_consumer,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(30)


async def test_a_failing_event_is_retried_then_dead_lettered_and_can_be_replayed(
    pool: AsyncConnectionPool, broker: Broker, running: AsyncExitStack
) -> None:
    recorder = Recorder(failing=True)
    consumer = await start_consumer(
        running, pool, broker, recorder, max_attempts=3, backoff_base=0.05
    )
    dlq = dead_letter_queue(consumer.name)
    event_id, body = event_body()

    await broker.publish(body, message_id=event_id)

    await wait_until(lambda: consumer.dead_lettered == 1, "the event to reach the DLQ")
    assert (recorder.calls, consumer.retried) == (3, 2)
    assert await effect_counts(pool) == Counter()
    for _ in range(2):  # listing leaves the messages in place
        [letter] = await list_dead_letters(AMQP_URL, dlq, limit=10)
        assert letter.event_id == event_id
        assert letter.event_type == EVENT_TYPE
        assert letter.routing_key == EVENT_TYPE
        assert letter.attempts == 3
        assert "RuntimeError: the handler is broken" in letter.error
        assert letter.failed_at
        assert letter.body == body
    assert await broker.message_count(dlq) == 1

    recorder.failing = False
    assert await replay_dead_letters(AMQP_URL, consumer.name) == 1

    await wait_until(lambda: consumer.handled == 1, "the replayed event to be handled")
    assert await effect_counts(pool) == Counter({event_id: 1})
    assert recorder.calls == 4
    assert await list_dead_letters(AMQP_URL, dlq, limit=10) == []
    assert await broker.message_count(retry_queue(consumer.name)) == 0


async def test_a_replayed_event_gets_all_its_attempts_again(
    pool: AsyncConnectionPool, broker: Broker, running: AsyncExitStack
) -> None:
    recorder = Recorder(failing=True)
    consumer = await start_consumer(
        running, pool, broker, recorder, max_attempts=2, backoff_base=0.05
    )
    dlq = dead_letter_queue(consumer.name)
    event_id, body = event_body()
    await broker.publish(body, message_id=event_id)
    await wait_until(lambda: consumer.dead_lettered == 1, "the event to reach the DLQ")

    assert await replay_dead_letters(AMQP_URL, consumer.name) == 1

    await wait_until(lambda: consumer.dead_lettered == 2, "the replayed event back in the DLQ")
    assert recorder.calls == 4
    [letter] = await list_dead_letters(AMQP_URL, dlq, limit=10)
    assert (letter.event_id, letter.attempts, letter.routing_key) == (event_id, 2, EVENT_TYPE)


async def test_an_event_breaking_its_contract_goes_to_the_dlq_without_retries(
    pool: AsyncConnectionPool, broker: Broker, running: AsyncExitStack
) -> None:
    """A handler's BadEvent (a field missing, unreadable data) would fail every retry alike:
    one call, then the DLQ, with the reason; a replay after the fix is handled."""
    recorder = Recorder(failing=True, raises=BadEvent("checkin_time is missing"))
    consumer = await start_consumer(
        running, pool, broker, recorder, max_attempts=5, backoff_base=0.05
    )
    event_id, body = event_body()
    await broker.publish(body, message_id=event_id)

    await wait_until(lambda: consumer.dead_lettered == 1, "the event to reach the DLQ")
    assert (recorder.calls, consumer.retried) == (1, 0)
    [letter] = await list_dead_letters(AMQP_URL, dead_letter_queue(consumer.name), limit=10)
    assert (letter.event_id, letter.attempts) == (event_id, 1)
    assert "BadEvent: checkin_time is missing" in letter.error
    assert await broker.message_count(retry_queue(consumer.name)) == 0

    recorder.failing = False
    assert await replay_dead_letters(AMQP_URL, consumer.name) == 1
    await wait_until(lambda: consumer.handled == 1, "the replayed event to be handled")
    assert await effect_counts(pool) == Counter({event_id: 1})


async def test_malformed_bodies_go_straight_to_the_dlq(
    pool: AsyncConnectionPool, broker: Broker, running: AsyncExitStack
) -> None:
    recorder = Recorder()
    consumer = await start_consumer(running, pool, broker, recorder)
    _, bad_id_body = event_body(event_id="not-a-uuid")

    await broker.publish(b"{not json", message_id="m-1")
    await broker.publish(bad_id_body, message_id="m-2")

    await wait_until(lambda: consumer.dead_lettered == 2, "both bodies in the DLQ")
    letters = await list_dead_letters(AMQP_URL, dead_letter_queue(consumer.name), limit=10)
    errors = {letter.event_id: letter.error for letter in letters}
    assert "not JSON" in errors["m-1"]
    assert "not a UUID" in errors["m-2"]
    assert all(letter.attempts == 0 for letter in letters)
    assert (recorder.calls, consumer.retried, consumer.handled) == (0, 0, 0)


async def test_discarding_removes_just_the_named_dead_letters_and_keeps_the_order(
    pool: AsyncConnectionPool, broker: Broker, running: AsyncExitStack
) -> None:
    consumer = await start_consumer(running, pool, broker, Recorder())
    dlq = dead_letter_queue(consumer.name)
    for n in range(4):
        await broker.publish(b"{not json", message_id=f"m-{n}")
    await wait_until(lambda: consumer.dead_lettered == 4, "the bodies in the DLQ")

    assert await discard_dead_letters(AMQP_URL, dlq, frozenset({"m-1", "m-3", "m-9"})) == [
        "m-1",
        "m-3",
    ]
    left = await list_dead_letters(AMQP_URL, dlq, limit=10)
    assert [letter.event_id for letter in left] == ["m-0", "m-2"]
    assert await discard_dead_letters(AMQP_URL, dlq, None) == ["m-0", "m-2"]
    assert await broker.message_count(dlq) == 0


async def test_dead_letter_commands_name_a_missing_queue() -> None:
    with pytest.raises(LookupError, match=r"no queue named 'test\.missing\.dlq'"):
        await list_dead_letters(AMQP_URL, "test.missing.dlq", limit=1)
    with pytest.raises(LookupError, match=r"no queue named 'test\.missing'"):
        await replay_dead_letters(AMQP_URL, "test.missing")


async def test_replay_names_a_missing_consumer_queue(broker: Broker) -> None:
    """A DLQ whose consumer queue is gone: replaying would only bounce every event back."""
    name = broker.consumer_queue().name
    channel = await broker.connection.channel()
    await channel.declare_queue(dead_letter_queue(name), durable=True)
    with pytest.raises(LookupError, match=f"no queue named '{name}'"):
        await replay_dead_letters(AMQP_URL, name)


async def test_a_replay_goes_to_the_one_consumer_that_gave_up(
    pool: AsyncConnectionPool, broker: Broker, running: AsyncExitStack
) -> None:
    """Two consumers take the same event; one gives up on it. Its replay reaches that
    consumer's queue only: the other one, and anything else bound to the exchange, never
    sees the event a second time."""
    tap = await broker.tap()
    broken = Recorder(failing=True)
    failing = await start_consumer(running, pool, broker, broken, max_attempts=1)
    other = await start_consumer(running, pool, broker, Recorder())
    event_id, body = event_body()
    await broker.publish(body, message_id=event_id)
    await wait_until(lambda: failing.dead_lettered == 1, "the event in the failing one's DLQ")
    await wait_until(lambda: other.handled == 1, "the other consumer to handle it")

    broken.failing = False
    assert await replay_dead_letters(AMQP_URL, failing.name) == 1

    await wait_until(lambda: failing.handled == 1, "the replay to be handled")
    assert (other.handled, other.duplicates) == (1, 0)
    assert tap.seen == Counter({event_id: 1})
