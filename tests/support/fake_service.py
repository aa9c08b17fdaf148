"""A fake gRPC service behind the real tiket interceptor, in this process: for testing what
the interceptor does around calls without a whole tiket service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import grpc
from grpc import aio
from tiket.user.v1 import user_pb2

from libs.server.interceptor import ServiceInterceptor

SERVICE = "test.v1.Fake"
# Any request and reply types do; these have a user_id for owner checks.
Request, Response = user_pb2.GetWalletRequest, user_pb2.Wallet


@asynccontextmanager
async def serving(
    interceptor: ServiceInterceptor,
    unary: Mapping[str, Callable],
    streams: Mapping[str, Callable] | None = None,
    service: str = SERVICE,
) -> AsyncIterator[aio.Channel]:
    """A channel to `service` whose methods `unary` / `streams` (name -> behaviour taking a
    Request) run behind `interceptor`."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=Request.FromString,
            response_serializer=Response.SerializeToString,
        )
        for name, behaviour in unary.items()
    }
    handlers |= {
        name: grpc.unary_stream_rpc_method_handler(
            behaviour,
            request_deserializer=Request.FromString,
            response_serializer=Response.SerializeToString,
        )
        for name, behaviour in (streams or {}).items()
    }
    server = aio.server(interceptors=[interceptor])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)
