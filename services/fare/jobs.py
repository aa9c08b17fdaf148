"""Periodic sweepers of the terminal & fare service."""

from __future__ import annotations

from libs.periodic import Periodic
from services.fare.terminals import TerminalApp


def silent_gate_sweeper(app: TerminalApp, interval: float) -> Periodic:
    """Marks online gates whose heartbeat stopped offline, each with gate.status_changed (a
    gate gone dark is what the operators' dashboards must show first). Lookups already show
    such gates offline between sweeps."""
    return Periodic("silent-gate-sweeper", app.mark_silent_gates_offline, interval)
