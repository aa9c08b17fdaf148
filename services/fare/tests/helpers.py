"""Small builders and checks shared by the fare service tests (and the e2e test)."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from psycopg import AsyncConnection
from tiket.fare.v1 import fare_pb2, fare_pb2_grpc

from libs.auth import Role
from libs.config import Settings
from libs.money import from_money, to_money
from libs.server.runtime import ServiceRuntime
from services.fare import demo
from tests.support import keys
from tests.support.waiting import wait_until

FIXTURE_FEED = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "gtfs"


class Caller:
    """A FareService stub plus tokens, so tests read as `await fares.call("GetFare", …)`."""

    def __init__(self, channel: aio.Channel, settings: Settings) -> None:
        self.channel = channel
        self.stub = fare_pb2_grpc.FareServiceStub(channel)
        self.settings = settings

    def metadata(self, role: Role | str = Role.ADMIN, sub: str = "tests") -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {keys.token(self.settings, role, sub)}")]

    async def call(self, method: str, request, role: Role | str = Role.ADMIN, sub: str = "tests"):
        return await getattr(self.stub, method)(request, metadata=self.metadata(role, sub))

    async def stream(self, method: str, request, role: Role | str = Role.ADMIN, sub: str = "tests"):
        call = getattr(self.stub, method)(request, metadata=self.metadata(role, sub))
        return [item async for item in call]


def caller_for(runtime: ServiceRuntime) -> Caller:
    return Caller(aio.insecure_channel(f"127.0.0.1:{runtime.port}"), runtime.settings)


def idr(amount: int | str) -> object:
    return to_money(Decimal(amount))


def amount_of(money) -> Decimal:
    return from_money(money)


def ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def in_seconds(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def seed(fares) -> None:
    """Seed 004's terminals, gates and fare matrix, through the API (services/fare/demo.py)."""
    await demo.load(fares.channel, fares.metadata(), lambda _: None)


async def add_terminals(fares, *codes: str) -> None:
    for code in codes:
        await fares.call("CreateTerminal", fare_pb2.CreateTerminalRequest(code=code, name=code))


async def price_of(fares, origin: str, destination: str, at: datetime | None = None) -> Decimal:
    request = fare_pb2.GetFareRequest(origin_code=origin, destination_code=destination)
    if at is not None:
        request.at.CopyFrom(ts(at))
    return amount_of((await fares.call("GetFare", request)).price)


async def set_fare(fares, origin: str, destination: str, price: int, at: datetime | None = None):
    request = fare_pb2.SetFareRequest(
        origin_code=origin, destination_code=destination, price=idr(price)
    )
    if at is not None:
        request.effective_from.CopyFrom(ts(at))
    return await fares.call("SetFare", request)


def feed_zip(**replace: str | None) -> bytes:
    """The fixture feed (tests/fixtures/gtfs/*.txt) as a zip; `replace` swaps a file's text
    (keys with '_' for '.': stops_txt=…), None leaves the file out."""
    files = {p.name: p.read_text() for p in sorted(FIXTURE_FEED.glob("*.txt"))}
    for key, text in replace.items():
        name = key.replace("_txt", ".txt")
        if text is None:
            files.pop(name, None)
        else:
            files[name] = text
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return out.getvalue()


def fixture_text(name: str) -> str:
    return (FIXTURE_FEED / name).read_text()


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The google.rpc.ErrorInfo reason of a FAILED_PRECONDITION."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    status = status_pb2.Status.FromString(raw)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info.reason


async def row_counts(db: AsyncConnection) -> tuple[int, ...]:
    cur = await db.execute(
        "SELECT (SELECT count(*) FROM terminals), (SELECT count(*) FROM gates),"
        " (SELECT count(*) FROM fares), (SELECT count(*) FROM outbox),"
        " (SELECT max(updated_at) FROM fares)"
    )
    return await cur.fetchone()


async def timeline_violations(conn: AsyncConnection) -> list[str]:
    """What breaks the fare timeline rules: overlapping active versions of a pair (the
    exclusion constraint forbids them), and an active version that ends without the next one
    starting then (SetFare closes a version only at the start of its successor)."""
    cur = await conn.execute(
        """SELECT 'overlap: ' || a.id || ' and ' || b.id FROM fares a JOIN fares b
             ON a.origin_terminal_id = b.origin_terminal_id
            AND a.destination_terminal_id = b.destination_terminal_id
            AND a.id < b.id AND a.is_active AND b.is_active AND a.effective && b.effective
           UNION ALL
           SELECT 'gap after ' || f.id FROM fares f
            WHERE f.is_active AND f.effective_until IS NOT NULL AND NOT EXISTS (
                  SELECT 1 FROM fares n WHERE n.is_active
                     AND n.origin_terminal_id = f.origin_terminal_id
                     AND n.destination_terminal_id = f.destination_terminal_id
                     AND n.effective_from = f.effective_until)"""
    )
    return [row[0] for row in await cur.fetchall()]


async def fare_events_consumed(db: AsyncConnection) -> None:
    """Wait until the service's consumer handled every fare.updated in the outbox (each one
    retires the cached fares)."""

    async def handled() -> bool:
        cur = await db.execute(
            "SELECT (SELECT count(*) FROM inbox) ="
            " (SELECT count(*) FROM outbox WHERE event_type = 'fare.updated')"
        )
        return (await cur.fetchone())[0]

    await wait_until(handled, "every fare.updated to be consumed", within=10)
