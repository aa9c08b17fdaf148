"""Prometheus metrics of gRPC calls, named as go-grpc-prometheus names them so the usual
dashboards work, and of the rate limits."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

LABELS = ("grpc_service", "grpc_method", "grpc_type")

STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", LABELS)
HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    (*LABELS, "grpc_code"),
)
LATENCY = Histogram(
    "grpc_server_handling_seconds",
    "Time to handle an RPC, until the last response message.",
    LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# Rate limits (libs/server/ratelimit.py).
RATE_LIMITED = Counter(
    "tiket_rate_limited_total",
    "Calls refused with RESOURCE_EXHAUSTED by a rate limit, by the limit (user | address).",
    ("service", "method", "scope"),
)
RATE_LIMIT_UNENFORCED = Counter(
    "tiket_rate_limit_unenforced_total",
    "Calls let through without a rate-limit check because Redis failed (or, after a failure, "
    "during the few seconds the limiter leaves it alone).",
    ("service", "method"),
)


def start(port: int, host: str = "0.0.0.0"):
    """Serve /metrics on `port` (0 = any free port) from a background thread; return the
    HTTP server (its `server_port` is the bound port) and its thread."""
    return start_http_server(port, addr=host)
