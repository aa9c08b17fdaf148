"""ExportFareSnapshot under load: gates reading the snapshot slowly never hold the fare
service's database connections, and each still gets one whole, consistent snapshot."""

from __future__ import annotations

import asyncio
from itertools import permutations

from tiket.fare.v1 import fare_pb2, fare_pb2_grpc

from libs.auth import Role
from services.fare.tests.helpers import set_fare
from tests.support.slow_readers import paused_readers

TERMINALS = 70  # 4,830 fares: more than a gate's HTTP/2 receive window holds
READERS = 12  # more than the pool (10) has connections
GATE = (Role.GATE, "AA/AA-ENTRY-01")


async def many_fares(db) -> list[str]:
    cur = await db.execute(
        """INSERT INTO terminals (code, name)
           SELECT chr(65 + g / 26) || chr(65 + g %% 26), 'Terminal ' || g
             FROM generate_series(0, %s - 1) g RETURNING code""",
        (TERMINALS,),
    )
    codes = [row[0] for row in await cur.fetchall()]
    await db.execute(
        """INSERT INTO fares (origin_terminal_id, destination_terminal_id, price)
           SELECT o.id, d.id, 5000 FROM terminals o, terminals d WHERE o.id <> d.id"""
    )
    return codes


async def test_slow_snapshot_readers_never_starve_fare_changes(fares, fare_service, db):
    codes = await many_fares(db)
    address = f"127.0.0.1:{fare_service.port}"

    def snapshot(channel):
        export = fare_pb2_grpc.FareServiceStub(channel).ExportFareSnapshot
        return export(fare_pb2.ExportFareSnapshotRequest(), metadata=fares.metadata(*GATE))

    async with paused_readers(address, snapshot, READERS) as readers:
        # Every reader is mid-snapshot and reads no further: changes and lookups go on.
        await asyncio.gather(*(set_fare(fares, "AA", code, 6000) for code in codes[1:6]))
        listed = await fares.call(
            "ListFares", fare_pb2.ListFaresRequest(origin_code="AB", page_size=100)
        )
        assert len(listed.fares) == TERMINALS - 1

    for items in readers.results:
        assert isinstance(items, list), f"a snapshot failed: {items!r}"
        terminals = [i.terminal.code for i in items if i.WhichOneof("item") == "terminal"]
        pairs = {
            (i.fare.origin_code, i.fare.destination_code)
            for i in items
            if i.WhichOneof("item") == "fare"
        }
        end = items[-1].end
        assert terminals == sorted(codes)
        assert pairs == set(permutations(codes, 2))
        assert (end.terminals, end.fares) == (TERMINALS, len(items) - TERMINALS - 1)
