"""End to end: `tiket up --seed` starts the services, loads demo data, reports them in
`tiket status`, and Ctrl-C stops everything cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from libs.config import load
from services import registry
from tests.support.cleanup import remove_run
from tests.support.processes import ROOT, free_port
from tests.support.settings import isolated_env

pytestmark = pytest.mark.e2e


def read_until(process: subprocess.Popen, marker: str, timeout: float = 90) -> str:
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"{marker!r} never printed; output was:\n{''.join(seen)}")


def test_up_seed_status_and_ctrl_c():
    env = {**os.environ, **isolated_env(TIKET_LOG_LEVEL="info")}
    for name in registry.SERVICES:
        env[f"TIKET_{name.upper()}_PORT"] = str(free_port())
        env[f"TIKET_{name.upper()}_METRICS_PORT"] = str(free_port())
    up = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up", "--seed"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        printed = read_until(up, "streaming logs")
        assert "CARD0001  John Doe" in printed
        assert "tiket.user.v1.UserService" in printed
        status = subprocess.run(
            [sys.executable, "-m", "cli.main", "status"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        assert "SERVING" in status.stdout

        up.send_signal(signal.SIGINT)
        rest, _ = up.communicate(timeout=60)
        assert up.returncode == 0, rest
        assert "tiket: stopped" in rest

        after = subprocess.run(
            [sys.executable, "-m", "cli.main", "status"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert after.returncode == 1
        assert "DOWN" in after.stdout
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        asyncio.run(remove_run(load(env), list(registry.SERVICES)))
