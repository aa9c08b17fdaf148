"""The payment gateway's protocol: Midtrans, the most used gateway in Indonesia (issue 14).
A thin async client on aiohttp (midtransclient is synchronous and cannot be pointed at
another base URL): Snap to create a transaction the rider pays on Midtrans' page, the Core
API's status and refund calls, and the checks of its HTTP notification. Base URLs are
configurable, so tests run a local server speaking the same documented API.

  POST {snap}/snap/v1/transactions     -> {"token", "redirect_url"}
  GET  {api}/v2/{order_id}/status      -> {"transaction_status", "status_code", …}
  POST {api}/v2/{order_id}/refund      -> {"status_code": "200", …}

Every call authenticates with HTTP Basic, the server key as user name and no password."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

import aiohttp

from libs.errors import FailedPrecondition, Unavailable

WHAT = "the payment gateway (Midtrans)"
# Midtrans' own expiry format: "2026-12-07 10:00:00 +0700".
EXPIRY_FORMAT = "%Y-%m-%d %H:%M:%S %z"


class Outcome(StrEnum):
    """What a transaction status means for our payment record."""

    PAID = "paid"
    PENDING = "pending"
    FAILED = "failed"
    EXPIRED = "expired"
    REFUNDED = "refunded"


@dataclass(frozen=True)
class Snap:
    token: str
    redirect_url: str


@dataclass(frozen=True)
class Status:
    """A transaction's state as the gateway reports it (status API or notification)."""

    order_id: str
    transaction_id: str
    transaction_status: str
    fraud_status: str
    status_code: str
    gross_amount: str
    payment_type: str

    @classmethod
    def of(cls, body: dict[str, Any]) -> Status:
        return cls(
            order_id=str(body.get("order_id", "")),
            transaction_id=str(body.get("transaction_id", "")),
            transaction_status=str(body.get("transaction_status", "")),
            fraud_status=str(body.get("fraud_status", "")),
            status_code=str(body.get("status_code", "")),
            gross_amount=str(body.get("gross_amount", "")),
            payment_type=str(body.get("payment_type", "")),
        )

    @property
    def outcome(self) -> Outcome:
        """Midtrans' documented statuses: capture needs the fraud check's accept."""
        status = self.transaction_status
        if status == "settlement" or (status == "capture" and self.fraud_status == "accept"):
            return Outcome.PAID
        if status in ("deny", "cancel", "failure") or (
            status == "capture" and self.fraud_status == "deny"
        ):
            return Outcome.FAILED
        if status == "expire":
            return Outcome.EXPIRED
        if status in ("refund", "partial_refund"):
            return Outcome.REFUNDED
        return Outcome.PENDING  # pending, authorize, capture under challenge

    @property
    def amount(self) -> Decimal:
        return Decimal(self.gross_amount)


def gross_amount(amount: Decimal) -> int:
    """Rupiah have no cents at Midtrans: an amount with cents cannot be paid there."""
    if amount != amount.to_integral_value():
        raise FailedPrecondition(
            "AMOUNT_NOT_PAYABLE", f"{amount} has cents: the gateway takes whole rupiah"
        )
    return int(amount)


def signature(order_id: str, status_code: str, gross: str, server_key: str) -> str:
    """signature_key = SHA512(order_id + status_code + gross_amount + server_key)."""
    return hashlib.sha512(f"{order_id}{status_code}{gross}{server_key}".encode()).hexdigest()


def verified(body: dict[str, Any], server_key: str) -> bool:
    """Does the notification carry the signature only Midtrans (and we) can make?"""
    given = body.get("signature_key")
    parts = [body.get(k) for k in ("order_id", "status_code", "gross_amount")]
    if not isinstance(given, str) or not all(isinstance(p, str) and p for p in parts):
        return False
    expected = signature(*parts, server_key)  # type: ignore[arg-type]
    return hmac.compare_digest(given.encode(), expected.encode())


class Midtrans:
    def __init__(self, snap_url: str, api_url: str, server_key: str, timeout: float) -> None:
        self.snap_url = snap_url.rstrip("/")
        self.api_url = api_url.rstrip("/")
        self.server_key = server_key
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def create(
        self, order_id: str, amount: Decimal, expires_in: timedelta, now: datetime
    ) -> Snap:
        """A Snap transaction for `order_id`, payable until `expires_in` after `now`."""
        body = {
            "transaction_details": {"order_id": order_id, "gross_amount": gross_amount(amount)},
            "expiry": {
                "start_time": now.strftime(EXPIRY_FORMAT),
                "unit": "minute",
                "duration": max(1, int(expires_in.total_seconds() // 60)),
            },
        }
        answer = await self._call("POST", f"{self.snap_url}/snap/v1/transactions", body)
        return Snap(str(answer.get("token", "")), str(answer.get("redirect_url", "")))

    async def status(self, order_id: str) -> Status:
        """The order's state; one the gateway never saw has no transaction_status (its
        outcome is PENDING: nothing was paid)."""
        url = f"{self.api_url}/v2/{order_id}/status"
        return Status.of(await self._call("GET", url, missing_ok=True))

    async def refund(self, order_id: str, refund_key: str, amount: Decimal, reason: str) -> None:
        """Refund `amount` of the order; the same refund_key never refunds twice."""
        body = {"refund_key": refund_key, "amount": gross_amount(amount), "reason": reason}
        answer = await self._call("POST", f"{self.api_url}/v2/{order_id}/refund", body)
        if str(answer.get("status_code")) not in ("200", "201"):
            raise FailedPrecondition(
                "GATEWAY_REFUSED",
                f"{WHAT} refused the refund: {answer.get('status_message', answer)}",
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(
        self, method: str, url: str, body: dict[str, Any] | None = None, *, missing_ok=False
    ) -> dict:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={
                    "Accept": "application/json",
                    "Authorization": aiohttp.encode_basic_auth(self.server_key, ""),
                },
            )
        try:
            async with self._session.request(method, url, json=body) as response:
                if response.status >= 500:
                    raise Unavailable(f"{WHAT} answered HTTP {response.status}; retry shortly")
                if response.status == 404 and missing_ok:
                    return {"order_id": url.rsplit("/", 2)[-2], "status_code": "404"}
                answer = await response.json(content_type=None)
                if response.status >= 400 or not isinstance(answer, dict):
                    message = answer.get("status_message") if isinstance(answer, dict) else None
                    raise FailedPrecondition(
                        "GATEWAY_REFUSED",
                        f"{WHAT} refused it (HTTP {response.status}): {message or answer}",
                    )
                return answer
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise Unavailable(
                f"{WHAT} is unreachable ({type(exc).__name__}); retry shortly"
            ) from None


def required(gateway: Midtrans | None, what: str) -> Midtrans:
    """The gateway client, or GATEWAY_NOT_CONFIGURED where no server key is set."""
    if gateway is None:
        raise FailedPrecondition(
            "GATEWAY_NOT_CONFIGURED",
            f"{what} through the gateway are not set up here (TIKET_BOOKING_MIDTRANS_SERVER_KEY)",
        )
    return gateway
