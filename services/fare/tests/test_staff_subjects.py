"""Who changed a fare is stored as "role:subject" in created_by VARCHAR(100): a token whose
subject could not be stored is refused at the door, never an INTERNAL after the work."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from tiket.fare.v1 import fare_pb2

from libs.auth import Role
from libs.auth.dev_keys import dev_token
from libs.auth.principal import MAX_STAFF_SUBJECT
from libs.config import SERVICE_PORTS
from services.fare.tests.helpers import idr, row_counts, seed


def set_fare_request(price: int) -> fare_pb2.SetFareRequest:
    return fare_pb2.SetFareRequest(origin_code="A", destination_code="B", price=idr(price))


async def test_the_longest_subject_a_token_may_have_is_recorded(fares, db):
    await seed(fares)
    subject = "o" * MAX_STAFF_SUBJECT
    await fares.call("SetFare", set_fare_request(5100), role=Role.OPERATOR, sub=subject)
    cur = await db.execute("SELECT created_by FROM fares WHERE created_by LIKE 'operator:%'")
    assert await cur.fetchall() == [(f"operator:{subject}",)]


@pytest.mark.parametrize("length", [MAX_STAFF_SUBJECT + 1, 101, 500])
async def test_a_longer_subject_is_unauthenticated_and_writes_nothing(fares, db, length):
    await seed(fares)
    before = await row_counts(db)
    token = dev_token(
        Path(fares.settings.dev_issuer_key), Role.OPERATOR, "o" * length, SERVICE_PORTS, 600
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fares.stub.SetFare(
            set_fare_request(5100), metadata=[("authorization", f"Bearer {token}")]
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "1-64 printable characters" in caught.value.details()
    assert await row_counts(db) == before
