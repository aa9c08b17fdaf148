"""The journey service's client of the user service: who holds a card, and the money moves of
a journey. Every move is idempotent by a key derived from the journey, so any step may be
repeated — by a retried tap, after a crash, by the sweeper — and takes effect once.

A ride already taken — a closing of reconciled offline taps, a journey closed with no rider
at the gate to refuse, a re-pricing — is charged with allow_debt: the user service takes it
whole even from a short balance (the card is then suspended for the debt, and the rider's
next top-up repays it), so it never ends unpaid. Only a check-out tap's charge may be
refused: the gate stays shut and the journey open.

(The user service's own Wallet and Hold are its domain records; what this module returns are
the answers this service needs of them.)"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from google.protobuf.duration_pb2 import Duration
from grpc import aio
from tiket.user.v1 import user_pb2, user_pb2_grpc

from libs.cache import LocalCache
from libs.errors import AlreadyExists, FailedPrecondition, NotFound
from libs.money import from_money, to_money
from services.journey import remote
from services.journey.domain import Journey, hold_reference

WHAT = "the wallet (user service)"
# A card's user never changes, so the mapping may be kept long; status is not cached.
RIDER_TTL = 3600.0
RIDERS_KEPT = 200_000
HOLD_GONE = {"HOLD_RELEASED", "HOLD_EXPIRED"}
HOLD_NEVER_PLACED = "HOLD_NEVER_PLACED"


@dataclass(frozen=True)
class Rider:
    user_id: uuid.UUID
    # From a fresh GetUser; None when the id came from the cache (the wallet then decides).
    active: bool | None


@dataclass(frozen=True)
class PlacedHold:
    """PlaceHold's answer for a journey's hold (placed now, or adopted)."""

    held: bool
    amount: Decimal
    # The wallet's available balance after the hold, when PlaceHold answered it.
    available: Decimal | None


@dataclass(frozen=True)
class Collected:
    available: Decimal
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Refused:
    reason: str
    message: str


class WalletClient:
    def __init__(self, channel: aio.Channel, timeout: float) -> None:
        self.stub = user_pb2_grpc.UserServiceStub(channel)
        self.timeout = timeout
        self._riders: LocalCache[str, uuid.UUID] = LocalCache(RIDER_TTL, RIDERS_KEPT)

    async def rider(self, card_id: str) -> Rider:
        """NOT_FOUND for a card nobody holds."""
        fresh: list[bool] = []

        async def load() -> uuid.UUID:
            user = await self._call(self.stub.GetUser, user_pb2.GetUserRequest(card_id=card_id))
            fresh.append(user.status == user_pb2.USER_STATUS_ACTIVE)
            return uuid.UUID(user.id)

        user_id = await self._riders.get(card_id, load)
        return Rider(user_id, fresh[0] if fresh else None)

    async def place_hold(
        self, user_id: uuid.UUID, amount: Decimal, journey_id: uuid.UUID, ttl: timedelta, why: str
    ) -> PlacedHold:
        """The hold of the journey: placed now, or the one a first attempt placed (adopted)."""
        expires_in = Duration()
        expires_in.FromTimedelta(ttl)
        reference = hold_reference(journey_id)
        try:
            hold = await self._call(
                self.stub.PlaceHold,
                user_pb2.PlaceHoldRequest(
                    user_id=str(user_id),
                    amount=to_money(amount),
                    reference=reference,
                    reason=why[:255],
                    expires_in=expires_in,
                ),
            )
        except AlreadyExists:
            # A first attempt held another amount (the maximum fare changed in between):
            # its hold is the journey's.
            hold = await self._call(
                self.stub.GetHold,
                user_pb2.GetHoldRequest(hold=user_pb2.HoldSelector(reference=reference)),
            )
        available = from_money(hold.available_after) if hold.HasField("available_after") else None
        return PlacedHold(
            hold.status == user_pb2.HOLD_STATUS_HELD, from_money(hold.amount), available
        )

    async def release(self, reference: str) -> bool:
        """Release a hold (nothing when it was never placed or is released already). False
        when it was captured: that capture stands, and is the journey's payment."""
        try:
            await self._call(
                self.stub.ReleaseHold,
                user_pb2.ReleaseHoldRequest(hold=user_pb2.HoldSelector(reference=reference)),
            )
        except NotFound:
            return True
        except FailedPrecondition as exc:
            if exc.reason != "HOLD_ALREADY_CAPTURED":
                raise
            return False
        return True

    async def available(self, user_id: uuid.UUID) -> Decimal:
        wallet = await self._call(
            self.stub.GetWallet, user_pb2.GetWalletRequest(user_id=str(user_id))
        )
        return from_money(wallet.available)

    async def collect(self, journey: Journey, *, debt: bool) -> Collected | Refused:
        """Take the price of a closed journey: capture it from the hold (the rest is
        released), or charge it directly when the hold is gone or there never was one.
        `debt`: a ride already taken, charged into debt if need be (never Refused);
        otherwise Refused when a direct charge is refused (balance short, card blocked)."""
        assert journey.fare_charged is not None
        notes: dict[str, Any] = {}
        if journey.hold_reference is not None:
            captured = await self._capture(journey.hold_reference, journey.fare_charged)
            if isinstance(captured, Collected):
                return captured
            notes["charged_directly"] = captured
        if journey.fare_charged > 0:
            reference = hold_reference(journey.id)
            try:
                await self._call(
                    self.stub.Charge,
                    user_pb2.ChargeRequest(
                        user_id=str(journey.user_id),
                        amount=to_money(journey.fare_charged),
                        idempotency_key=reference,
                        reference=reference,
                        description=f"Journey {journey.pricing}",
                        allow_debt=debt,
                    ),
                )
            except FailedPrecondition as exc:
                return Refused(exc.reason, exc.message)
        return Collected(await self.available(journey.user_id), notes)

    async def adjust(
        self, user_id: uuid.UUID, journey_id: uuid.UUID, amount: Decimal, key: str, why: str
    ) -> None:
        """Move the re-pricing of a journey already paid: refund (`amount` < 0) or charge
        (> 0, into debt if need be: the ride was taken) the difference under the journey's
        reference, idempotent by `key`. A refused refund raises (retried later)."""
        reference = hold_reference(journey_id)
        fields = {
            "user_id": str(user_id),
            "amount": to_money(abs(amount)),
            "idempotency_key": key,
            "reference": reference,
            "description": why[:255],
        }
        if amount < 0:
            await self._call(self.stub.Refund, user_pb2.RefundRequest(**fields))
        else:
            await self._call(self.stub.Charge, user_pb2.ChargeRequest(**fields, allow_debt=True))

    async def _capture(self, reference: str, amount: Decimal) -> Collected | str:
        """Capture `amount` from the hold; when the hold is gone, why (HOLD_GONE, or
        HOLD_NEVER_PLACED): the journey is then charged directly."""
        try:
            return await self._capture_hold(reference, amount)
        except NotFound:
            return HOLD_NEVER_PLACED  # a journey started offline (timeline.py rule 6)
        except FailedPrecondition as exc:
            if exc.reason not in HOLD_GONE:
                raise
            gone = exc.reason
        # Expired but not yet swept: free it, or it would keep the money it reserves. The
        # release may find it captured after all — by another attempt of this closing whose
        # CaptureHold was on its way — and that capture is the payment: CaptureHold is
        # idempotent, so asking again gives its answer.
        if gone == "HOLD_EXPIRED" and not await self.release(reference):
            return await self._capture_hold(reference, amount)
        return gone

    async def _capture_hold(self, reference: str, amount: Decimal) -> Collected:
        captured = await self._call(
            self.stub.CaptureHold,
            user_pb2.CaptureHoldRequest(
                hold=user_pb2.HoldSelector(reference=reference), final_amount=to_money(amount)
            ),
        )
        return Collected(from_money(captured.wallet.available))

    async def _call(self, method, request):
        return await remote.call(method, request, WHAT, self.timeout)
