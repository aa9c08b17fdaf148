"""Channels for service-to-service calls: one long-lived channel per target, a deadline on
every call, a token signed with the calling service's own key for the callee's audience in
the metadata, and gRPC's own retry policy for UNAVAILABLE."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import grpc
from grpc import aio

from libs import tls, tracing
from libs.auth import Role
from libs.auth.service_identity import ServiceIdentity
from libs.auth.tokens import SERVICE_TOKEN_TTL_SECONDS, TokenSigner, audience


def service_config(service: str, retry_methods: Sequence[str] | None) -> str:
    """gRPC service config retrying UNAVAILABLE for `retry_methods` of `service` (None =
    every method; each tiket mutating RPC is idempotent by key, so a retry never applies
    twice). Deadlines are not set here: grpcio applies a service-config timeout too early
    (grpc/grpc#40633), so the interceptor below puts one on each call instead."""
    names = (
        [{"service": service}]
        if retry_methods is None
        else [{"service": service, "method": m} for m in retry_methods]
    )
    retry = {
        "name": names,
        "retryPolicy": {
            "maxAttempts": 4,
            "initialBackoff": "0.05s",
            "maxBackoff": "0.5s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }
    return json.dumps({"methodConfig": [retry]})


class _CallDefaults(aio.UnaryUnaryClientInterceptor, aio.UnaryStreamClientInterceptor):
    """Adds the default deadline, the service token and the current traceparent/request id
    to every call."""

    def __init__(
        self, signer: TokenSigner, caller: str, callee: str, timeout_seconds: float
    ) -> None:
        self.signer = signer
        self.caller = caller
        self.audience = audience(callee)
        self.timeout_seconds = timeout_seconds
        self._token = ""
        self._token_expires = 0.0

    def _details(self, details: aio.ClientCallDetails) -> aio.ClientCallDetails:
        now = time.time()
        if now > self._token_expires - 60:
            self._token = self.signer.mint(
                Role.SERVICE, self.caller, self.audience, SERVICE_TOKEN_TTL_SECONDS
            )
            self._token_expires = now + SERVICE_TOKEN_TTL_SECONDS
        metadata = list(details.metadata or ())
        metadata.append(("authorization", f"Bearer {self._token}"))
        if traceparent := tracing.current_traceparent():
            metadata.append(("traceparent", traceparent))
        if request_id := tracing.current_request_id():
            metadata.append(("x-request-id", request_id))
        timeout = self.timeout_seconds if details.timeout is None else details.timeout
        return aio.ClientCallDetails(
            details.method, timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(self._details(details), request)

    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(self._details(details), request)


def service_channel(
    target: str,
    service: str,
    *,
    callee: str,
    identity: ServiceIdentity,
    timeout_seconds: float = 2.0,
    retry_methods: Sequence[str] | None = None,
) -> aio.Channel:
    """A channel to `service` of the tiket service named `callee` at `target`, calling as
    the service `identity` is. Create it once and share it: channels multiplex calls and
    reconnect on their own. TLS when TIKET_TLS_CA is set (libs/tls.py): the callee must
    prove itself with a certificate of that CA, and this service's own certificate is its
    client certificate for callees requiring mutual TLS; `target`'s host name must be one
    the callee's certificate names."""
    options = [
        ("grpc.service_config", service_config(service, retry_methods)),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]
    return tls.open_channel(
        target,
        tls.channel_credentials(identity.settings),
        options=options,
        interceptors=[_CallDefaults(identity.signer(), identity.name, callee, timeout_seconds)],
    )


def is_unavailable(error: grpc.RpcError) -> bool:
    return error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
