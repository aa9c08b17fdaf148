"""Users and wallets: records, states and the rules that decide a request. Pure: no I/O.

Debt (debt_change): a charge with allow_debt — a ride already taken, settled by the journey
service — is taken whole, so the available balance (balance - held) may go below zero; that
is the debt, and balance = sum(ledger) still holds (no second ledger: the wallet's own
balance says what is owed, and the next credit repays it simply by raising it). An active
card is suspended for it (DEBT_REASON) before the money is taken — the database refuses an
active card in debt (migration 0006) — and a credit that brings the available balance back
to >= 0 lifts that suspension; one set by an operator for another reason stays."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import TypeVar

from libs.errors import AlreadyExists, FailedPrecondition, InvalidArgument

# E-money wallets in Indonesia are capped at Rp 20,000,000 for registered accounts.
MAX_BALANCE = Decimal("20000000.00")
DEFAULT_HOLD_TTL = timedelta(minutes=30)
MAX_HOLD_TTL = timedelta(hours=24)
T = TypeVar("T")
DEBT_REASON = "debt from offline taps"


class UserStatus(StrEnum):
    ACTIVE = "active"
    BLOCKED = "blocked"
    SUSPENDED = "suspended"


class HoldStatus(StrEnum):
    HELD = "held"
    CAPTURED = "captured"
    RELEASED = "released"


class LedgerKind(StrEnum):
    TOP_UP = "top_up"
    CAPTURE = "capture"
    CHARGE = "charge"
    REFUND = "refund"


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    card_id: str
    full_name: str
    email: str | None
    phone: str | None
    status: UserStatus
    status_reason: str | None
    registered_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Wallet:
    user_id: uuid.UUID
    status: UserStatus
    balance: Decimal
    held: Decimal
    updated_at: datetime
    # Read by store.lock_wallet only (the debt rule needs it); None elsewhere.
    status_reason: str | None = None

    @property
    def available(self) -> Decimal:
        return self.balance - self.held


@dataclass(frozen=True)
class StatusChange:
    """A change of the card's status the debt rule asks for."""

    status: UserStatus
    reason: str | None

    @property
    def suspends(self) -> bool:
        return self.status is UserStatus.SUSPENDED


@dataclass(frozen=True)
class Pet:
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    species: str
    breed: str | None
    birth_date: date | None
    created_at: datetime


@dataclass(frozen=True)
class Hold:
    id: uuid.UUID
    user_id: uuid.UUID
    amount: Decimal
    final_amount: Decimal | None
    status: HoldStatus
    reference: str
    reason: str
    release_reason: str | None
    expires_at: datetime
    created_at: datetime
    closed_at: datetime | None


@dataclass(frozen=True)
class LedgerEntry:
    id: int
    user_id: uuid.UUID
    kind: LedgerKind
    amount: Decimal
    balance_after: Decimal
    reference: str | None
    idempotency_key: str | None
    hold_id: uuid.UUID | None
    description: str | None
    created_at: datetime


@dataclass(frozen=True)
class UserSnapshot:
    """One row of the gate devices' offline list: what a gate needs to decide a tap, and no
    personal data (user_id orders the export; it is not sent)."""

    user_id: uuid.UUID
    card_id: str
    status: UserStatus
    available: Decimal
    updated_at: datetime


def require_active(wallet: Wallet) -> None:
    if wallet.status is not UserStatus.ACTIVE:
        raise FailedPrecondition("USER_NOT_ACTIVE", f"card is {wallet.status}; it cannot pay")


def require_available(wallet: Wallet, amount: Decimal) -> None:
    if wallet.available < amount:
        raise FailedPrecondition(
            "INSUFFICIENT_BALANCE",
            f"insufficient balance: {amount} needed, {wallet.available} available",
        )


def debt_change(wallet: Wallet, moved: Decimal) -> StatusChange | None:
    """What moving `moved` (signed) does to the card's status: an active card whose available
    balance it takes below zero is suspended for debt; a card suspended for debt whose
    available balance it brings back to >= 0 is active again; otherwise nothing."""
    after = wallet.available + moved
    if after < 0 and wallet.status is UserStatus.ACTIVE:
        return StatusChange(UserStatus.SUSPENDED, DEBT_REASON)
    if after >= 0 and in_debt_suspension(wallet):
        return StatusChange(UserStatus.ACTIVE, None)
    return None


def in_debt_suspension(wallet: Wallet) -> bool:
    return wallet.status is UserStatus.SUSPENDED and wallet.status_reason == DEBT_REASON


def check_activation(wallet: Wallet, status: UserStatus) -> None:
    """An operator may not make a card in debt active: a top-up repays the debt first."""
    if status is UserStatus.ACTIVE and wallet.available < 0:
        raise FailedPrecondition(
            "CARD_IN_DEBT",
            f"the card owes {-wallet.available}; a top-up repays it and re-activates the card",
        )


