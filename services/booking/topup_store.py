"""SQL of wallet top-ups paid through the gateway (psycopg 3, parameters only)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row

COLUMNS = (
    "intent_id AS id, user_id, amount, status, payment_url, provider_payment_id, expires_at, "
    "credited_at, idempotency_key, created_at, updated_at"
)


@dataclass(frozen=True)
class TopUp:
    id: uuid.UUID
    user_id: uuid.UUID
    amount: Decimal
    status: str  # pending, paid, failed, expired, refunded
    payment_url: str | None
    provider_payment_id: str | None
    expires_at: datetime
    credited_at: datetime | None
    idempotency_key: str
    created_at: datetime
    updated_at: datetime


async def insert(
    conn: AsyncConnection, user_id: uuid.UUID, amount: Decimal, key: str, expires_at: datetime
) -> TopUp | None:
    """A pending top-up; None when the rider used `key` already."""
    cur = conn.cursor(row_factory=class_row(TopUp))
    await cur.execute(
        f"""INSERT INTO top_ups (user_id, amount, idempotency_key, expires_at)
            VALUES (%s, %s, %s, %s) ON CONFLICT (user_id, idempotency_key) DO NOTHING
            RETURNING {COLUMNS}""",
        (user_id, amount, key, expires_at),
    )
    return await cur.fetchone()


async def find(conn: AsyncConnection, column: str, *values: object) -> TopUp | None:
    assert column in {"intent_id", "request"}
    where = "intent_id = %s" if column == "intent_id" else "user_id = %s AND idempotency_key = %s"
    cur = conn.cursor(row_factory=class_row(TopUp))
    await cur.execute(f"SELECT {COLUMNS} FROM top_ups WHERE {where}", values)
    return await cur.fetchone()


async def update(conn: AsyncConnection, intent_id: uuid.UUID, **fields: Any) -> TopUp | None:
    """Set `fields` of a pending top-up; None when it is no longer pending."""
    assert set(fields) <= {"status", "payment_url", "provider_payment_id", "credited_at"}
    assignments = ", ".join(f"{name} = %({name})s" for name in fields)
    cur = conn.cursor(row_factory=class_row(TopUp))
    await cur.execute(
        f"""UPDATE top_ups SET {assignments}, updated_at = now()
             WHERE intent_id = %(id)s AND status = 'pending' RETURNING {COLUMNS}""",
        {**fields, "id": intent_id},
    )
    return await cur.fetchone()


async def unsettled(conn: AsyncConnection, older_than: timedelta, limit: int) -> list[TopUp]:
    cur = conn.cursor(row_factory=class_row(TopUp))
    await cur.execute(
        f"""SELECT {COLUMNS} FROM top_ups WHERE status = 'pending' AND updated_at < now() - %s
             ORDER BY updated_at LIMIT %s""",
        (older_than, limit),
    )
    return await cur.fetchall()
