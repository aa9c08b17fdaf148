"""The providers a delivery goes through: email over SMTP, push and SMS through an HTTP
webhook. Each attempt ends as an Attempt, never an exception: sent, failed (worth another
attempt: the provider was unreachable, slow or busy) or rejected (it refused for good).

Both carry a key that stays the same across attempts, for the provider (and the rider's mail
client) to recognise a repeat: a worker that dies between sending and recording sends again
once its lease is over (at-least-once)."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Protocol

import aiohttp
import aiosmtplib

from services.notification import render
from services.notification.config import NotificationConfig
from services.notification.domain import Attempt, Claimed, Outcome

RETRYABLE_HTTP = frozenset({408, 425, 429})


class Sender(Protocol):
    async def send(self, item: Claimed, to: str) -> Attempt: ...


def idempotency_key(item: Claimed) -> str:
    return f"notification-{item.notification_id}-{item.channel}"


class EmailSender:
    """One SMTP session per message. A recipient refused with a 5xx reply is a rejection;
    a 4xx (greylisting, a relay's rate limit, a full mailbox) is worth another attempt."""

    def __init__(self, config: NotificationConfig) -> None:
        self.config = config
        self.domain = parseaddr(config.smtp_from)[1].rpartition("@")[2] or "tiket.local"

    async def send(self, item: Claimed, to: str) -> Attempt:
        config = self.config
        message = EmailMessage()
        try:
            message["From"] = config.smtp_from
            message["To"] = to
        except ValueError as exc:  # e.g. a line break in the address
            return Attempt(Outcome.REJECTED, to, f"unusable address: {exc}")
        message["Subject"] = render.subject(item.language, item.type)
        message["Message-ID"] = f"<{idempotency_key(item)}@{self.domain}>"
        message.set_content(item.message)
        try:
            # aiosmtplib's timeout bounds each command, not the session: a server answering
            # just in time to each of them would hold the claim past its lease, and another
            # worker would send the message again. The whole session gets send_timeout.
            async with asyncio.timeout(config.send_timeout):
                await aiosmtplib.send(
                    message,
                    hostname=config.smtp_host,
                    port=config.smtp_port,
                    username=config.smtp_username or None,
                    password=config.smtp_password or None,
                    use_tls=config.smtp_security == "tls",
                    start_tls=config.smtp_security == "starttls",
                    timeout=config.send_timeout,
                )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            permanent = all(r.code >= 500 for r in exc.recipients)
            outcome = Outcome.REJECTED if permanent else Outcome.FAILED
            replies = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
            return Attempt(outcome, to, f"recipient refused: {replies}")
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return Attempt(Outcome.FAILED, to, f"{type(exc).__name__}: {exc}")
        return Attempt(Outcome.SENT, to)


class WebhookSender:
    """POST {channel, to, message, notification_id} as JSON, with an Idempotency-Key header.
    2xx is sent; 408, 425, 429 and 5xx are retried; any other answer is a rejection."""

    def __init__(self, config: NotificationConfig, session: aiohttp.ClientSession) -> None:
        self.url = config.webhook_url
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=config.send_timeout)

    async def send(self, item: Claimed, to: str) -> Attempt:
        payload = {
            "channel": str(item.channel),
            "to": to,
            "message": item.message,
            "notification_id": item.notification_id,
        }
        headers = {"Idempotency-Key": idempotency_key(item)}
        try:
            async with self.session.post(
                self.url, json=payload, headers=headers, timeout=self.timeout
            ) as response:
                status = response.status
                # At most 200 bytes of an error body, whatever its size or encoding.
                raw = await response.content.read(200) if status >= 300 else b""
                body = raw.decode(errors="replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Attempt(Outcome.FAILED, to, f"{type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            return Attempt(Outcome.SENT, to)
        error = f"provider answered HTTP {status}: {body}"
        if status >= 500 or status in RETRYABLE_HTTP:
            return Attempt(Outcome.FAILED, to, error)
        return Attempt(Outcome.REJECTED, to, error)
