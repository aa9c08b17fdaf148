"""Domain records -> tiket.user.v1 messages."""

from __future__ import annotations

from google.type import date_pb2
from tiket.user.v1 import user_pb2

from libs.money import to_money
from libs.timestamps import to_timestamp
from services.user.domain import (
    Hold,
    HoldStatus,
    LedgerEntry,
    LedgerKind,
    Pet,
    User,
    UserSnapshot,
    UserStatus,
    Wallet,
)

STATUS_TO_PROTO = {
    UserStatus.ACTIVE: user_pb2.USER_STATUS_ACTIVE,
    UserStatus.BLOCKED: user_pb2.USER_STATUS_BLOCKED,
    UserStatus.SUSPENDED: user_pb2.USER_STATUS_SUSPENDED,
}
STATUS_FROM_PROTO = {v: k for k, v in STATUS_TO_PROTO.items()}
HOLD_STATUS = {
    HoldStatus.HELD: user_pb2.HOLD_STATUS_HELD,
    HoldStatus.CAPTURED: user_pb2.HOLD_STATUS_CAPTURED,
    HoldStatus.RELEASED: user_pb2.HOLD_STATUS_RELEASED,
}
LEDGER_KIND = {
    LedgerKind.TOP_UP: user_pb2.LEDGER_ENTRY_KIND_TOP_UP,
    LedgerKind.CAPTURE: user_pb2.LEDGER_ENTRY_KIND_CAPTURE,
    LedgerKind.CHARGE: user_pb2.LEDGER_ENTRY_KIND_CHARGE,
    LedgerKind.REFUND: user_pb2.LEDGER_ENTRY_KIND_REFUND,
}


def user(u: User) -> user_pb2.User:
    return user_pb2.User(
        id=str(u.id),
        card_id=u.card_id,
        full_name=u.full_name,
        email=u.email or "",
        phone=u.phone or "",
        status=STATUS_TO_PROTO[u.status],
        status_reason=u.status_reason or "",
        registered_at=to_timestamp(u.registered_at),
        updated_at=to_timestamp(u.updated_at),
    )


def pet(p: Pet) -> user_pb2.Pet:
    message = user_pb2.Pet(
        id=str(p.id),
        user_id=str(p.user_id),
        name=p.name,
        species=p.species,
        breed=p.breed or "",
        created_at=to_timestamp(p.created_at),
    )
    if p.birth_date:
        message.birth_date.CopyFrom(
            date_pb2.Date(year=p.birth_date.year, month=p.birth_date.month, day=p.birth_date.day)
        )
    return message


def wallet(w: Wallet) -> user_pb2.Wallet:
    return user_pb2.Wallet(
        user_id=str(w.user_id),
        balance=to_money(w.balance),
        held=to_money(w.held),
        available=to_money(w.available),
        updated_at=to_timestamp(w.updated_at),
    )


def ledger_entry(e: LedgerEntry) -> user_pb2.LedgerEntry:
    return user_pb2.LedgerEntry(
        id=str(e.id),
        user_id=str(e.user_id),
        kind=LEDGER_KIND[e.kind],
        amount=to_money(e.amount),
        balance_after=to_money(e.balance_after),
        reference=e.reference or "",
        idempotency_key=e.idempotency_key or "",
        description=e.description or "",
        created_at=to_timestamp(e.created_at),
    )


def hold(h: Hold) -> user_pb2.Hold:
    message = user_pb2.Hold(
        id=str(h.id),
        user_id=str(h.user_id),
        amount=to_money(h.amount),
        status=HOLD_STATUS[h.status],
        reference=h.reference,
        reason=h.reason,
        expires_at=to_timestamp(h.expires_at),
        created_at=to_timestamp(h.created_at),
        release_reason=h.release_reason or "",
    )
    if h.final_amount is not None:
        message.final_amount.CopyFrom(to_money(h.final_amount))
    if h.closed_at is not None:
        message.closed_at.CopyFrom(to_timestamp(h.closed_at))
    return message


def snapshot(s: UserSnapshot) -> user_pb2.UserSnapshot:
    return user_pb2.UserSnapshot(
        card_id=s.card_id,
        status=STATUS_TO_PROTO[s.status],
        available=to_money(s.available),
        updated_at=to_timestamp(s.updated_at),
    )
