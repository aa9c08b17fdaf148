"""Request ids and W3C trace context carried through a call in context variables, so logs,
outgoing calls and emitted events name the request that caused them."""

from __future__ import annotations

import contextvars
import os
import re

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_traceparent: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "traceparent", default=None
)
TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def new_traceparent(trace_id: str | None = None) -> str:
    return f"00-{trace_id or os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def begin(request_id: str | None, traceparent: str | None) -> str:
    """Start the context of one incoming call; return its request id."""
    if traceparent and TRACEPARENT.match(traceparent):
        # A new span id in the caller's trace.
        traceparent = new_traceparent(traceparent[3:35])
    else:
        traceparent = new_traceparent()
    rid = request_id if request_id and len(request_id) <= 128 else traceparent[36:52]
    _request_id.set(rid)
    _traceparent.set(traceparent)
    return rid


def current_request_id() -> str:
    return _request_id.get()


def current_traceparent() -> str | None:
    return _traceparent.get()
