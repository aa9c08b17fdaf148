"""services.user.domain: the wallet rules alone, without I/O, with the reasons clients see."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from services.user.domain import (
    DEFAULT_HOLD_TTL,
    MAX_BALANCE,
    MAX_HOLD_TTL,
    Hold,
    HoldStatus,
    LedgerEntry,
    LedgerKind,
    UserStatus,
    Wallet,
    captured,
    check_capture,
    check_credit,
    check_refund,
    check_release,
    hold_ttl,
    new_hold,
    require_active,
    require_available,
    same_hold,
    same_request,
    same_retry,
)

NOW = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
USER = uuid.uuid4()


def d(amount: str | int) -> Decimal:
    return Decimal(amount).quantize(Decimal("0.01"))


def wallet(balance: str = "100", held: str = "0", status: UserStatus = UserStatus.ACTIVE) -> Wallet:
    return Wallet(USER, status, d(balance), d(held), NOW)


def hold(
    amount: str = "50",
    status: HoldStatus = HoldStatus.HELD,
    final_amount: str | None = None,
    expires_at: datetime = NOW + timedelta(minutes=30),
    release_reason: str | None = None,
) -> Hold:
    return Hold(
        id=uuid.uuid4(),
        user_id=USER,
        amount=d(amount),
        final_amount=None if final_amount is None else d(final_amount),
        status=status,
        reference="tap-1",
        reason="check-in",
        release_reason=release_reason,
        expires_at=expires_at,
        created_at=NOW - timedelta(minutes=1),
        closed_at=None,
    )


def entry(amount: str = "-20", reference: str | None = "booking-1") -> LedgerEntry:
    return LedgerEntry(
        id=1,
        user_id=USER,
        kind=LedgerKind.CHARGE,
        amount=d(amount),
        balance_after=d("80"),
        reference=reference,
        idempotency_key="key-1",
        hold_id=None,
        description=None,
        created_at=NOW,
    )


def reason_of(call) -> str:
    with pytest.raises(FailedPrecondition) as caught:
        call()
    return caught.value.reason


# --- wallet --------------------------------------------------------------------------


def test_available_is_balance_minus_held() -> None:
    assert wallet("100", "30").available == d("70")


def test_require_active() -> None:
    require_active(wallet())
    for status in (UserStatus.BLOCKED, UserStatus.SUSPENDED):
        with pytest.raises(FailedPrecondition) as caught:
            require_active(wallet(status=status))
        assert caught.value.reason == "USER_NOT_ACTIVE"
        assert str(status) in caught.value.message


def test_require_available_counts_holds() -> None:
    require_available(wallet("100", "30"), d("70"))  # exactly what is available
    with pytest.raises(FailedPrecondition) as caught:
        require_available(wallet("100", "30"), d("70.01"))
    assert caught.value.reason == "INSUFFICIENT_BALANCE"
    assert "70.01 needed, 70.00 available" in caught.value.message


def test_check_credit_respects_the_wallet_cap() -> None:
    check_credit(wallet("0"), MAX_BALANCE, "top-up")
    check_credit(wallet("19999999.99"), d("0.01"), "refund")
    with pytest.raises(FailedPrecondition) as caught:
        check_credit(wallet("19999999.99"), d("0.02"), "refund")
    assert caught.value.reason == "BALANCE_LIMIT"
    assert "this refund would make it 20000000.01" in caught.value.message
    assert "at most 0.01 can be credited now" in caught.value.message


def test_check_credit_ignores_holds() -> None:
    # Held money is still in the balance: the cap is on the balance.
    check_credit(wallet("10", held="10"), MAX_BALANCE - d("10"), "top-up")
    refused = reason_of(lambda: check_credit(wallet("10", "10"), MAX_BALANCE, "top-up"))
    assert refused == "BALANCE_LIMIT"


# --- hold lifetime -------------------------------------------------------------------


def test_hold_ttl_default_and_bounds() -> None:
    assert hold_ttl(None) == DEFAULT_HOLD_TTL == timedelta(minutes=30)
    assert hold_ttl(timedelta(seconds=1)) == timedelta(seconds=1)
    assert hold_ttl(MAX_HOLD_TTL) == timedelta(hours=24)


@pytest.mark.parametrize(
    "ttl", [timedelta(0), timedelta(seconds=-1), MAX_HOLD_TTL + timedelta(microseconds=1)]
)
def test_hold_ttl_out_of_bounds(ttl: timedelta) -> None:
    with pytest.raises(InvalidArgument) as caught:
        hold_ttl(ttl)
    assert [v.field for v in caught.value.violations] == ["expires_in"]


# --- capture -------------------------------------------------------------------------


def test_capture_of_a_live_hold_applies() -> None:
    assert check_capture(hold("50"), d("50"), NOW) is True
    assert check_capture(hold("50"), d("12.50"), NOW) is True
    assert check_capture(hold("50"), d("0"), NOW) is True


def test_capture_more_than_held_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_capture(hold("50"), d("50.01"), NOW)
    (violation,) = caught.value.violations
    assert violation.field == "final_amount"
    assert "50.01 exceeds the held amount 50.00" in violation.description


def test_capture_retry_with_the_same_amount_is_a_no_op() -> None:
    captured = hold("50", HoldStatus.CAPTURED, final_amount="30")
    assert check_capture(captured, d("30"), NOW) is False
    # Even after expiry: the first capture happened in time.
    assert check_capture(captured, d("30"), NOW + timedelta(days=2)) is False


def test_capture_again_with_another_amount_is_refused() -> None:
    captured = hold("50", HoldStatus.CAPTURED, final_amount="30")
    with pytest.raises(FailedPrecondition) as caught:
        check_capture(captured, d("31"), NOW)
    assert caught.value.reason == "HOLD_ALREADY_CAPTURED"
    assert "30.00" in caught.value.message


@pytest.mark.parametrize("why", ["released", "expired"])
def test_capture_of_a_released_hold_is_refused(why: str) -> None:
    released = hold(status=HoldStatus.RELEASED, release_reason=why)
    with pytest.raises(FailedPrecondition) as caught:
        check_capture(released, d("10"), NOW)
    assert caught.value.reason == "HOLD_RELEASED"
    assert why in caught.value.message


def test_capture_of_an_expired_hold_is_refused() -> None:
    expired = hold(expires_at=NOW)
    assert reason_of(lambda: check_capture(expired, d("10"), NOW)) == "HOLD_EXPIRED"
    assert check_capture(expired, d("10"), NOW - timedelta(microseconds=1)) is True


def test_capture_status_is_checked_before_the_amount() -> None:
    released = hold("10", HoldStatus.RELEASED, release_reason="released")
    assert reason_of(lambda: check_capture(released, d("999"), NOW)) == "HOLD_RELEASED"


def test_new_hold_starts_held_and_expires_after_its_ttl() -> None:
    hold_id = uuid.uuid4()
    made = new_hold(hold_id, USER, d("12"), "tap-9", None, NOW, timedelta(minutes=5))
    assert (made.id, made.user_id, made.amount, made.reference) == (hold_id, USER, d("12"), "tap-9")
    assert made.status is HoldStatus.HELD
    assert made.reason == "Trip fare hold"
    assert (made.created_at, made.expires_at) == (NOW, NOW + timedelta(minutes=5))
    assert (made.final_amount, made.release_reason, made.closed_at) == (None, None, None)
    assert new_hold(hold_id, USER, d("1"), "r", "Booking", NOW, DEFAULT_HOLD_TTL).reason == (
        "Booking"
    )


def test_captured_closes_the_hold_and_keeps_the_rest() -> None:
    live = hold("50")
    done = captured(live, d("30"), NOW)
    assert (done.status, done.final_amount, done.closed_at) == (HoldStatus.CAPTURED, d("30"), NOW)
    assert (done.id, done.amount, done.reference, done.expires_at) == (
        live.id,
        live.amount,
        live.reference,
        live.expires_at,
    )
    assert live.status is HoldStatus.HELD  # records are immutable
    # A retry of the same capture is recognised as such.
    assert check_capture(done, d("30"), NOW) is False


# --- release -------------------------------------------------------------------------


def test_release() -> None:
    assert check_release(hold()) is True
    assert check_release(hold(status=HoldStatus.RELEASED, release_reason="released")) is False
    assert check_release(hold(status=HoldStatus.RELEASED, release_reason="expired")) is False
    with pytest.raises(FailedPrecondition) as caught:
        check_release(hold(status=HoldStatus.CAPTURED, final_amount="10"))
    assert caught.value.reason == "HOLD_ALREADY_CAPTURED"
    assert "refund instead" in caught.value.message


# --- refund --------------------------------------------------------------------------


def test_refund_up_to_what_was_charged() -> None:
    check_refund(d("100"), d("0"), d("100"), "booking-1")
    check_refund(d("100"), d("60"), d("40"), "booking-1")


def test_refund_of_nothing_charged() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        check_refund(d("0"), d("0"), d("1"), "booking-9")
    assert caught.value.reason == "NOTHING_CHARGED"
    assert "booking-9" in caught.value.message


def test_refund_over_the_charge() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        check_refund(d("100"), d("60"), d("40.01"), "booking-1")
    assert caught.value.reason == "REFUND_EXCEEDS_CHARGE"
    assert "at most 40.00 can be refunded" in caught.value.message


money = st.decimals(min_value=0, max_value=10_000, places=2)


@given(money, money, money)
def test_refund_rule_property(charged: Decimal, refunded: Decimal, amount: Decimal) -> None:
    """A refund is allowed exactly when something was charged and the total refunded stays
    within it."""
    allowed = charged > 0 and refunded + amount <= charged
    try:
        check_refund(charged, refunded, amount, "r")
    except FailedPrecondition:
        assert not allowed
    else:
        assert allowed


# --- idempotency ---------------------------------------------------------------------


def test_same_request_returns_the_first_entry() -> None:
    first = entry("-20", "booking-1")
    assert same_request(first, USER, d("20"), "booking-1") is first
    credit = replace(first, kind=LedgerKind.TOP_UP, amount=d("20"), reference=None)
    assert same_request(credit, USER, d("20"), None) is credit


@pytest.mark.parametrize(
    ("user_id", "amount", "reference", "differing"),
    [
        (uuid.uuid4(), "20", "booking-1", "user_id"),
        (USER, "21", "booking-1", "amount"),
        (USER, "20", "booking-2", "reference"),
        (USER, "20", None, "reference"),
        (uuid.uuid4(), "21", None, "user_id, amount, reference"),
    ],
)
def test_same_key_for_another_request_is_refused_naming_what_differs(
    user_id: uuid.UUID, amount: str, reference: str | None, differing: str
) -> None:
    # The message once showed the first request's amount and reference ("reference None"
    # for a top-up), also when the key was another wallet's.
    with pytest.raises(AlreadyExists) as caught:
        same_request(entry("-20", "booking-1"), user_id, d(amount), reference)
    assert caught.value.message == (
        f"idempotency key 'key-1' was already used for another request (different {differing})"
    )


def test_same_hold() -> None:
    first = hold("50")
    assert same_hold(first, USER, d("50")) is first
    with pytest.raises(AlreadyExists, match="tap-1"):
        same_hold(first, USER, d("51"))
    with pytest.raises(AlreadyExists):
        same_hold(first, uuid.uuid4(), d("50"))


def test_same_retry_returns_the_first_record_or_names_every_field_that_differs() -> None:
    first = hold("50")
    assert same_retry(first, "hold", "r-1", user_id=USER, amount=d("50")) is first
    with pytest.raises(AlreadyExists) as caught:
        same_retry(first, "hold", "r-1", user_id=uuid.uuid4(), amount=d("51"), reason=first.reason)
    assert caught.value.message == (
        "request_id 'r-1' was already used for another hold (different user_id, amount)"
    )
