"""The services tiket has, by name, loaded on demand so one service never imports another."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from libs.events.topology import ConsumerQueue
    from libs.server.runtime import ServiceDefinition

# name -> module holding DEFINITION (and, optionally, a demo.py beside it)
SERVICES: dict[str, str] = {
    "user": "services.user.service",
    "fare": "services.fare.service",
    "journey": "services.journey.service",
    "booking": "services.booking.service",
    "notification": "services.notification.service",
    "analytics": "services.analytics.service",
}


def definition(name: str) -> ServiceDefinition:
    if name not in SERVICES:
        raise KeyError(f"unknown service {name!r}; known: {', '.join(SERVICES)}")
    return importlib.import_module(SERVICES[name]).DEFINITION


def grpc_service_names(name: str) -> list[str]:
    return [s.full_name for s in definition(name).services]


def _consumers(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"{SERVICES[name].rsplit('.', 1)[0]}.consumers")
    except ModuleNotFoundError:
        return None


def consumer_declarations(name: str, exchange: str) -> list[ConsumerQueue]:
    """The consumer queues service `name` declares on `exchange`, with their bindings (its
    consumers module's `queues`)."""
    consumers = _consumers(name)
    return [] if consumers is None else consumers.queues(exchange)


def consumer_queues(name: str, exchange: str) -> list[str]:
    """The names of those queues (tests and benchmarks delete them, `tiket dlq` lists them)."""
    return [queue.name for queue in consumer_declarations(name, exchange)]


def topology(exchange: str) -> list[ConsumerQueue]:
    """Every service's consumer queues on `exchange`: what the producers declare ahead of
    the consumers (libs/events/topology.py)."""
    return [queue for name in SERVICES for queue in consumer_declarations(name, exchange)]
