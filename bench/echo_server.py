"""A bare grpc.aio server that answers FareService/GetFare with one fixed Fare: no
interceptor, no token, no cache, no database. It is the floor bench.fares measures cached
GetFare against (issue 18: the fare service should keep ≥ 50 % of it). Like the services it
runs on uvloop, and it serves grpc.health so the benchmark can wait for it.

    python -m bench.echo_server PORT
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import UTC, datetime

import uvloop
from google.type import money_pb2
from grpc import aio
from grpc_health.v1 import health, health_pb2_grpc
from tiket.fare.v1 import fare_pb2, fare_pb2_grpc

from libs.timestamps import to_timestamp


class EchoFares(fare_pb2_grpc.FareServiceServicer):
    """GetFare answered with the same Fare every time, as large as a real answer."""

    def __init__(self) -> None:
        now = to_timestamp(datetime.now(UTC))
        self.answer = fare_pb2.Fare(
            id=1,
            origin_code="A",
            destination_code="E",
            price=money_pb2.Money(currency_code="IDR", units=14_000),
            effective_from=now,
            source="demo",
            created_at=now,
            active=True,
        )

    async def GetFare(self, request, context):
        return self.answer


async def serve(port: int) -> None:
    server = aio.server()
    fare_pb2_grpc.add_FareServiceServicer_to_server(EchoFares(), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    await stopped.wait()
    await server.stop(1)


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
