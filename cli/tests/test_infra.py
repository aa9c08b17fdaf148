"""cli.infra against real processes: the shared servers and private instances it starts."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import psycopg
import pytest
import redis

from cli.infra import (
    InfraError,
    PostgreSQL,
    PrivateInstance,
    RabbitMQ,
    endpoint,
    ensure_dependencies,
    probe,
    running_private,
    stop_private,
)
from libs.config import Settings

SHARED = Settings()  # the servers running on this machine


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return not probe(f"redis://127.0.0.1:{port}", timeout=0.2)


def free_port() -> int:
    """A free port whose RabbitMQ distribution port (port+20000) is free too."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        if _is_free(port) and _is_free(port + 20000):
            return port
    raise RuntimeError("no free port found")


@pytest.fixture
def started() -> Iterator[list[PrivateInstance]]:
    """Collects what a test started and stops it afterwards, even when the test fails."""
    instances: list[PrivateInstance] = []
    yield instances
    stop_private(instances, out=lambda _msg: None)
    for inst in instances:
        assert not probe(f"redis://127.0.0.1:{inst.port}"), f"{inst.name} still answers"


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A state dir the `postgres` OS user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="tiket-infra-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_endpoint_defaults_ports_by_scheme() -> None:
    assert endpoint("postgresql://postgres@db.example") == ("db.example", 5432)
    assert endpoint("redis://127.0.0.1/0") == ("127.0.0.1", 6379)
    assert endpoint("amqp://guest:guest@localhost/") == ("localhost", 5672)
    assert endpoint("amqp://u:p@[::1]:5673/vh") == ("::1", 5673)
    with pytest.raises(ValueError, match="unsupported"):
        endpoint("http://127.0.0.1")


def test_probe_answers_for_a_running_server_and_not_for_a_free_port() -> None:
    assert probe("redis://127.0.0.1:6379/0")
    assert not probe(f"redis://127.0.0.1:{free_port()}/0")


def test_nothing_is_started_when_every_server_answers(tmp_path: Path) -> None:
    messages: list[str] = []
    assert ensure_dependencies(SHARED, tmp_path, out=messages.append) == []
    assert messages == []
    assert list(tmp_path.iterdir()) == []


def test_a_remote_server_that_does_not_answer_is_an_error_saying_what_to_fix(
    tmp_path: Path,
) -> None:
    settings = Settings(
        postgres_url=SHARED.postgres_url,
        redis_url="redis://192.0.2.1:6390/0",  # TEST-NET-1: never answers
        amqp_url=SHARED.amqp_url,
    )
    with pytest.raises(
        InfraError, match=r"Redis did not answer at 192\.0\.2\.1:6390.*TIKET_REDIS_URL"
    ):
        ensure_dependencies(settings, tmp_path, out=lambda _msg: None)
    assert list(tmp_path.iterdir()) == []


def test_private_redis_starts_answers_and_stops(
    tmp_path: Path, started: list[PrivateInstance]
) -> None:
    port = free_port()
    settings = Settings(
        postgres_url=SHARED.postgres_url,
        redis_url=f"redis://127.0.0.1:{port}/0",
        amqp_url=SHARED.amqp_url,
    )
    messages: list[str] = []
    started += ensure_dependencies(settings, tmp_path / "state", out=messages.append)

    assert [i.name for i in started] == ["Redis"]
    assert len(messages) == 1
    assert f"Redis did not answer at 127.0.0.1:{port}: started a private instance" in messages[0]
    assert "redis.log" in messages[0]
    client = redis.Redis.from_url(settings.redis_url)
    try:
        assert client.ping()
    finally:
        client.close()
    leftovers = running_private(settings, tmp_path / "state")  # what `tiket down` would stop
    assert [(i.name, i.port) for i in leftovers] == [("Redis", port)]

    stop_private(started, out=lambda _msg: None)
    assert not probe(settings.redis_url)
    assert running_private(settings, tmp_path / "state") == []


def test_private_postgres_starts_answers_is_reused_and_stops(
    reachable_dir: Path, started: list[PrivateInstance]
) -> None:
    port = free_port()
    settings = Settings(
        postgres_url=f"postgresql://postgres@127.0.0.1:{port}",
        redis_url=SHARED.redis_url,
        amqp_url=SHARED.amqp_url,
    )
    for _run in range(2):  # the second run reuses the data dir of the first
        instances = ensure_dependencies(settings, reachable_dir, out=lambda _msg: None)
        started += instances
        assert [i.name for i in instances] == ["PostgreSQL"]
        with psycopg.connect(f"{settings.postgres_url}/postgres", connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        stop_private(instances, out=lambda _msg: None)
        assert not probe(settings.postgres_url)
    assert (reachable_dir / "postgres" / "PG_VERSION").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_postgres_state_dir_the_postgres_user_cannot_reach_is_a_clear_error(
    tmp_path: Path, started: list[PrivateInstance]
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    settings = Settings(postgres_url=f"postgresql://postgres@127.0.0.1:{free_port()}")
    with pytest.raises(InfraError, match="cannot reach"):
        started += ensure_dependencies(
            settings, private / "state", out=lambda _msg: None, dependencies=[PostgreSQL()]
        )


def test_private_rabbitmq_starts_takes_a_connection_and_stops(
    tmp_path: Path, started: list[PrivateInstance]
) -> None:
    port = free_port()
    settings = Settings(amqp_url=f"amqp://guest:guest@127.0.0.1:{port}/")
    messages: list[str] = []
    started += ensure_dependencies(
        settings, tmp_path, out=messages.append, dependencies=[RabbitMQ()]
    )
    assert "starting a private instance" in messages[0]
    assert "started a private instance" in messages[1]

    async def publish() -> None:
        connection = await aio_pika.connect(settings.amqp_url, timeout=10)
        async with connection:
            channel = await connection.channel()
            await channel.declare_exchange("tiket.test", aio_pika.ExchangeType.TOPIC)

    asyncio.run(publish())
    stop_private(started, out=lambda _msg: None)
    assert not probe(settings.amqp_url)