def check_credit(wallet: Wallet, amount: Decimal, what: str) -> None:
    """A top-up or refund (`what`) may not take the balance past MAX_BALANCE: it is refused
    whole, never credited in part, and the message says how much would fit now."""
    after = wallet.balance + amount
    if after > MAX_BALANCE:
        room = max(MAX_BALANCE - wallet.balance, Decimal("0.00"))
        raise FailedPrecondition(
            "BALANCE_LIMIT",
            f"a wallet holds at most {MAX_BALANCE}; this {what} would make it {after}; "
            f"at most {room} can be credited now",
        )


def hold_ttl(requested: timedelta | None) -> timedelta:
    if requested is None:
        return DEFAULT_HOLD_TTL
    if requested <= timedelta(0) or requested > MAX_HOLD_TTL:
        raise InvalidArgument.field("expires_in", "must be more than 0 s and at most 24 h")
    return requested


def check_capture(hold: Hold, final_amount: Decimal, now: datetime) -> bool:
    """True when the capture must be applied, False when it is a retry of the same capture;
    raises when the hold cannot be captured."""
    if hold.status is HoldStatus.CAPTURED:
        if hold.final_amount == final_amount:
            return False
        raise FailedPrecondition(
            "HOLD_ALREADY_CAPTURED",
            f"hold {hold.reference} was already captured for {hold.final_amount}",
        )
    if hold.status is HoldStatus.RELEASED:
        raise FailedPrecondition(
            "HOLD_RELEASED", f"hold {hold.reference} was {hold.release_reason}; charge directly"
        )
    if hold.expires_at <= now:
        raise FailedPrecondition(
            "HOLD_EXPIRED", f"hold {hold.reference} expired at {hold.expires_at.isoformat()}"
        )
    if final_amount > hold.amount:
        raise InvalidArgument.field(
            "final_amount", f"{final_amount} exceeds the held amount {hold.amount}"
        )
    return True


def new_hold(
    hold_id: uuid.UUID,
    user_id: uuid.UUID,
    amount: Decimal,
    reference: str,
    reason: str | None,
    now: datetime,
    ttl: timedelta,
) -> Hold:
    return Hold(
        id=hold_id,
        user_id=user_id,
        amount=amount,
        final_amount=None,
        status=HoldStatus.HELD,
        reference=reference,
        reason=reason or "Trip fare hold",
        release_reason=None,
        expires_at=now + ttl,
        created_at=now,
        closed_at=None,
    )


def looks_capturable(hold: Hold, final_amount: Decimal, now: datetime) -> bool:
    """Whether check_capture would apply this capture, as far as `now` (not the database's
    clock) tells: the fast path's guess, which its statement checks again."""
    return hold.status is HoldStatus.HELD and hold.expires_at > now and final_amount <= hold.amount


def captured(hold: Hold, final_amount: Decimal, now: datetime) -> Hold:
    """The hold once captured for `final_amount` (checked by check_capture)."""
    return replace(hold, status=HoldStatus.CAPTURED, final_amount=final_amount, closed_at=now)


def check_release(hold: Hold) -> bool:
    """True when the release must be applied, False when the hold is already released."""
    if hold.status is HoldStatus.CAPTURED:
        raise FailedPrecondition(
            "HOLD_ALREADY_CAPTURED", f"hold {hold.reference} was captured; refund instead"
        )
    return hold.status is HoldStatus.HELD


def check_refund(charged: Decimal, refunded: Decimal, amount: Decimal, reference: str) -> None:
    if charged <= 0:
        raise FailedPrecondition(
            "NOTHING_CHARGED", f"nothing was charged for reference {reference}"
        )
    if refunded + amount > charged:
        raise FailedPrecondition(
            "REFUND_EXCEEDS_CHARGE",
            f"{charged} was charged for {reference} and {refunded} already refunded; "
            f"at most {charged - refunded} can be refunded",
        )


def same_request(
    entry: LedgerEntry, user_id: uuid.UUID, amount: Decimal, reference: str | None
) -> LedgerEntry:
    """A retried money movement returns the first entry; the same key with another request
    is refused, naming the fields that differ (not the first request's values: the key may
    be another wallet's)."""
    asked = {"user_id": user_id, "amount": amount, "reference": reference}
    first = {"user_id": entry.user_id, "amount": abs(entry.amount), "reference": entry.reference}
    if differing := [name for name, value in asked.items() if first[name] != value]:
        raise AlreadyExists(
            f"idempotency key {entry.idempotency_key!r} was already used for another request "
            f"(different {', '.join(differing)})"
        )
    return entry


def same_retry(first: T, what: str, request_id: str, **asked: object) -> T:
    """`first`, the record a request with `request_id` made, when this retry asks for the
    same fields; a request_id names one request, so any difference is refused."""
    if differing := [name for name, value in asked.items() if getattr(first, name) != value]:
        raise AlreadyExists(
            f"request_id {request_id!r} was already used for another {what} "
            f"(different {', '.join(differing)})"
        )
    return first


def same_hold(hold: Hold, user_id: uuid.UUID, amount: Decimal) -> Hold:
    if hold.user_id != user_id or hold.amount != amount:
        raise AlreadyExists(
            f"reference {hold.reference!r} already names a hold of {hold.amount} for another request"
        )
    return hold
