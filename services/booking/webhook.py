"""The gateway's HTTP notification endpoint, served by the booking process beside gRPC
(gateways call HTTP, not gRPC): POST /payments/midtrans/notification.

A notification is trusted only when its signature_key is right (else 401, nothing written)
and only for what the status API confirms (the notification's own fields could be replayed
or stale): the confirmed state is applied to the booking payment or top-up its order id
names. Answers Midtrans understands: 200 done (a replay too: applying is idempotent), 401 bad
signature, 400 not a notification, 404 an order we never made, 503 the status API or the
wallet is down (Midtrans sends it again later; the sweeper also asks)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from libs.db.transaction import in_statement
from libs.errors import FailedPrecondition, Unavailable
from services.booking import gateway
from services.booking.gateway import Midtrans, Status
from services.booking.payments import Payments
from services.booking.topups import TopUps

log = logging.getLogger(__name__)
PATH = "/payments/midtrans/notification"
MAX_BODY = 64 * 1024
Handler = Callable[[dict[str, Any]], Awaitable[tuple[int, str]]]


class Notifications:
    def __init__(
        self, pool: AsyncConnectionPool, midtrans: Midtrans, payments: Payments, top_ups: TopUps
    ) -> None:
        self.pool = pool
        self.midtrans = midtrans
        self.payments = payments
        self.top_ups = top_ups

    async def handle(self, body: dict[str, Any]) -> tuple[int, str]:
        if not gateway.verified(body, self.midtrans.server_key):
            return 401, "signature_key does not match"
        told = Status.of(body)
        try:
            confirmed = await self.midtrans.status(told.order_id)
            if not confirmed.transaction_status:
                return 404, f"order {told.order_id} is unknown to the gateway"
            await self._record(body, confirmed)
            applied = await self.payments.gateway_says(confirmed) or (
                await self.top_ups.gateway_says(confirmed)
            )
        except Unavailable as exc:
            return 503, exc.message
        except FailedPrecondition as exc:
            return 502, exc.message
        if not applied:
            return 404, f"order {told.order_id} is not ours"
        return 200, "OK"

    async def _record(self, body: dict[str, Any], confirmed: Status) -> None:
        """Keep each verified notification once (a replay is recognised, not kept twice)."""

        async def insert(conn: AsyncConnection) -> None:
            await conn.execute(
                """INSERT INTO gateway_notifications (order_id, transaction_id,
                                                      transaction_status, body, outcome)
                   VALUES (%s, %s, %s, %s, %s)
                   ON CONFLICT (provider, transaction_id, transaction_status) DO NOTHING""",
                (
                    confirmed.order_id[:50],
                    (confirmed.transaction_id or str(body.get("transaction_id", "")))[:100],
                    confirmed.transaction_status[:30],
                    Jsonb(body),
                    confirmed.outcome.value,
                ),
            )

        await in_statement(self.pool, insert)


class HttpServer:
    """An aiohttp server beside the gRPC server (a Background of the runtime). Several
    worker processes share its port (SO_REUSEPORT), as they share the gRPC port."""

    def __init__(self, host: str, port: int, handle: Handler) -> None:
        self.host = host
        self.port = port
        self.handle = handle
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(PATH, self._notified)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_port=True)
        await site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _notified(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "the body is not a notification"}, status=400)
        try:
            status, text = await self.handle(body)
        except Exception:
            log.exception("gateway notification failed")
            return web.json_response({"error": "internal error; send it again"}, status=500)
        if status != 200:
            log.warning("gateway notification answered %d: %s", status, text)
        return web.json_response({"status": text}, status=status)
