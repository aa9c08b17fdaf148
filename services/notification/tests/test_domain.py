"""Rules without I/O: what an attempt makes of a delivery, the backoff, which channels a rider
gets, preference checks, and the TIKET_NOTIFICATION_* settings."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from libs.config import ConfigError
from libs.errors import InvalidArgument
from services.notification import config
from services.notification.domain import (
    Attempt,
    Channel,
    DeliveryStatus,
    Outcome,
    Preferences,
    after_attempt,
    check_language,
    check_time_zone,
    retry_delay,
    zone_info,
)


@pytest.mark.parametrize(
    ("outcome", "number", "status"),
    [
        (Outcome.SENT, 1, DeliveryStatus.SENT),
        (Outcome.SKIPPED, 1, DeliveryStatus.SKIPPED),
        (Outcome.FAILED, 1, DeliveryStatus.PENDING),
        (Outcome.FAILED, 2, DeliveryStatus.PENDING),
        (Outcome.FAILED, 3, DeliveryStatus.FAILED),
        (Outcome.REJECTED, 1, DeliveryStatus.FAILED),
    ],
)
def test_what_an_attempt_makes_of_a_delivery(outcome, number, status) -> None:
    assert after_attempt(Attempt(outcome), number, max_attempts=3) is status


def test_retry_delays_double_up_to_the_cap() -> None:
    delays = [retry_delay(n, 30, 3600) for n in (1, 2, 3, 8, 1000)]
    assert delays == [timedelta(seconds=s) for s in (30, 60, 120, 3600, 3600)]


def test_long_errors_are_clipped() -> None:
    assert len(Attempt(Outcome.FAILED, error="x" * 2000).error_text or "") == 500


def test_a_rider_gets_the_configured_channels_they_did_not_mute() -> None:
    rider = Preferences(uuid.uuid4(), muted_channels=frozenset({Channel.SMS}))
    assert rider.channels(frozenset(Channel)) == [Channel.EMAIL, Channel.PUSH]
    assert rider.channels(frozenset({Channel.SMS})) == []
    assert Preferences(uuid.uuid4()).channels(frozenset(Channel)) == list(Channel)


def test_preference_checks() -> None:
    assert check_language(" EN ") == "en"
    assert check_language("") == "id"
    assert check_time_zone("") == "Asia/Jakarta"
    assert check_time_zone("Asia/Makassar") == "Asia/Makassar"
    for zone in ("Nowhere/City", "../../etc/passwd", "Asia/", "é", "x" * 65):
        with pytest.raises(InvalidArgument):
            check_time_zone(zone)
    with pytest.raises(InvalidArgument):
        check_language("fr")


def test_zones_are_built_once_and_a_vanished_one_falls_back_to_the_default() -> None:
    assert zone_info("Asia/Jayapura") is zone_info("Asia/Jayapura")
    assert zone_info("Asia/Jayapura").key == "Asia/Jayapura"
    assert zone_info("Gone/Since/Tzdata2099").key == "Asia/Jakarta"


def test_settings_and_channels() -> None:
    assert config.load({}).channels == frozenset()
    loaded = config.load(
        {
            "TIKET_NOTIFICATION_SMTP_HOST": "mail.example.com",
            "TIKET_NOTIFICATION_SMTP_PORT": "587",
            "TIKET_NOTIFICATION_SMTP_SECURITY": "STARTTLS",
            "TIKET_NOTIFICATION_WEBHOOK_URL": "https://push.example.com/send",
            "TIKET_NOTIFICATION_MAX_ATTEMPTS": "8",
            "TIKET_NOTIFICATION_FAN_OUT_CHUNK": "200",
        }
    )
    assert loaded.channels == frozenset(Channel)
    assert (loaded.smtp_port, loaded.smtp_security, loaded.max_attempts) == (587, "starttls", 8)
    assert loaded.fan_out_chunk == 200


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SMTP_PORT", "0"),
        ("SMTP_PORT", "smtp"),
        ("SMTP_SECURITY", "ssl3"),
        ("SMTP_FROM", "nobody"),
        ("WEBHOOK_URL", "ftp://x"),
        ("WEBHOOK_URL", "push.example.com"),
        ("MAX_ATTEMPTS", "0"),
        ("RETRY_BASE_SECONDS", "-1"),
        ("CONTACT_TTL_SECONDS", "1.5"),
        ("FAN_OUT_CHUNK", "0"),
    ],
)
def test_invalid_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"TIKET_NOTIFICATION_{name}"):
        config.load({f"TIKET_NOTIFICATION_{name}": value})
