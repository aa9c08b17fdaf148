"""How far this gate's clock is from the mesh's, measured at each heartbeat: the fare
service stamps the heartbeat with its own clock (Gate.last_heartbeat_at). A gate's taps are
timed by its clock, offline ones above all; one that drifts is told to staff before the
journey service starts refusing its taps' times."""

from __future__ import annotations

from datetime import datetime

# Further off than this, staff are warned (NTP keeps a clock within a second; the journey
# service refuses a tap time more than TIKET_JOURNEY_MAX_CLOCK_SKEW_SECONDS ahead, 300).
TOLERANCE_SECONDS = 30.0


def skew_seconds(sent: datetime, received: datetime, stamped: datetime) -> float:
    """This clock minus the server's (positive: ahead), taking the server to have stamped
    the heartbeat halfway through the round trip."""
    return ((sent + (received - sent) / 2) - stamped).total_seconds()


def describe(skew: float) -> str:
    way = "ahead of" if skew >= 0 else "behind"
    text = f"{abs(skew):.1f} s {way} the fare service's"
    if abs(skew) > TOLERANCE_SECONDS:
        text += f" (more than {TOLERANCE_SECONDS:.0f} s: set it right, NTP)"
    return text
