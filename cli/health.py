"""Ask a running service how it is (grpc.health.v1)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs import tls


async def check(
    address: str,
    service: str = "",
    timeout: float = 1.0,
    credentials: grpc.ChannelCredentials | None = None,
) -> str:
    """SERVING, NOT_SERVING, SERVICE_UNKNOWN … or DOWN when nothing answers (a refused TLS
    handshake included). `credentials`: TLS (libs/tls.py channel_credentials), None for
    plaintext."""
    async with tls.open_channel(address, credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return "SERVICE_UNKNOWN"
            return "DOWN"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
