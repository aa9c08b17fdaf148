"""Telling a failure of the infrastructure from a failure of the event.

A consumer whose database or Redis cannot be reached would fail every event alike; that is
no reason to spend the events' attempts and fill the dead-letter queue during a failover.
Such errors are outages: the consumer waits them out (libs/events/consumer.py). Everything
else a handler raises, including a database error about what the event asked for (a
constraint, a value out of range, a program limit), is the event's failure and counts."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import redis.exceptions
from psycopg_pool import PoolTimeout

from libs.errors import Unavailable

# SQLSTATEs of a server that cannot serve now, whatever the statement: connection
# exceptions (08…), shut down or starting up (57P01-57P03), out of connections (53300).
UNAVAILABLE_STATES = ("08", "57P01", "57P02", "57P03", "53300")
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` (or what it was raised from) says a dependency is unreachable.

    A database error decides by itself: psycopg reports a lost or refused connection with
    no SQLSTATE (the server never answered). An Unavailable with no database error behind
    it is a dependency down, as its name says."""
    chain = list(_causes(exc))
    for error in chain:
        if isinstance(error, (PoolTimeout, *REDIS_DOWN)):
            return True
        if isinstance(error, psycopg.Error):
            state = error.sqlstate
            return isinstance(error, psycopg.OperationalError) and (
                state is None or state.startswith(UNAVAILABLE_STATES)
            )
    return any(isinstance(error, Unavailable) for error in chain)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it was raised from (or during), outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
