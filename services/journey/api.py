"""tiket.journey.v1.JourneyService: proto <-> domain, input validation. Errors raised here or
below are turned into status codes by the shared interceptor."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime

from grpc import aio
from prometheus_client import Counter
from tiket.journey.v1 import journey_pb2, journey_pb2_grpc

from libs import paging
from libs.auth import current_principal
from libs.errors import FailedPrecondition, InvalidArgument
from libs.money import to_decimal
from libs.validation import (
    card_id_field,
    gate_code_field,
    page_size_field,
    terminal_code_field,
    timestamp_field,
    uuid_field,
)
from services.journey import domain, messages, remote
from services.journey.app import JourneyApp
from services.journey.config import JourneyConfig
from services.journey.domain import TapKind, TapRequest
from services.journey.offline import OfflineTap, SyncBatch
from services.journey.store import JourneyFilter

TAPS = Counter(
    "tiket_taps_total",
    "Gate taps answered, by kind (checkin, checkout) and outcome: accepted, refused (a "
    "business rule: tiket_refusals_total says which) or failed (any other error). Taps "
    "with invalid input are not counted.",
    ("kind", "outcome"),
)


class _TapCounter:
    """The tiket_taps_total series of one kind, resolved once."""

    def __init__(self, kind: str) -> None:
        self.accepted, self.refused, self.failed = (
            TAPS.labels(kind, outcome) for outcome in ("accepted", "refused", "failed")
        )

    @contextmanager
    def counting(self) -> Iterator[None]:
        try:
            yield
        except FailedPrecondition:
            self.refused.inc()
            raise
        except Exception:
            self.failed.inc()
            raise
        self.accepted.inc()


CHECKINS, CHECKOUTS = _TapCounter("checkin"), _TapCounter("checkout")
MAX_OFFLINE_TAPS = 500
DIRECTIONS = {
    journey_pb2.TAP_DIRECTION_CHECK_IN: TapKind.CHECKIN,
    journey_pb2.TAP_DIRECTION_CHECK_OUT: TapKind.CHECKOUT,
}


class JourneyApi(journey_pb2_grpc.JourneyServiceServicer):
    def __init__(self, app: JourneyApp, config: JourneyConfig) -> None:
        self.app = app
        self.config = config

    async def CheckIn(self, request: journey_pb2.CheckInRequest, context: aio.ServicerContext):
        tap = self._tap(TapKind.CHECKIN, request)
        remote.set_deadline(context.time_remaining())
        with CHECKINS.counting():
            return await self.app.check_in(tap)

    async def CheckOut(self, request: journey_pb2.CheckOutRequest, context: aio.ServicerContext):
        tap = self._tap(TapKind.CHECKOUT, request)
        remote.set_deadline(context.time_remaining())
        with CHECKOUTS.counting():
            return await self.app.check_out(tap)

    async def SyncOfflineTaps(
        self, request: journey_pb2.SyncOfflineTapsRequest, context: aio.ServicerContext
    ):
        batch = sync_batch(request, datetime.now(UTC), self.config)
        remote.set_deadline(context.time_remaining())
        return await self.app.sync_offline_taps(batch)

    async def GetActiveJourney(
        self, request: journey_pb2.GetActiveJourneyRequest, context: aio.ServicerContext
    ):
        key = request.WhichOneof("key")
        if key == "user_id":
            journey = await self.app.active_journey(uuid_field(request.user_id, "user_id"), None)
        elif key == "card_id":
            journey = await self.app.active_journey(None, card_id_field(request.card_id))
        else:
            raise InvalidArgument.field("key", "set user_id or card_id")
        return messages.journey(journey)

    async def GetJourney(
        self, request: journey_pb2.GetJourneyRequest, context: aio.ServicerContext
    ):
        journey_id = uuid_field(request.journey_id, "journey_id")
        return messages.journey(await self.app.journey(journey_id, current_principal()))

    async def ListJourneys(
        self, request: journey_pb2.ListJourneysRequest, context: aio.ServicerContext
    ):
        limit = page_size_field(request.page_size)
        where = JourneyFilter(
            user_id=uuid_field(request.user_id, "user_id") if request.user_id else None,
            terminal_code=terminal_code_field(request.terminal_code)
            if request.terminal_code
            else None,
            started_from=timestamp_field(request, "started_from"),
            started_before=timestamp_field(request, "started_before"),
            status=_status(request.status),
        )
        if (
            where.started_from
            and where.started_before
            and where.started_from >= where.started_before
        ):
            raise InvalidArgument.field("started_before", "must be after started_from")
        found = await self.app.list_journeys(where, _after(request.page_token), limit + 1)
        token = ""
        if len(found) > limit:
            last = found[limit - 1]
            started = last.checkin_time or last.checkout_time
            assert started is not None
            token = paging.encode(started.isoformat(), str(last.id))
        return journey_pb2.ListJourneysResponse(
            journeys=[messages.journey(j) for j in found[:limit]], next_page_token=token
        )

    def _tap(
        self, kind: TapKind, request: journey_pb2.CheckInRequest | journey_pb2.CheckOutRequest
    ) -> TapRequest:
        tapped_at = timestamp_field(request, "tapped_at")
        return TapRequest(
            kind=kind,
            tap_id=uuid_field(request.tap_id, "tap_id"),
            card_id=card_id_field(request.card_id),
            terminal_code=terminal_code_field(request.terminal_code),
            gate_code=gate_code_field(request.gate_code),
            tapped_at=domain.check_tap_time(tapped_at, datetime.now(UTC), self.config),
        )


def sync_batch(
    request: journey_pb2.SyncOfflineTapsRequest, now: datetime, config: JourneyConfig
) -> SyncBatch:
    """The request checked whole before anything is read or written: a bad field anywhere
    is INVALID_ARGUMENT naming it (taps[3].tapped_at). A tap too old or too far ahead of the
    server's clock is not bad input but a REJECTED outcome of that tap alone (offline.py): a
    gate re-sends a refused batch as it is, so one such tap must not hold back the others."""
    terminal = terminal_code_field(request.terminal_code)
    gate = gate_code_field(request.gate_code)
    if not 1 <= len(request.taps) <= MAX_OFFLINE_TAPS:
        raise InvalidArgument.field(
            "taps", f"has {len(request.taps)} taps; send 1 to {MAX_OFFLINE_TAPS} per call"
        )
    taps: list[OfflineTap] = []
    first: dict[uuid.UUID, int] = {}
    for index, tap in enumerate(request.taps):
        with _within(f"taps[{index}]"):
            checked = _offline_tap(tap, now, config)
        if checked.tap_id in first:
            raise InvalidArgument.field(
                f"taps[{index}].tap_id", f"repeats taps[{first[checked.tap_id]}].tap_id"
            )
        first[checked.tap_id] = index
        taps.append(checked)
    return SyncBatch(terminal, gate, tuple(taps))


def _offline_tap(tap: journey_pb2.OfflineTap, now: datetime, config: JourneyConfig) -> OfflineTap:
    tap_id = uuid_field(tap.tap_id, "tap_id")
    card = card_id_field(tap.card_id)
    if tap.direction not in DIRECTIONS:
        raise InvalidArgument.field(
            "direction", "must be TAP_DIRECTION_CHECK_IN or TAP_DIRECTION_CHECK_OUT"
        )
    tapped_at = timestamp_field(tap, "tapped_at")
    if tapped_at is None:
        raise InvalidArgument.field("tapped_at", "is required: when the card was tapped")
    amount = None
    if tap.HasField("offline_amount"):
        amount = to_decimal(tap.offline_amount, "offline_amount", positive=False)
    return OfflineTap(tap_id, card, DIRECTIONS[tap.direction], tapped_at, amount)


@contextmanager
def _within(prefix: str) -> Iterator[None]:
    """Name the fields of InvalidArgument raised inside as parts of `prefix`."""
    try:
        yield
    except InvalidArgument as exc:
        raise InvalidArgument(
            *(replace(v, field=f"{prefix}.{v.field}") for v in exc.violations)
        ) from None


def _status(value: int) -> domain.JourneyStatus | None:
    if value == journey_pb2.JOURNEY_STATUS_UNSPECIFIED:
        return None
    if value not in messages.STATUS_FROM_PROTO:
        raise InvalidArgument.field("status", "is not a JourneyStatus")
    return messages.STATUS_FROM_PROTO[value]


def _after(token: str) -> tuple[datetime, uuid.UUID] | None:
    key = paging.decode(token, 2)
    if key is None:
        return None
    try:
        started, journey_id = key
        if isinstance(started, str) and isinstance(journey_id, str):
            return datetime.fromisoformat(started), uuid.UUID(journey_id)
    except ValueError:
        pass
    raise InvalidArgument.field("page_token", "is not a token from a previous response")
