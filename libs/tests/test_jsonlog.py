"""libs.jsonlog: one JSON object per line; an AMQP library's connection errors without their
tracebacks."""

from __future__ import annotations

import logging
import sys

import orjson
from aiormq.exceptions import ConnectionClosed

from libs import jsonlog
from libs.jsonlog import JsonFormatter, without_connection_tracebacks


def logged(logger: str, error: BaseException) -> dict:
    """The JSON line of a WARNING from `logger` that carries `error` with its traceback."""
    try:
        raise error
    except BaseException:
        record = logging.LogRecord(
            logger, logging.WARNING, __file__, 1, "reader %s", ("exited",), sys.exc_info()
        )
    assert without_connection_tracebacks(record)  # a filter that never drops a line
    return orjson.loads(JsonFormatter("user").format(record))


def test_a_broker_restart_is_one_line_per_connection() -> None:
    # RabbitMQ restarted under make run: each connection of each service logged this with
    # a traceback through aiormq's reader.
    closed = ConnectionClosed(320, "CONNECTION_FORCED - broker forced connection closure")
    line = logged("aiormq.connection", closed)
    assert "exception" not in line
    assert line["msg"] == f"reader exited: ConnectionClosed: {closed}"
    assert "exception" not in logged("aio_pika.robust_connection", ConnectionRefusedError(111))


def test_other_exceptions_keep_their_tracebacks() -> None:
    bug = logged("aiormq.connection", ValueError("a bug in the library"))
    assert "Traceback" in bug["exception"] and bug["msg"] == "reader exited"
    ours = logged("libs.events.relay", ConnectionRefusedError(111))
    assert "Traceback" in ours["exception"]


def test_the_services_log_handler_applies_the_filter() -> None:
    root = logging.getLogger()
    touched = [root, *(logging.getLogger(name) for name in jsonlog.NOISY)]
    levels, handlers = [logger.level for logger in touched], root.handlers[:]
    try:
        jsonlog.setup("user", "info")
        (handler,) = root.handlers
        assert without_connection_tracebacks in handler.filters
    finally:
        root.handlers[:] = handlers
        for logger, level in zip(touched, levels, strict=True):
            logger.setLevel(level)
