"""A service's PostgreSQL database: created when missing, reached through a psycopg pool."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from enum import Enum

import orjson
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.enum import EnumInfo, register_enum
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)


def _json_dumps(value: object) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


# json/jsonb parameters and columns (every event body, journey metadata) through orjson:
# 0.2 us instead of 3.7 us to encode an event, no str -> bytes copy.
set_json_dumps(_json_dumps)
set_json_loads(orjson.loads)


def server_url(database_url: str, dbname: str = "postgres") -> str:
    """The same server as `database_url`, but the maintenance database."""
    params = conninfo_to_dict(database_url)
    params["dbname"] = dbname
    return make_conninfo(**params)


def database_of(database_url: str) -> str:
    return str(conninfo_to_dict(database_url)["dbname"])


def ensure_database(database_url: str) -> bool:
    """CREATE DATABASE when missing; True when it was created. Safe to race."""
    name = database_of(database_url)
    with psycopg.connect(server_url(database_url), autocommit=True, connect_timeout=5) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            return False
    log.info("created database %s", name)
    return True


def drop_database(database_url: str) -> None:
    """DROP DATABASE, ending other sessions first (tests clean up with it)."""
    name = database_of(database_url)
    with psycopg.connect(server_url(database_url), autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


async def open_pool(
    database_url: str,
    *,
    min_size: int,
    max_size: int,
    configure: Callable[[psycopg.AsyncConnection], Awaitable[None]] | None = None,
) -> AsyncConnectionPool:
    """An opened pool; fails fast with the server's message when the database is unreachable.
    `configure` runs once on each new connection (type adapters, for instance).

    Services size it with TIKET_DB_POOL_MIN / TIKET_DB_POOL_MAX, whose defaults (2 and 10)
    suit a developer machine. In production seed 001 §5.2.1 asks for 20-50 connections per
    instance: choose MAX so that replicas × workers × MAX of every service sharing a server
    stays below its max_connections (less superuser_reserved_connections), and watch
    tiket_db_pool_in_use / tiket_db_pool_max (libs/server/metrics.py; alert above 0.8).

    Connections are in autocommit mode: a lone statement is its own transaction (no BEGIN
    and ROLLBACK round trips around a read), and a unit of work that needs more than one
    statement says so with `conn.transaction()` (libs/db/transaction.py)."""
    pool = AsyncConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        timeout=10,
        configure=configure,
        kwargs={"autocommit": True},
        name=database_of(database_url),
    )
    await pool.open(wait=True, timeout=15)
    return pool


def enum_types(
    enums: Mapping[str, type[Enum]],
) -> Callable[[psycopg.AsyncConnection], Awaitable[None]]:
    """A pool `configure` callback mapping database enum types (by name) onto Python enums
    whose values are the labels, once per new connection."""

    async def register(conn: psycopg.AsyncConnection) -> None:
        for name, python_type in enums.items():
            info = await EnumInfo.fetch(conn, name)
            register_enum(info, conn, python_type, mapping={m: m.value for m in python_type})
        await conn.commit()

    return register
