"""ExportUsers under load: gates reading the offline list slowly never starve the wallet's
connection pool, and the paged export still delivers every user, with next_since missing
no change made while it ran."""

from __future__ import annotations

import asyncio
from collections import Counter

from prometheus_client import REGISTRY
from tiket.user.v1 import user_pb2, user_pb2_grpc

from libs.auth import Role
from libs.money import from_money
from services.user.tests.helpers import idr, new_user
from tests.support.slow_readers import paused_readers, read_all
from tests.support.waiting import wait_until

# More than fits in a gate's HTTP/2 receive window (kept small, as on a slow link: no BDP
# probing), so a reader that stops reading stalls the export mid-way; more readers than the
# pool (10) has connections.
EXPORTED = 4000
READERS = 12
RIDERS = 4
TAPS_PER_RIDER = 5
GATE = (Role.GATE, "A/A-ENTRY-01")
JOURNEY = (Role.SERVICE, "journey")


async def bulk_users(db, count: int) -> set[str]:
    cur = await db.execute(
        """INSERT INTO users (card_id, full_name)
           SELECT 'X' || lpad(g::text, 10, '0'), 'Exported' FROM generate_series(1, %s) g
           RETURNING card_id""",
        (count,),
    )
    return {row[0] for row in await cur.fetchall()}


async def tap(users, rider: user_pb2.User, n: int) -> None:
    reference = f"J-{rider.id}-{n}"
    await users.call(
        "PlaceHold",
        user_pb2.PlaceHoldRequest(user_id=rider.id, amount=idr(10_000), reference=reference),
        *JOURNEY,
    )
    await users.call(
        "CaptureHold",
        user_pb2.CaptureHoldRequest(
            hold=user_pb2.HoldSelector(reference=reference), final_amount=idr(3_000)
        ),
        *JOURNEY,
    )


def pool_gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(f"tiket_db_pool_{name}", {"service": "user"})


def cards_of(items: list[user_pb2.ExportUsersResponse]) -> Counter[str]:
    return Counter(i.user.card_id for i in items if i.WhichOneof("item") == "user")


async def test_slow_export_readers_never_starve_taps_and_each_gets_every_user(
    users, user_service, db
):
    riders = [await new_user(users, balance=100_000) for _ in range(RIDERS)]
    exported = await bulk_users(db, EXPORTED)

    def export(channel):
        stub = user_pb2_grpc.UserServiceStub(channel)
        return stub.ExportUsers(user_pb2.ExportUsersRequest(), metadata=users.metadata(*GATE))

    async with paused_readers(f"127.0.0.1:{user_service.port}", export, READERS) as readers:
        # Every reader is mid-export and reads no further: taps must not wait on them.
        await asyncio.gather(*(tap(users, r, n) for r in riders for n in range(TAPS_PER_RIDER)))
        # The service's pool gauges are wired (what the > 80 % alert reads), and once the
        # taps are done nothing waits for a connection although every reader is still
        # mid-export (a gauge refreshed mid-burst may still show taps queueing for a moment
        # on a busy machine: the state after the burst is what counts).
        await wait_until(lambda: pool_gauge("max") == user_service.settings.db_pool_max, "gauges")
        await wait_until(lambda: pool_gauge("waiting") == 0, "no request waiting for the pool")

    for items in readers.results:
        assert isinstance(items, list), f"an export failed: {items!r}"
        seen = cards_of(items)
        assert all(seen[card] == 1 for card in exported), "an unchanged user not exactly once"
        # Riders changed during the export may come twice (the later message is newer);
        # they come at least once, as their first state is on the first page.
        assert all(seen[r.card_id] >= 1 for r in riders)
        assert set(seen) == exported | {r.card_id for r in riders}
        assert items[-1].WhichOneof("item") == "next_since"

    # Nothing changed while the export ran is missed: the next export from its watermark
    # ends with every rider's final state.
    request = user_pb2.ExportUsersRequest(since=readers.results[0][-1].next_since)
    delta = await read_all(users.stub.ExportUsers(request, metadata=users.metadata(*GATE)))
    latest = {i.user.card_id: i.user for i in delta if i.WhichOneof("item") == "user"}
    for rider in riders:
        wallet = await users.call("GetWallet", user_pb2.GetWalletRequest(user_id=rider.id))
        assert from_money(latest[rider.card_id].available) == from_money(wallet.available)
