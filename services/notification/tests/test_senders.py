"""The providers alone, against local servers that misbehave in ways the shared stack's do not:
an SMTP server slow on every command, a webhook answering a refusal in no known encoding."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

from services.notification.config import NotificationConfig
from services.notification.domain import Channel, Claimed, NotificationType, Outcome
from services.notification.senders import EmailSender, WebhookSender

pytestmark = pytest.mark.timeout(20)
ITEM = Claimed(1, Channel.EMAIL, 1, uuid.uuid4(), "Anda check-in.", "id", NotificationType.CHECKIN)


class SlowSmtp:
    """Answers every command of the transaction in `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        await asyncio.sleep(self.delay)
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        await asyncio.sleep(self.delay)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(self.delay)
        return "250 OK"


async def test_an_smtp_session_is_bounded_as_a_whole_not_per_command() -> None:
    """Each command answers within send_timeout, the session does not: the attempt fails in
    send_timeout, so it can never outlive the claim's lease (and be sent by a second worker)."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(SlowSmtp(0.2)), "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        config = NotificationConfig(smtp_host="127.0.0.1", smtp_port=port, send_timeout=0.3)
        started = loop.time()
        attempt = await EmailSender(config).send(ITEM, "rider@example.com")
        took = loop.time() - started
    finally:
        server.close()
    assert attempt.outcome is Outcome.FAILED
    assert attempt.error is not None and "TimeoutError" in attempt.error
    assert took < 0.55


@asynccontextmanager
async def webhook(status: int, body: bytes) -> AsyncIterator[str]:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body)

    app = web.Application()
    app.router.add_post("/hook", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("status", "outcome"), [(400, Outcome.REJECTED), (503, Outcome.FAILED)])
async def test_a_webhook_refusal_in_any_encoding_is_read(status: int, outcome: Outcome) -> None:
    async with webhook(status, b"\xff\xfe not utf-8 " * 100) as url, aiohttp.ClientSession() as s:
        sender = WebhookSender(NotificationConfig(webhook_url=url, send_timeout=2), s)
        attempt = await sender.send(ITEM, "+6281200000001")
    assert attempt.outcome is outcome
    assert attempt.error is not None and f"HTTP {status}" in attempt.error
    assert len(attempt.error) < 300
