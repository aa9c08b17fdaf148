"""money_json (migration 0002) renders an amount as the Python side does: the JSON of
libs.money.to_money, so an event a statement completes reads like one built in Python."""

from __future__ import annotations

from decimal import Decimal

from google.protobuf import json_format

from libs.money import MAX_AMOUNT, to_money

AMOUNTS = [
    Decimal(s)
    for s in (
        "0",
        "0.01",
        "0.10",
        "0.5",
        "0.99",
        "1",
        "12000",
        "12000.50",
        "12000.05",
        "20000000.00",
        "2147483647.99",
        "2147483648.01",
        str(MAX_AMOUNT),
    )
]


async def test_money_json_is_the_protobuf_json_of_to_money(db):
    amounts = AMOUNTS + [-a for a in AMOUNTS if a]
    cur = await db.execute(
        "SELECT a, money_json(a) FROM unnest(%s::numeric[]) WITH ORDINALITY AS t(a, n) ORDER BY n",
        (amounts,),
    )
    rendered = await cur.fetchall()
    assert [a for a, _ in rendered] == amounts
    for amount, json in rendered:
        assert json == json_format.MessageToDict(to_money(amount)), amount
