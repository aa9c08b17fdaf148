"""The service registry: what a service loads of the others to declare their queues."""

from __future__ import annotations

import subprocess
import sys

from tests.support.processes import ROOT

PROBE = """
from prometheus_client import REGISTRY
import libs.server.runtime  # what every service loads, with the metrics of libs/
from services import registry
before = {family.name for family in REGISTRY.collect()}
registry.topology("tiket.events")
print(sorted({family.name for family in REGISTRY.collect()} - before))
"""


def test_declaring_every_consumer_queue_registers_no_other_service_s_metrics() -> None:
    """Every service's relay declares every consumer's queue (registry.topology); loading
    the consumers modules for that must not register another service's metrics, which
    its /metrics would then export as its own (the user service showed the fare cache's
    lookups, all zero)."""
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr
