"""A local server speaking the documented Midtrans API, for tests: Snap's create, the Core
API's status and refund, HTTP Basic with the server key, and the HTTP notifications it
sends (signed as Midtrans signs them). What a rider does on the payment page is a call
here: pay(), expire(). down() makes the status API answer 503."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal

import aiohttp
from aiohttp import web

from services.booking.gateway import signature


@dataclass
class Order:
    order_id: str
    gross_amount: Decimal
    transaction_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    transaction_status: str = "pending"
    refunds: dict[str, Decimal] = field(default_factory=dict)  # refund_key -> amount

    @property
    def gross(self) -> str:
        return f"{self.gross_amount:.2f}"

    @property
    def status_code(self) -> str:
        return {"settlement": "200", "capture": "200", "pending": "201"}.get(
            self.transaction_status, "202"
        )


class FakeMidtrans:
    def __init__(self, server_key: str) -> None:
        self.server_key = server_key
        self.orders: dict[str, Order] = {}
        self.status_down = False
        self.calls: list[str] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/snap/v1/transactions", self._create)
        app.router.add_get("/v2/{order_id}/status", self._status)
        app.router.add_post("/v2/{order_id}/refund", self._refund)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- what the rider and the gateway do ---------------------------------------------------

    def pay(self, order_id: str) -> Order:
        order = self.orders[order_id]
        order.transaction_status = "settlement"
        return order

    def expire(self, order_id: str) -> Order:
        order = self.orders[order_id]
        order.transaction_status = "expire"
        return order

    def notification(self, order_id: str, *, server_key: str | None = None) -> dict:
        """The HTTP notification Midtrans sends about the order's present state."""
        order = self.orders[order_id]
        body = {
            "transaction_time": "2026-12-07 10:00:00",
            "transaction_status": order.transaction_status,
            "transaction_id": order.transaction_id,
            "status_message": "midtrans payment notification",
            "status_code": order.status_code,
            "payment_type": "qris",
            "order_id": order_id,
            "merchant_id": "G123456789",
            "gross_amount": order.gross,
            "fraud_status": "accept",
            "currency": "IDR",
        }
        key = self.server_key if server_key is None else server_key
        body["signature_key"] = signature(order_id, order.status_code, order.gross, key)
        return body

    async def notify(self, url: str, body: dict) -> int:
        """POST a notification to the merchant's endpoint; its HTTP status."""
        async with aiohttp.ClientSession() as session, session.post(url, json=body) as answer:
            return answer.status

    # --- the API ---------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        expected = aiohttp.encode_basic_auth(self.server_key, "")
        return request.headers.get("Authorization") == expected

    async def _create(self, request: web.Request) -> web.Response:
        self.calls.append("create")
        if not self._authorised(request):
            return web.json_response({"error_messages": ["Access denied"]}, status=401)
        details = (await request.json())["transaction_details"]
        order_id = details["order_id"]
        if order_id in self.orders:
            return web.json_response(
                {"error_messages": ["transaction_details.order_id sudah digunakan"]}, status=400
            )
        self.orders[order_id] = Order(order_id, Decimal(details["gross_amount"]))
        token = uuid.uuid4().hex
        return web.json_response(
            {"token": token, "redirect_url": f"{self.url}/snap/v4/redirection/{token}"},
            status=201,
        )

    async def _status(self, request: web.Request) -> web.Response:
        self.calls.append("status")
        if self.status_down:
            return web.json_response({"status_message": "service unavailable"}, status=503)
        if not self._authorised(request):
            return web.json_response({"status_code": "401"}, status=401)
        order = self.orders.get(request.match_info["order_id"])
        if order is None:
            return web.json_response(
                {"status_code": "404", "status_message": "Transaction doesn't exist."},
                status=404,
            )
        return web.json_response(
            {
                "status_code": order.status_code,
                "transaction_id": order.transaction_id,
                "transaction_status": order.transaction_status,
                "order_id": order.order_id,
                "gross_amount": order.gross,
                "fraud_status": "accept",
                "payment_type": "qris",
                "currency": "IDR",
            }
        )

    async def _refund(self, request: web.Request) -> web.Response:
        self.calls.append("refund")
        if not self._authorised(request):
            return web.json_response({"status_code": "401"}, status=401)
        order = self.orders[request.match_info["order_id"]]
        asked = await request.json()
        order.refunds.setdefault(asked["refund_key"], Decimal(asked["amount"]))
        refunded = sum(order.refunds.values())
        order.transaction_status = "refund" if refunded >= order.gross_amount else "partial_refund"
        return web.json_response(
            {
                "status_code": "200",
                "status_message": "Success, refund request is approved",
                "order_id": order.order_id,
                "refund_key": asked["refund_key"],
                "refund_amount": f"{Decimal(asked['amount']):.2f}",
                "transaction_status": order.transaction_status,
            }
        )
