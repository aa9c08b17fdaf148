"""libs.db.migrations against the real PostgreSQL: order, checksums, refusals, atomicity and
the advisory lock that lets replicas start together."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import psycopg
import pytest

from libs.db.migrations import MigrationError, Track, migrate

pytestmark = pytest.mark.timeout(60)


def write(folder: Path, name: str, sql: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(sql)
    return path


def rows(url: str, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def table_exists(url: str, name: str) -> bool:
    return rows(url, "SELECT to_regclass(%s) IS NOT NULL", (name,))[0][0]


def recorded(url: str) -> list[tuple]:
    return rows(
        url, "SELECT track, version, name, checksum FROM schema_migrations ORDER BY track, version"
    )


def test_applies_in_order_and_records_checksums(empty_database: str, tmp_path: Path) -> None:
    folder = tmp_path / "app"
    # 0002 depends on 0001, 0003 on 0002: applied out of order they would fail.
    sql = {
        "0001_create_things.sql": "CREATE TABLE things (id INT PRIMARY KEY);",
        "0002_add_name.sql": "ALTER TABLE things ADD COLUMN name TEXT;",
        "0003_seed.sql": "INSERT INTO things (id, name) VALUES (1, 'one'), (2, 'two');",
    }
    for name, text in reversed(sql.items()):
        write(folder, name, text)

    applied = migrate(empty_database, [Track("app", folder)])

    assert applied == [f"app/{name}" for name in sql]
    assert recorded(empty_database) == [
        ("app", version, name, hashlib.sha256(text.encode()).hexdigest())
        for version, (name, text) in enumerate(sql.items(), start=1)
    ]
    assert rows(empty_database, "SELECT id, name FROM things ORDER BY id") == [
        (1, "one"),
        (2, "two"),
    ]


def test_second_run_applies_nothing(empty_database: str, tmp_path: Path) -> None:
    folder = tmp_path / "app"
    write(folder, "0001_init.sql", "CREATE TABLE counter (n INT); INSERT INTO counter VALUES (1);")
    assert migrate(empty_database, [Track("app", folder)]) == ["app/0001_init.sql"]

    assert migrate(empty_database, [Track("app", folder)]) == []

    assert rows(empty_database, "SELECT count(*) FROM counter") == [(1,)]
    assert len(recorded(empty_database)) == 1


def test_only_new_migrations_are_applied_later(empty_database: str, tmp_path: Path) -> None:
    folder = tmp_path / "app"
    write(folder, "0001_init.sql", "CREATE TABLE a (n INT);")
    migrate(empty_database, [Track("app", folder)])
    write(folder, "0002_more.sql", "CREATE TABLE b (n INT);")

    assert migrate(empty_database, [Track("app", folder)]) == ["app/0002_more.sql"]
    assert table_exists(empty_database, "b")


def test_tracks_are_independent(empty_database: str, tmp_path: Path) -> None:
    write(tmp_path / "events", "0001_outbox.sql", "CREATE TABLE outbox_t (n INT);")
    write(tmp_path / "user", "0001_users.sql", "CREATE TABLE users_t (n INT);")
    tracks = [Track("events", tmp_path / "events"), Track("user", tmp_path / "user")]

    assert migrate(empty_database, tracks) == ["events/0001_outbox.sql", "user/0001_users.sql"]
    assert [(t, v) for t, v, _, _ in recorded(empty_database)] == [("events", 1), ("user", 1)]


def test_an_edited_applied_migration_is_refused(empty_database: str, tmp_path: Path) -> None:
    folder = tmp_path / "app"
    path = write(folder, "0001_init.sql", "CREATE TABLE a (n INT);")
    migrate(empty_database, [Track("app", folder)])
    path.write_text("CREATE TABLE a (n BIGINT);")
    write(folder, "0002_next.sql", "CREATE TABLE should_not_exist (n INT);")

    with pytest.raises(MigrationError) as caught:
        migrate(empty_database, [Track("app", folder)])

    message = str(caught.value)
    assert "0001_init.sql" in message
    assert "edited after it was applied" in message
    assert "new migration" in message
    assert not table_exists(empty_database, "should_not_exist")


def test_a_gap_in_versions_is_refused(empty_database: str, tmp_path: Path) -> None:
    folder = tmp_path / "app"
    write(folder, "0001_init.sql", "CREATE TABLE a (n INT);")
    write(folder, "0003_skip.sql", "CREATE TABLE c (n INT);")

    with pytest.raises(MigrationError) as caught:
        migrate(empty_database, [Track("app", folder)])

    assert "expected version 0002" in str(caught.value)
    assert "0003_skip.sql" in str(caught.value)
    # Nothing of a broken track is applied, not even the valid first file.
    assert not table_exists(empty_database, "a")
    assert recorded(empty_database) == []


@pytest.mark.parametrize(
    "bad_name", ["1_init.sql", "0001-init.sql", "0001_Init.sql", "0001.sql", "00001_init.sql"]
)
def test_a_bad_file_name_is_refused(empty_database: str, tmp_path: Path, bad_name: str) -> None:
    folder = tmp_path / "app"
    write(folder, bad_name, "CREATE TABLE a (n INT);")

    with pytest.raises(MigrationError) as caught:
        migrate(empty_database, [Track("app", folder)])

    assert bad_name in str(caught.value)
    assert "0001_create_users.sql" in str(caught.value)
    assert not table_exists(empty_database, "a")


def test_a_migration_unknown_to_the_code_is_refused(empty_database: str, tmp_path: Path) -> None:
    folder = tmp_path / "app"
    write(folder, "0001_init.sql", "CREATE TABLE a (n INT);")
    write(folder, "0002_next.sql", "CREATE TABLE b (n INT);")
    migrate(empty_database, [Track("app", folder)])
    (folder / "0002_next.sql").unlink()  # an older build of the service

    with pytest.raises(MigrationError, match=r"does not know \(\[2\]\)"):
        migrate(empty_database, [Track("app", folder)])


def test_a_failing_migration_leaves_nothing_half_applied(
    empty_database: str, tmp_path: Path
) -> None:
    folder = tmp_path / "app"
    write(folder, "0001_init.sql", "CREATE TABLE a (n INT);")
    broken = write(
        folder,
        "0002_broken.sql",
        "CREATE TABLE half (n INT); INSERT INTO a VALUES (1); SELECT 1 / 0;",
    )

    with pytest.raises(psycopg.errors.DivisionByZero):
        migrate(empty_database, [Track("app", folder)])

    # 0001 committed on its own; 0002's transaction rolled back entirely.
    assert [(v, n) for _, v, n, _ in recorded(empty_database)] == [(1, "0001_init.sql")]
    assert table_exists(empty_database, "a")
    assert not table_exists(empty_database, "half")
    assert rows(empty_database, "SELECT count(*) FROM a") == [(0,)]

    # The advisory lock was released: fixing the file and running again works.
    broken.write_text("CREATE TABLE half (n INT); INSERT INTO a VALUES (1);")
    assert migrate(empty_database, [Track("app", folder)]) == ["app/0002_broken.sql"]
    assert rows(empty_database, "SELECT count(*) FROM a") == [(1,)]


def test_concurrent_migrations_apply_each_file_exactly_once(
    empty_database: str, tmp_path: Path
) -> None:
    folder = tmp_path / "app"
    # Without the lock, both runners would see 0001 pending; the second CREATE TABLE or
    # the second schema_migrations row would then fail.
    write(
        folder,
        "0001_slow.sql",
        "SELECT pg_sleep(0.5); CREATE TABLE slow (n INT); INSERT INTO slow VALUES (1);",
    )
    track = Track("app", folder)
    results: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        try:
            results.append(migrate(empty_database, [track]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    elapsed = time.monotonic() - started

    assert errors == []
    assert sorted(results) == [[], ["app/0001_slow.sql"]]
    assert rows(empty_database, "SELECT count(*) FROM schema_migrations") == [(1,)]
    assert rows(empty_database, "SELECT count(*) FROM slow") == [(1,)]
    assert elapsed >= 0.5
    # Both sessions released the lock.
    assert rows(
        empty_database,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())",
    ) == [(0,)]
