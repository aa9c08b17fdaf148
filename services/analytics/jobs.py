"""Periodic jobs of the analytics service."""

from __future__ import annotations

from libs.periodic import Periodic
from services.analytics.app import AnalyticsApp

# Hourly is plenty for partitions made months ahead; the job also runs at start-up.
PARTITION_INTERVAL_SECONDS = 3600.0


def partition_maker(app: AnalyticsApp) -> Periodic:
    """Keeps this month's partition of analytics_events and the next ones created before
    their events arrive (an event of any other month creates its own)."""
    return Periodic("analytics-partitions", app.create_partitions_ahead, PARTITION_INTERVAL_SECONDS)
