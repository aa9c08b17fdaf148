"""A service's database reached through a TIKET_POSTGRES_URL with parameters (the real
PostgreSQL): a managed server is given as `…?sslmode=require`."""

from __future__ import annotations

import psycopg

from libs.config import load
from libs.db.database import drop_database, ensure_database
from tests.support.databases import POSTGRES_URL, unique_name


def test_a_server_url_with_parameters_reaches_the_service_s_own_database() -> None:
    server = f"{POSTGRES_URL.rstrip('/')}/?sslmode=prefer&application_name=tiket-url-test"
    settings = load({"TIKET_POSTGRES_URL": server, "TIKET_DB_PREFIX": f"{unique_name()}_"})
    url = settings.database_url("user")
    assert ensure_database(url)
    try:
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT current_database(), current_setting('application_name')"
            ).fetchone()
        assert row == (settings.database_name("user"), "tiket-url-test")
    finally:
        drop_database(url)
