"""google.protobuf.Timestamp on the wire from the datetimes tiket keeps (UTC, aware)."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_timestamp(value: datetime) -> Timestamp:
    """A naive datetime is taken as UTC (as Timestamp.FromDatetime does). Built from seconds
    and nanos directly: FromDatetime costs three times as much, and lists of slots or
    journeys make thousands."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - EPOCH
    return Timestamp(seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000)
