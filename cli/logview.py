"""Turns a service's JSON log lines into one readable line each for `tiket up`."""

from __future__ import annotations

import orjson

SKIP = {"ts", "level", "service", "logger", "msg", "request_id"}


def pretty(service: str, line: str) -> str:
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return f"{service:<12}| {line}"
    if not isinstance(entry, dict):
        return f"{service:<12}| {line}"
    clock = str(entry.get("ts", ""))[11:23]
    level = str(entry.get("level", "")).upper()
    if entry.get("msg") == "rpc":
        text = f"{entry.get('method')} {entry.get('code')} {entry.get('duration_ms')}ms"
    else:
        extras = " ".join(f"{k}={v}" for k, v in entry.items() if k not in SKIP | {"exception"})
        text = f"{entry.get('msg')} {extras}".rstrip()
    if "exception" in entry:
        text += "\n" + str(entry["exception"])
    return f"{service:<12}| {clock} {level:<7} {text}"
