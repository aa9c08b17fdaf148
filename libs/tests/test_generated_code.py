"""gen/ is what protos/ generates: `python -m libs.proto.generate --check` passes on the
repository and catches stale, missing and left-over files.

The drift tests change a type stub (.pyi) under gen/ for a moment and restore it byte for
byte: stubs are never imported, so tests running at the same time are not disturbed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from libs.proto import generate

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
STUB = generate.GEN_ROOT / "tiket" / "user" / "v1" / "user_pb2.pyi"


@contextmanager
def restored(path: Path) -> Iterator[None]:
    """Put `path` back exactly as it was (or remove it if it did not exist)."""
    original = path.read_bytes() if path.exists() else None
    try:
        yield
    finally:
        if original is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(original)
        assert (path.read_bytes() if path.exists() else None) == original


def test_check_passes_on_the_repository() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "libs.proto.generate", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout


def test_check_detects_an_edited_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert STUB.exists()
    with restored(STUB):
        with STUB.open("ab") as f:
            f.write(b"#")
        assert generate.check() == 1
    out = capsys.readouterr().out
    assert "out of date" in out
    assert "stale: gen/tiket/user/v1/user_pb2.pyi" in out
    assert generate.check() == 0


def test_check_detects_a_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    stub = generate.GEN_ROOT / "tiket" / "events" / "v1" / "wallet_pb2.pyi"
    with restored(stub):
        stub.unlink()
        assert generate.check() == 1
    assert "missing: gen/tiket/events/v1/wallet_pb2.pyi" in capsys.readouterr().out
    assert generate.check() == 0


def test_check_detects_a_left_over_file(capsys: pytest.CaptureFixture[str]) -> None:
    extra = generate.GEN_ROOT / "tiket" / "user" / "v1" / "removed_pb2.pyi"
    with restored(extra):
        extra.write_text("# generated from a .proto that no longer exists\n")
        assert generate.check() == 1
    assert "left over: gen/tiket/user/v1/removed_pb2.pyi" in capsys.readouterr().out
    assert not extra.exists()
