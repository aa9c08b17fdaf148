"""The Midtrans protocol's pure parts: the notification signature and what a transaction
status means for a payment."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest

from libs.errors import FailedPrecondition
from services.booking.gateway import Outcome, Status, gross_amount, signature, verified

KEY = "SB-Mid-server-abc"


def test_the_signature_is_sha512_of_order_status_amount_and_key() -> None:
    expected = hashlib.sha512(b"order-1" + b"200" + b"150000.00" + KEY.encode()).hexdigest()
    assert signature("order-1", "200", "150000.00", KEY) == expected


def notification(**changes: object) -> dict:
    body = {"order_id": "pay-1", "status_code": "200", "gross_amount": "150000.00"}
    body["signature_key"] = signature("pay-1", "200", "150000.00", KEY)
    return {**body, **changes}


def test_only_a_notification_signed_with_our_key_is_verified() -> None:
    assert verified(notification(), KEY)
    assert not verified(notification(), "another-key")
    assert not verified(notification(gross_amount="1.00"), KEY)
    assert not verified(notification(signature_key=None), KEY)
    assert not verified(notification(order_id=7), KEY)
    assert not verified({}, KEY)


@pytest.mark.parametrize(
    ("status", "fraud", "outcome"),
    [
        ("settlement", "accept", Outcome.PAID),
        ("capture", "accept", Outcome.PAID),
        ("capture", "challenge", Outcome.PENDING),
        ("capture", "deny", Outcome.FAILED),
        ("pending", "accept", Outcome.PENDING),
        ("deny", "", Outcome.FAILED),
        ("cancel", "", Outcome.FAILED),
        ("failure", "", Outcome.FAILED),
        ("expire", "", Outcome.EXPIRED),
        ("refund", "", Outcome.REFUNDED),
        ("partial_refund", "", Outcome.REFUNDED),
        ("", "", Outcome.PENDING),  # an order the gateway never saw
    ],
)
def test_what_a_transaction_status_means(status: str, fraud: str, outcome: Outcome) -> None:
    seen = Status.of({"transaction_status": status, "fraud_status": fraud, "order_id": "x"})
    assert seen.outcome is outcome


def test_the_gateway_takes_whole_rupiah() -> None:
    assert gross_amount(Decimal("150000.00")) == 150_000
    with pytest.raises(FailedPrecondition) as caught:
        gross_amount(Decimal("150000.50"))
    assert caught.value.reason == "AMOUNT_NOT_PAYABLE"
