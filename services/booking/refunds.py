"""The refund policy of a cancellation (seed 000 §4.2), pure.

A policy is a list of tiers, each "at least H hours before the slot starts: P % back",
read from TIKET_BOOKING_REFUND_POLICY as "H:P,H:P" (e.g. "24:100,0:50" — 100 % a day or
more ahead, 50 % after that). The default is the seed's standard cancellation: 90 % at
any time before the start. A rider cannot cancel once the slot has started (the clinic
marks a no-show or completes the visit); a cancellation by the clinic refunds everything."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal

from libs.errors import FailedPrecondition
from libs.money import CENT

STANDARD = "0:90"
FULL = 100


@dataclass(frozen=True)
class Tier:
    before: timedelta
    percent: int


@dataclass(frozen=True)
class RefundPolicy:
    tiers: tuple[Tier, ...]  # longest notice first
    name: str

    @classmethod
    def parse(cls, text: str) -> RefundPolicy:
        """ "H:P,H:P" -> a policy; ValueError saying what is wrong."""
        tiers = []
        for part in text.split(","):
            hours, sep, percent = part.strip().partition(":")
            if not sep:
                raise ValueError(f"{part.strip()!r} is not HOURS:PERCENT")
            try:
                tier = Tier(timedelta(hours=float(hours)), int(percent))
            except ValueError:
                raise ValueError(f"{part.strip()!r} is not HOURS:PERCENT") from None
            if tier.before < timedelta(0) or not 0 <= tier.percent <= FULL:
                raise ValueError(f"{part.strip()!r}: hours must be >= 0, percent 0-100")
            tiers.append(tier)
        ordered = tuple(sorted(tiers, key=lambda t: t.before, reverse=True))
        if len({t.before for t in ordered}) != len(ordered):
            raise ValueError("two tiers name the same hours")
        if ordered[-1].before != timedelta(0):
            raise ValueError("the last tier must start at 0 hours (until the slot starts)")
        name = "standard_cancellation" if text.replace(" ", "") == STANDARD else "tiered"
        return cls(ordered, name)

    def percent(self, slot_start: datetime, now: datetime, by_clinic: bool) -> int:
        """The share of the paid amount refunded for a cancellation at `now`."""
        if by_clinic:
            return FULL
        notice = slot_start - now
        if notice <= timedelta(0):
            raise FailedPrecondition(
                "BOOKING_STARTED",
                f"the visit started at {slot_start.isoformat()}: it can no longer be cancelled",
            )
        return next(t.percent for t in self.tiers if notice >= t.before)


def refund_amount(paid: Decimal, percent: int) -> Decimal:
    """`percent` of `paid`, down to the cent (never more than the policy says)."""
    return (paid * percent / FULL).quantize(CENT, rounding=ROUND_DOWN)
