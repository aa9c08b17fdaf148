"""Settings of the notification service only (TIKET_NOTIFICATION_*), read beside the shared
Settings. A channel is used only when its provider is configured: without an SMTP host no
email is sent, without a webhook URL no push or SMS; the notifications are stored (and listed)
all the same. An invalid value stops the process with a message naming the variable."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from libs.config import ConfigError
from services.notification.domain import Channel

T = TypeVar("T")
PREFIX = "TIKET_NOTIFICATION_"


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
    dependency_timeout: float = 2.0
    # Deliveries of an event the consumer attempts before the event goes to the DLQ.
    event_max_attempts: int = 5

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
        smtp_host=_read(env, "SMTP_HOST", d.smtp_host, str.strip),
        smtp_port=_read(env, "SMTP_PORT", d.smtp_port, _port),
        smtp_from=_read(env, "SMTP_FROM", d.smtp_from, _sender),
        smtp_username=_read(env, "SMTP_USERNAME", d.smtp_username, str),
        smtp_password=_read(env, "SMTP_PASSWORD", d.smtp_password, str),
        smtp_security=_read(env, "SMTP_SECURITY", d.smtp_security, _security),
        webhook_url=_read(env, "WEBHOOK_URL", d.webhook_url, _url),
        send_timeout=_read(env, "SEND_TIMEOUT_SECONDS", d.send_timeout, _positive_float),
        max_attempts=_read(env, "MAX_ATTEMPTS", d.max_attempts, _attempts),
        retry_base=_read(env, "RETRY_BASE_SECONDS", d.retry_base, _positive_float),
        retry_max=_read(env, "RETRY_MAX_SECONDS", d.retry_max, _positive_float),
        poll_interval=_read(env, "POLL_INTERVAL_SECONDS", d.poll_interval, _positive_float),
        batch_size=_read(env, "BATCH_SIZE", d.batch_size, _attempts),
        contact_ttl=_read(env, "CONTACT_TTL_SECONDS", d.contact_ttl, _positive_int),
        dependency_timeout=_read(
            env, "DEPENDENCY_TIMEOUT_SECONDS", d.dependency_timeout, _positive_float
        ),
        event_max_attempts=_read(env, "EVENT_MAX_ATTEMPTS", d.event_max_attempts, _attempts),
    )


def _read(env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T]) -> T:
    raw = env.get(PREFIX + name, "")
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{PREFIX}{name}={raw!r} is invalid: {exc}") from None


def _port(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 65535:
        raise ValueError("expected a port number, 1-65535")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("expected a number > 0")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("expected an integer > 0")
    return value


def _attempts(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 100:
        raise ValueError("expected an integer, 1-100")
    return value


def _security(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"none", "starttls", "tls"}:
        raise ValueError("expected none, starttls or tls")
    return value


def _sender(raw: str) -> str:
    if "@" not in raw:
        raise ValueError("expected an address such as 'tiket <no-reply@example.com>'")
    return raw.strip()


def _url(raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL")
    return raw.strip()
