"""`tiket token` as a new user types it: a subject the services would refuse is refused here,
with their reason, instead of printing a token that fails at the first call."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.processes import ROOT


def tiket(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        env={**os.environ, "TIKET_STATE_DIR": str(state_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("role", "subject", "why"),
    [
        ("user", "CARD0001", "a user token's subject must be the user id (a UUID)"),
        ("gate", "A", "a gate token's subject must be TERMINAL/GATE (e.g. A/A-ENTRY-01)"),
        ("admin", "two words", "printable characters without spaces"),
    ],
)
def test_a_subject_the_services_refuse_is_refused(
    tmp_path: Path, role: str, subject: str, why: str
) -> None:
    assert tiket(tmp_path, "keys", "dev").returncode == 0
    done = tiket(tmp_path, "token", "--role", role, "--sub", subject)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith(f"tiket: --sub {subject!r}: ")
    assert why in done.stderr


def test_a_subject_of_the_right_shape_gets_its_token(tmp_path: Path) -> None:
    assert tiket(tmp_path, "keys", "dev").returncode == 0
    for role, subject in (("user", str(uuid.uuid4())), ("gate", "A/A-ENTRY-01"), ("admin", "ops")):
        done = tiket(tmp_path, "token", "--role", role, "--sub", subject)
        assert done.returncode == 0, done.stderr
        assert done.stdout.count(".") == 2  # header.claims.signature


@pytest.mark.parametrize("ttl", ["0", "-5"])
def test_a_token_that_would_be_born_expired_is_refused(tmp_path: Path, ttl: str) -> None:
    assert tiket(tmp_path, "keys", "dev").returncode == 0
    done = tiket(tmp_path, "token", "--role", "admin", "--sub", "ops", "--ttl", ttl)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.strip() == f"tiket: --ttl {ttl}: a token must live at least 1 second"


def test_a_service_key_that_cannot_be_written_is_named_without_a_traceback(
    tmp_path: Path,
) -> None:
    blocked = tmp_path / "a file"
    blocked.write_text("")
    done = tiket(tmp_path, "keys", "service", "fare", "--out", str(blocked / "keys"))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"tiket: cannot write {blocked / 'keys' / 'fare.pem'}: ")
    assert done.stderr.strip().endswith("; choose another --out")
