"""One JSON object per log line, with the request id, trace id and span id of the call (or
event) being served."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

from libs.tracing import current_request_id, current_traceparent

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = current_request_id()
        if request_id:
            entry["request_id"] = request_id
        # Seed 001 §7.1.1: the trace and span of the call or event being handled.
        if traceparent := current_traceparent():
            entry["trace_id"] = traceparent[3:35]
            entry["span_id"] = traceparent[36:52]
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


# Libraries that log a broker's restart with a traceback for each of their connections.
AMQP_LIBRARIES = ("aiormq", "aio_pika")
# Libraries logged from WARNING up whatever the level: their INFO is per connection or call.
NOISY = (*AMQP_LIBRARIES, "psycopg.pool", "grpc")


def without_connection_tracebacks(record: logging.LogRecord) -> bool:
    """A lost or refused connection logged by an AMQP library becomes one line with the
    error on it: the traceback of a broker restart says nothing more, once per connection
    (our relays and consumers log the outage and their retries themselves). Any other
    exception keeps its traceback."""
    if record.exc_info and record.name.startswith(AMQP_LIBRARIES):
        error = record.exc_info[1]
        if isinstance(error, OSError):  # aiormq's connection errors are ConnectionErrors
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {error}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
    return True


def setup(service: str, level: str) -> None:
    """Send every logger's records to stderr as JSON at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(without_connection_tracebacks)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
