"""The one server interceptor every service runs. Around each call it:

- starts the request context (request id, W3C traceparent) for logs and events;
- authenticates the bearer token and applies the RPC's declared access policy;
- turns domain errors into status codes with details, and unexpected exceptions into an
  INTERNAL that names the request id but never leaks the traceback;
- counts and times the call (Prometheus) and writes one JSON access-log line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from grpc import aio

from libs import tracing
from libs.auth import principal_from_metadata, set_principal
from libs.errors import TiketError
from libs.server import metrics
from libs.server.access import Policy
from libs.server.status import internal_status, rich_status

log = logging.getLogger("tiket.rpc")
DETAILS_KEY = "grpc-status-details-bin"


class ServiceInterceptor(aio.ServerInterceptor):
    def __init__(self, policies: dict[str, Policy], jwt_secret: str) -> None:
        self.policies = policies
        self.jwt_secret = jwt_secret

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        call = _Call(details.method, self.policies.get(details.method), self.jwt_secret)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                call.wrap_unary(handler.unary_unary, "unary"),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                call.wrap_stream(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # client/bidi streaming: none in tiket yet; served unwrapped


class _Call:
    """One call of a method: wraps its behaviour and remembers how it ended."""

    def __init__(self, method: str, policy: Policy | None, jwt_secret: str) -> None:
        self.method = method
        self.policy = policy
        self.jwt_secret = jwt_secret
        _, service, name = method.split("/")
        self.labels = (service, name)
        self.code = grpc.StatusCode.OK
        self.metadata: dict[str, str] = {}
        # Health probes arrive every few seconds; they would drown the access log.
        self.quiet = service == "grpc.health.v1.Health"

    def wrap_unary(self, behaviour: Callable[..., Awaitable[Any]], kind: str):
        async def wrapped(request: Any, context: aio.ServicerContext) -> Any:
            started = self._begin(context, kind)
            try:
                self._authorize(request)
                return await behaviour(request, context)
            except aio.AbortError:
                self.code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:
                self.code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                await self._abort(exc, context)
            finally:
                self._end(kind, started)

        return wrapped

    def wrap_stream(self, behaviour: Callable[..., AsyncIterator[Any]]):
        async def wrapped(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            started = self._begin(context, "server_stream")
            try:
                self._authorize(request)
                async for item in behaviour(request, context):
                    yield item
            except aio.AbortError:
                self.code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:
                self.code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                await self._abort(exc, context)
            finally:
                self._end("server_stream", started)

        return wrapped

    def _begin(self, context: aio.ServicerContext, kind: str) -> float:
        self.metadata = dict(context.invocation_metadata() or ())
        request_id = tracing.begin(
            self.metadata.get("x-request-id"), self.metadata.get("traceparent")
        )
        context.set_trailing_metadata((("x-request-id", request_id),))
        set_principal(None)
        metrics.STARTED.labels(*self.labels, kind).inc()
        return time.perf_counter()

    def _authorize(self, request: Any) -> None:
        if self.policy is None or self.policy.public:
            return  # health, reflection and RPCs declared public
        principal = principal_from_metadata(self.jwt_secret, self.metadata.get("authorization"))
        self.policy.check(principal, request)
        set_principal(principal)

    async def _abort(self, exc: Exception, context: aio.ServicerContext) -> NoReturn:
        """End the call with the status `exc` stands for."""
        if isinstance(exc, TiketError):
            self.code, message, details = rich_status(exc)
        else:
            log.error("unhandled error in %s", self.method, exc_info=exc)
            self.code, message, details = internal_status(tracing.current_request_id())
        trailers = (("x-request-id", tracing.current_request_id()), (DETAILS_KEY, details))
        await context.abort(self.code, message, trailing_metadata=trailers)

    def _end(self, kind: str, started: float) -> None:
        elapsed = time.perf_counter() - started
        metrics.HANDLED.labels(*self.labels, kind, self.code.name).inc()
        metrics.LATENCY.labels(*self.labels, kind).observe(elapsed)
        log.log(
            logging.DEBUG if self.quiet else logging.INFO,
            "rpc",
            extra={
                "method": self.method,
                "code": self.code.name,
                "duration_ms": round(elapsed * 1000, 2),
            },
        )
