"""Settings of the notification service only (TIKET_NOTIFICATION_*), read beside the shared
Settings. A channel is used only when its provider is configured: without an SMTP host no
email is sent, without a webhook URL no push or SMS; the notifications are stored (and listed)
all the same. An invalid value stops the process with a message naming the variable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from libs.config import choice, int_between, positive_float, positive_int, read_setting
from services.notification.domain import Channel

PREFIX = "TIKET_NOTIFICATION_"
ATTEMPTS = int_between(1, 100)


@dataclass(frozen=True)
class NotificationConfig:
    # SMTP relay for email; "" = no email channel.
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_from: str = "tiket <no-reply@tiket.local>"
    smtp_username: str = ""
    smtp_password: str = ""
    # "none", "starttls" or "tls" (implicit TLS, usually port 465).
    smtp_security: str = "none"
    # Push and SMS provider: POST JSON {channel, to, message, notification_id}; "" = neither.
    webhook_url: str = ""
    # Seconds one SMTP session or webhook call may take.
    send_timeout: float = 10.0
    # Attempts per channel before it is FAILED; the delays between them double from
    # retry_base up to retry_max.
    max_attempts: int = 5
    retry_base: float = 30.0
    retry_max: float = 3600.0
    # How often the delivery worker looks for due deliveries besides being woken.
    poll_interval: float = 5.0
    # Deliveries claimed and sent concurrently per round.
    batch_size: int = 20
    # Contact details (email, phone) from the user service are cached this long in Redis.
    contact_ttl: int = 3600
    # Per call to the user service.
    # seed 001 §3.1: a user-service call waits at most 1,000 ms (libs/clients.py)
    dependency_timeout: float = 1.0
    # Deliveries of an event the consumer attempts before the event goes to the DLQ.
    event_max_attempts: int = 5
    # Riders per transaction when a fare change fans out to its audience.
    fan_out_chunk: int = 500

    @property
    def channels(self) -> frozenset[Channel]:
        """The channels whose provider is configured."""
        found = {Channel.EMAIL} if self.smtp_host else set()
        if self.webhook_url:
            found |= {Channel.PUSH, Channel.SMS}
        return frozenset(found)


def load(env: Mapping[str, str] | None = None) -> NotificationConfig:
    env = os.environ if env is None else env
    d = NotificationConfig()
    return NotificationConfig(
        smtp_host=read_setting(env, PREFIX + "SMTP_HOST", d.smtp_host, str.strip),
        smtp_port=read_setting(env, PREFIX + "SMTP_PORT", d.smtp_port, int_between(1, 65535)),
        smtp_from=read_setting(env, PREFIX + "SMTP_FROM", d.smtp_from, _sender),
        smtp_username=read_setting(env, PREFIX + "SMTP_USERNAME", d.smtp_username, str),
        smtp_password=read_setting(env, PREFIX + "SMTP_PASSWORD", d.smtp_password, str),
        smtp_security=read_setting(
            env, PREFIX + "SMTP_SECURITY", d.smtp_security, choice("none", "starttls", "tls")
        ),
        webhook_url=read_setting(env, PREFIX + "WEBHOOK_URL", d.webhook_url, _url),
        send_timeout=read_setting(
            env, PREFIX + "SEND_TIMEOUT_SECONDS", d.send_timeout, positive_float
        ),
        max_attempts=read_setting(env, PREFIX + "MAX_ATTEMPTS", d.max_attempts, ATTEMPTS),
        retry_base=read_setting(env, PREFIX + "RETRY_BASE_SECONDS", d.retry_base, positive_float),
        retry_max=read_setting(env, PREFIX + "RETRY_MAX_SECONDS", d.retry_max, positive_float),
        poll_interval=read_setting(
            env, PREFIX + "POLL_INTERVAL_SECONDS", d.poll_interval, positive_float
        ),
        batch_size=read_setting(env, PREFIX + "BATCH_SIZE", d.batch_size, ATTEMPTS),
        contact_ttl=read_setting(env, PREFIX + "CONTACT_TTL_SECONDS", d.contact_ttl, positive_int),
        dependency_timeout=read_setting(
            env, PREFIX + "DEPENDENCY_TIMEOUT_SECONDS", d.dependency_timeout, positive_float
        ),
        event_max_attempts=read_setting(
            env, PREFIX + "EVENT_MAX_ATTEMPTS", d.event_max_attempts, ATTEMPTS
        ),
        fan_out_chunk=read_setting(
            env, PREFIX + "FAN_OUT_CHUNK", d.fan_out_chunk, int_between(1, 10_000)
        ),
    )


def _sender(raw: str) -> str:
    if "@" not in raw:
        raise ValueError("expected an address such as 'tiket <no-reply@example.com>'")
    return raw.strip()


def _url(raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL")
    return raw.strip()
