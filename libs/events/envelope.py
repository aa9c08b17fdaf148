"""CloudEvents 1.0 JSON envelopes whose `data` is the protobuf-JSON form of a
tiket.events.v1 message."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import Message

SPEC_VERSION = "1.0"


@dataclass(frozen=True)
class CloudEvent:
    id: str
    source: str
    type: str
    time: str
    subject: str
    data: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "specversion": SPEC_VERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": self.time,
            "subject": self.subject,
            "datacontenttype": "application/json",
            "data": self.data,
            **self.extra,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    def data_as(self, message_type: type[Message]) -> Message:
        """Parse `data` into a protobuf message, ignoring fields added by newer producers."""
        return json_format.ParseDict(self.data, message_type(), ignore_unknown_fields=True)


def new_event(source: str, event_type: str, subject: str, data: Message) -> CloudEvent:
    return CloudEvent(
        id=str(uuid.uuid4()),
        source=source,
        type=event_type,
        time=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        subject=subject,
        data=json_format.MessageToDict(data, preserving_proto_field_name=False),
    )


class MalformedEvent(ValueError):
    """A message body that is not a CloudEvents envelope tiket can read."""


class BadEvent(ValueError):
    """Raised by a handler: an event of a type it knows whose data breaks that type's
    contract. The same event would fail the same way every time, so the consumer
    dead-letters it at once instead of spending its attempts (libs/events/consumer.py)."""


def parse(body: bytes) -> CloudEvent:
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedEvent(f"body is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise MalformedEvent("body is not a JSON object")
    missing = [
        k for k in ("id", "source", "type", "specversion") if not isinstance(raw.get(k), str)
    ]
    if missing:
        raise MalformedEvent(f"CloudEvents attributes missing: {', '.join(missing)}")
    data = raw.get("data") or {}
    if not isinstance(data, dict):
        raise MalformedEvent("data is not a JSON object")
    known = {"specversion", "id", "source", "type", "time", "subject", "datacontenttype", "data"}
    return CloudEvent(
        id=raw["id"],
        source=raw["source"],
        type=raw["type"],
        time=str(raw.get("time", "")),
        subject=str(raw.get("subject", "")),
        data=data,
        extra={k: v for k, v in raw.items() if k not in known},
    )
