"""A consumer whose database (or Redis) is down: not the events' fault, so no attempt is
spent and nothing reaches the DLQ; the consumer stops taking deliveries until a probe
connection succeeds, then handles every event once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import psycopg
import pytest
import redis.exceptions
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from libs.errors import Unavailable
from libs.events.envelope import CloudEvent
from libs.events.topology import dead_letter_queue, retry_queue
from libs.outages import is_outage
from libs.tests.events.support import (
    Broker,
    Recorder,
    all_handled,
    effect_counts,
    event_body,
    start_consumer,
    through,
)
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)
CUT_SECONDS = 4.0  # twice what two attempts against a refused database take


@pytest.fixture
async def proxied_pool(
    database_url: str, postgres_proxy: TcpProxy
) -> AsyncIterator[AsyncConnectionPool]:
    """A pool reaching the test database through the proxy, quick to give up on a connection
    (1 s), so an outage fails every attempt fast."""
    pool = AsyncConnectionPool(
        through(postgres_proxy, database_url),
        min_size=2,
        max_size=4,
        timeout=1.0,
        kwargs={"autocommit": True},
        open=False,
    )
    await pool.open(wait=True)
    yield pool
    await pool.close()


async def publish_events(broker: Broker, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        event_id, body = event_body()
        await broker.publish(body, message_id=event_id)
        ids.append(event_id)
    return ids


async def test_a_database_outage_spends_no_attempt_and_dead_letters_nothing(
    proxied_pool: AsyncConnectionPool,
    pool: AsyncConnectionPool,
    broker: Broker,
    running: AsyncExitStack,
    postgres_proxy: TcpProxy,
) -> None:
    consumer = await start_consumer(
        running, proxied_pool, broker, Recorder(), max_attempts=2, backoff_base=0.05
    )
    [warmup] = await publish_events(broker, 1)
    await wait_until(lambda: consumer.handled == 1, "the warm-up event")

    postgres_proxy.cut()
    ids = await publish_events(broker, 20)
    await asyncio.sleep(CUT_SECONDS)
    postgres_proxy.restore()

    await wait_until(lambda: all_handled(pool, ids), "every event after the outage", within=30)
    assert await effect_counts(pool) == Counter(dict.fromkeys([warmup, *ids], 1))
    assert (consumer.retried, consumer.dead_lettered) == (0, 0)
    assert consumer.paused_times >= 1
    for queue in (consumer.name, retry_queue(consumer.name), dead_letter_queue(consumer.name)):
        assert await broker.message_count(queue) == 0


class FlakyRedis(Recorder):
    """A handler whose Redis is unreachable for its first `outage` calls."""

    def __init__(self, outage: int) -> None:
        super().__init__()
        self.outage = outage

    async def __call__(self, event: CloudEvent, conn: psycopg.AsyncConnection) -> None:
        if self.calls < self.outage:
            self.calls += 1
            raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379")
        await super().__call__(event, conn)


async def test_an_unreachable_redis_in_a_handler_is_waited_out_not_counted(
    pool: AsyncConnectionPool, broker: Broker, running: AsyncExitStack
) -> None:
    handler = FlakyRedis(outage=3)
    consumer = await start_consumer(
        running, pool, broker, handler, max_attempts=2, backoff_base=0.05
    )
    [event_id] = await publish_events(broker, 1)

    await wait_until(lambda: consumer.handled == 1, "the event once Redis is back")
    assert (consumer.retried, consumer.dead_lettered) == (0, 0)
    assert handler.calls == 4
    assert await effect_counts(pool) == Counter({event_id: 1})


async def test_a_handler_error_still_spends_attempts(
    pool: AsyncConnectionPool, broker: Broker, running: AsyncExitStack
) -> None:
    """A broken handler is the event's problem: retried, then dead-lettered, never paused."""
    consumer = await start_consumer(
        running, pool, broker, Recorder(failing=True), max_attempts=2, backoff_base=0.05
    )
    await publish_events(broker, 1)
    await wait_until(lambda: consumer.dead_lettered == 1, "the event in the DLQ")
    assert (consumer.retried, consumer.paused_times) == (1, 0)


def raised_from(error: BaseException, outer: BaseException) -> BaseException:
    try:
        try:
            raise error
        except BaseException as cause:
            raise outer from cause
    except BaseException as raised:
        return raised


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        (raised_from(psycopg.OperationalError("connection refused"), Unavailable("db")), True),
        (PoolTimeout("couldn't get a connection after 10 s"), True),
        (psycopg.errors.AdminShutdown("terminating connection"), True),
        (psycopg.errors.CannotConnectNow("the database system is starting up"), True),
        (psycopg.errors.TooManyConnections("too many clients"), True),
        (redis.exceptions.TimeoutError("Timeout reading from socket"), True),
        (Unavailable("user service unavailable"), True),
        (psycopg.errors.DiskFull("no space left"), False),
        (
            raised_from(psycopg.errors.ProgramLimitExceeded("index row too big"), Unavailable("")),
            False,
        ),
        (psycopg.errors.UniqueViolation("duplicate key"), False),
        (psycopg.errors.RaiseException("disk quota exceeded (injected)"), False),
        (RuntimeError("the handler is broken"), False),
        (redis.exceptions.ResponseError("WRONGTYPE"), False),
    ],
)
def test_what_counts_as_an_outage(error: BaseException, outage: bool) -> None:
    assert is_outage(error) is outage
