"""The services tiket has, by name, loaded on demand so one service never imports another."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from libs.server.runtime import ServiceDefinition

# name -> module holding DEFINITION (and, optionally, a demo.py beside it)
SERVICES: dict[str, str] = {
    "user": "services.user.service",
    "fare": "services.fare.service",
    "journey": "services.journey.service",
    "notification": "services.notification.service",
    "analytics": "services.analytics.service",
}


def definition(name: str) -> ServiceDefinition:
    if name not in SERVICES:
        raise KeyError(f"unknown service {name!r}; known: {', '.join(SERVICES)}")
    return importlib.import_module(SERVICES[name]).DEFINITION


def grpc_service_names(name: str) -> list[str]:
    return [s.full_name for s in definition(name).services]


def consumer_queues(name: str, exchange: str) -> list[str]:
    """The consumer queues service `name` declares on `exchange` (its consumers module's
    queue_names), for tests and benchmarks to delete."""
    try:
        consumers = importlib.import_module(f"{SERVICES[name].rsplit('.', 1)[0]}.consumers")
    except ModuleNotFoundError:
        return []
    return consumers.queue_names(exchange)
