"""Prometheus metrics of gRPC calls, named as go-grpc-prometheus names them so the usual
dashboards work, of the rate limits, of the circuit breakers of outgoing calls, of the
database pools, of business refusals and of the events (outbox backlog, consumer queues).

Gauges say how to merge the values of several worker processes (`tiket serve --workers`,
multiprocess mode); in a single process that setting is ignored."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from psycopg_pool import AsyncConnectionPool

from libs.periodic import Periodic

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


# Circuit breakers of service-to-service calls (libs/clients.py).
CIRCUIT_STATE = Gauge(
    "tiket_circuit_state",
    "Circuit breaker of calls from `caller` to `callee`: 0 closed, 1 half-open (one probe "
    "call let through), 2 open (calls fail fast with UNAVAILABLE).",
    ("caller", "callee"),
    multiprocess_mode="livemax",
)
CIRCUIT_REFUSED = Counter(
    "tiket_circuit_refused_total",
    "Calls failed fast with UNAVAILABLE, never sent, because the callee's circuit was open "
    "(or half-open with its probe call out).",
    ("caller", "callee"),
)

# Database connection pools (psycopg_pool get_stats(), refreshed every second). Alert on
# tiket_db_pool_in_use / tiket_db_pool_max > 0.8 (seed 001 §5.3.3).
DB_POOL_IN_USE = Gauge(
    "tiket_db_pool_in_use",
    "Pooled database connections lent to a request now.",
    ("service",),
    multiprocess_mode="livesum",
)
DB_POOL_SIZE = Gauge(
    "tiket_db_pool_size",
    "Database connections the pool holds now (lent, idle or being opened).",
    ("service",),
    multiprocess_mode="livesum",
)
DB_POOL_MAX = Gauge(
    "tiket_db_pool_max",
    "The most connections the pool may hold (TIKET_DB_POOL_MAX).",
    ("service",),
    multiprocess_mode="livesum",
)
DB_POOL_WAITING = Gauge(
    "tiket_db_pool_waiting",
    "Requests waiting for a pooled database connection now.",
    ("service",),
    multiprocess_mode="livesum",
)


# Business refusals (FAILED_PRECONDITION, google.rpc.ErrorInfo.reason), counted by the
# interceptor for every service: insufficient balance, card blocked, slot full …
REFUSALS = Counter(
    "tiket_refusals_total",
    "Calls refused for a business rule (FAILED_PRECONDITION), by the refusal's reason.",
    ("grpc_service", "grpc_method", "reason"),
)

# Events (libs/events/gauges.py refreshes the gauges every few seconds, not per event).
OUTBOX_UNSENT = Gauge(
    "tiket_outbox_unsent",
    "Outbox events written but not yet published (the relay's backlog).",
    ("service",),
    multiprocess_mode="livemax",
)
OUTBOX_OLDEST_UNSENT = Gauge(
    "tiket_outbox_oldest_unsent_seconds",
    "Age of the oldest outbox event not yet published; 0 when none waits.",
    ("service",),
    multiprocess_mode="livemax",
)
OUTBOX_EVENTS = Counter(
    "tiket_outbox_events_total",
    "Outbox events published and confirmed, by type (booking.confirmed, booking.paid … are "
    "the bookings by status; journey.checked_in, journey.checked_out the rides).",
    ("event_type",),
)
CONSUMER_LAG = Gauge(
    "tiket_consumer_lag_messages",
    "Messages waiting in a consumer's queue (routed, not yet delivered), plus those waiting "
    "in its retry queue.",
    ("queue",),
    multiprocess_mode="livemax",
)
DLQ_MESSAGES = Gauge(
    "tiket_dlq_messages",
    "Messages in a consumer's dead-letter queue, waiting for an operator (`tiket dlq`).",
    ("queue",),
    multiprocess_mode="livemax",
)

GAUGES_REFRESHED = Gauge(
    "tiket_gauges_refreshed_timestamp_seconds",
    "When a gauge job last refreshed its gauges (unix time). A job that cannot reach what it "
    "counts (RabbitMQ, the database) keeps its gauges' last values: this one stops moving, "
    "and the GaugesStale alert says their values are old.",
    ("service", "job"),
    multiprocess_mode="livemax",
)


def pool_gauges(service: str, pool: AsyncConnectionPool, interval: float = 1.0) -> Periodic:
    """A background job refreshing the pool gauges of `service` every `interval` seconds.
    Refreshed rather than read at scrape time: with several worker processes the metrics
    endpoint is the parent's, which has no pool, and reads only what the workers wrote."""

    async def observe() -> int:
        stats = pool.get_stats()
        DB_POOL_IN_USE.labels(service).set(stats["pool_size"] - stats["pool_available"])
        DB_POOL_SIZE.labels(service).set(stats["pool_size"])
        DB_POOL_MAX.labels(service).set(stats["pool_max"])
        DB_POOL_WAITING.labels(service).set(stats.get("requests_waiting", 0))
        return 0

    return Periodic(f"{service}-pool-gauges", observe, interval)


def start(port: int, host: str = "0.0.0.0"):
    """Serve /metrics on `port` (0 = any free port) from a background thread; return the
    HTTP server (its `server_port` is the bound port) and its thread."""
    return start_http_server(port, addr=host)
