"""Periodic sweepers of the user & wallet service."""

from __future__ import annotations

from libs.periodic import Periodic
from services.user.app import UserApp


def hold_sweeper(app: UserApp, interval: float) -> Periodic:
    """Releases expired holds (seed 004 fail-safe: 'check for expired holds, auto-release')
    and emits wallet.hold_released for each."""
    return Periodic("hold-sweeper", app.release_expired_holds, interval)
