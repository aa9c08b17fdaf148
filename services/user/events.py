"""The events of the user & wallet service, built from domain records."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection
from tiket.events.v1 import wallet_pb2

from libs.events.outbox import emit, staged_event
from libs.money import to_money
from services.user.domain import Hold, LedgerEntry, LedgerKind, User, UserStatus, Wallet

SOURCE = "/tiket/user"

MONEY_EVENT_TYPES = {
    LedgerKind.TOP_UP: "wallet.topped_up",
    LedgerKind.CHARGE: "wallet.charged",
    LedgerKind.REFUND: "wallet.refunded",
}


async def user_created(conn: AsyncConnection, user: User) -> None:
    data = wallet_pb2.UserCreated(
        user_id=str(user.id),
        card_id=user.card_id,
        full_name=user.full_name,
        email=user.email or "",
        phone=user.phone or "",
    )
    await emit(conn, SOURCE, "user.created", str(user.id), data)


async def status_changed(
    conn: AsyncConnection, user: User, old: UserStatus, debt_available: Decimal | None = None
) -> None:
    """`debt_available`: the change is the debt rule's, leaving this available balance."""
    data = wallet_pb2.UserStatusChanged(
        user_id=str(user.id),
        card_id=user.card_id,
        old_status=old,
        new_status=user.status,
        reason=user.status_reason or "",
        debt=debt_available is not None,
    )
    if debt_available is not None:
        data.available.CopyFrom(to_money(debt_available))
    await emit(conn, SOURCE, "user.status_changed", str(user.id), data)


async def money_moved(conn: AsyncConnection, entry: LedgerEntry, wallet: Wallet) -> None:
    data = wallet_pb2.WalletMoneyMoved(
        user_id=str(entry.user_id),
        ledger_entry_id=str(entry.id),
        amount=to_money(abs(entry.amount)),
        balance_after=to_money(entry.balance_after),
        available_after=to_money(wallet.available),
        reference=entry.reference or "",
        description=entry.description or "",
    )
    await emit(conn, SOURCE, MONEY_EVENT_TYPES[entry.kind], str(entry.user_id), data)


async def hold_changed(
    conn: AsyncConnection, event_type: str, hold: Hold, available: Decimal
) -> None:
    """wallet.hold_captured or wallet.hold_released."""
    await emit(conn, SOURCE, event_type, str(hold.user_id), _hold_data(hold, available))


def hold_staged(event_type: str, hold: Hold) -> dict[str, Any]:
    """wallet.hold_placed or wallet.hold_captured, staged for the statement that writes the
    hold (store.place_hold, store.capture_hold). It has no availableAfter: the statement adds
    it, computed from the wallet it locks."""
    return staged_event(SOURCE, event_type, str(hold.user_id), _hold_data(hold, None))


def _hold_data(hold: Hold, available: Decimal | None) -> wallet_pb2.WalletHoldChanged:
    data = wallet_pb2.WalletHoldChanged(
        user_id=str(hold.user_id),
        hold_id=str(hold.id),
        reference=hold.reference,
        amount=to_money(hold.amount),
        release_reason=hold.release_reason or "",
        reason=hold.reason,
    )
    if available is not None:
        data.available_after.CopyFrom(to_money(available))
    if hold.final_amount is not None:
        data.final_amount.CopyFrom(to_money(hold.final_amount))
    data.expires_at.FromDatetime(hold.expires_at)
    return data
