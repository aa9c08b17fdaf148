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


def setup(service: str, level: str) -> None:
    """Send every logger's records to stderr as JSON at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiormq", "aio_pika", "psycopg.pool", "grpc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
