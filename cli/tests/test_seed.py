"""`tiket seed` before the mesh runs, as a new user might: a sentence, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.processes import ROOT, free_port


def test_seed_without_the_mesh_says_which_service_does_not_answer(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    environment = {**os.environ, "TIKET_STATE_DIR": str(tmp_path), "TIKET_USER_ADDR": address}
    subprocess.run(
        [sys.executable, "-m", "cli.main", "keys", "dev"], cwd=ROOT, env=environment, check=True
    )
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "seed"],
        cwd=ROOT,
        env={**environment, "TIKET_ENV": "development"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"tiket seed: the user service at {address}: UNAVAILABLE: ")
    assert done.stderr.strip().endswith("; start the mesh first (make run)"), done.stderr
