"""Anti-passback: the rules that tell a repeated tap from a new passage. Pure, like domain.py.

A card tapped again at the terminal where it just checked in (any entry gate there), or where
it just checked out, less than the window before or after that tap — by tapped_at, the card's
timeline, not by arrival — is the same passage again: a rider tapping twice, or a gate that
got UNAVAILABLE and retries with a new tap_id although the first attempt succeeded. It is
refused (FAILED_PRECONDITION, ALREADY_CHECKED_IN / ALREADY_CHECKED_OUT) with the journey it
repeats, and charges nothing; outside the window the tap is a new passage as before."""

from __future__ import annotations

from datetime import datetime, timedelta

from libs.errors import FailedPrecondition
from services.journey.domain import Journey, JourneyStatus, Tap

ALREADY_CHECKED_IN = "ALREADY_CHECKED_IN"
ALREADY_CHECKED_OUT = "ALREADY_CHECKED_OUT"
# Journeys a check-out tap ended (with an entry, or the incomplete one it made).
EXITED = (JourneyStatus.COMPLETED, JourneyStatus.INCOMPLETE)


def repeats_entry(active: Journey, tap: Tap, window: timedelta) -> bool:
    """Whether the entry `tap` repeats the check-in of the rider's active journey."""
    return active.checkin_terminal_code == tap.terminal_code and _near(
        tap.tapped_at, active.checkin_time, window
    )


def repeats_exit(journey: Journey | None, tap: Tap, window: timedelta) -> bool:
    """Whether the exit `tap` repeats the check-out that ended `journey` (the rider's exit
    at that terminal nearest to it in time)."""
    return (
        journey is not None
        and journey.status in EXITED
        and journey.checkout_terminal_code == tap.terminal_code
        and _near(tap.tapped_at, journey.checkout_time, window)
    )


def already_checked_in(journey: Journey) -> FailedPrecondition:
    """The refusal of a repeated entry; the caller adds the journey as its detail."""
    assert journey.checkin_time is not None
    return FailedPrecondition(
        ALREADY_CHECKED_IN,
        f"card {journey.card_id} checked in at {journey.checkin_terminal_name} at "
        f"{journey.checkin_time.isoformat()}: this tap repeats it and charges nothing",
    )


def already_checked_out(journey: Journey) -> FailedPrecondition:
    """The refusal of a repeated exit; the caller adds the journey as its detail."""
    assert journey.checkout_time is not None
    return FailedPrecondition(
        ALREADY_CHECKED_OUT,
        f"card {journey.card_id} checked out at {journey.checkout_terminal_name} at "
        f"{journey.checkout_time.isoformat()}: this tap repeats it and charges nothing",
    )


def _near(at: datetime, other: datetime | None, window: timedelta) -> bool:
    return other is not None and abs(at - other) < window
