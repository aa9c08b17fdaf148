"""End to end: `tiket up --seed` starts the services, loads demo data, reports them in
`tiket status`, and Ctrl-C stops everything cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from tiket.user.v1 import user_pb2

from cli import health
from libs.auth.keys import load_private_key, public_jwk
from libs.auth.tokens import TokenSigner, audience
from libs.config import load
from services import registry
from tests.support.cleanup import remove_run
from tests.support.processes import ROOT, free_ports
from tests.support.processes import tiket as run_tiket
from tests.support.settings import isolated_env

pytestmark = pytest.mark.e2e


class Output:
    """Everything a process prints, read by a thread as it comes, so its pipe never fills
    (a full pipe would stall the process) and a failing test can show all of it."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, marker: str, timeout: float = 90, count: int = 1) -> str:
        """Everything printed once `marker` has been printed `count` times."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (text := self.text()).count(marker) >= count:
                return text
            time.sleep(0.1)
        raise AssertionError(f"{marker!r} never printed; output was:\n{self.text()}")

    def finish(self, timeout: float = 10) -> str:
        self._thread.join(timeout)
        return self.text()


def start_up(env: dict[str, str], *args: str) -> tuple[subprocess.Popen, Output]:
    """`tiket up ARGS` in the background, its output collected as it comes."""
    up = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return up, Output(up)


@contextlib.contextmanager
def tiket_up(
    env: dict[str, str], names: list[str], *flags: str
) -> Iterator[tuple[subprocess.Popen, Output]]:
    """`tiket up FLAGS` (default `--only NAMES`) with free ports for `names`; afterwards
    stopped (Ctrl-C, killed if it lingers) and its databases, queues and keys removed."""
    ports = iter(free_ports(2 * len(names)))
    for name in names:
        env[f"TIKET_{name.upper()}_PORT"] = str(next(ports))
        env[f"TIKET_{name.upper()}_METRICS_PORT"] = str(next(ports))
    up, output = start_up(env, *(flags or ("--only", *names)))
    try:
        yield up, output
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                up.wait(timeout=60)
        if up.poll() is None:
            up.kill()
            up.wait()
        asyncio.run(remove_run(load(env), names))


def test_up_seed_status_and_ctrl_c():
    env = {**os.environ, **isolated_env(TIKET_LOG_LEVEL="info")}
    with tiket_up(env, list(registry.SERVICES), "--seed") as (up, output):
        printed = output.wait_for("streaming logs")
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
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"tiket up still running 60 s after Ctrl-C; it printed:\n{output.text()}")
        rest = output.finish()
        assert up.returncode == 0, rest
        assert "tiket: stopped" in rest
        # Every variable set for the six services is one of theirs: none is called unread.
        assert "has no such setting" not in rest, rest

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


def children_of(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines())
            if int(fields["PPid"]) == pid:
                found.append(int(status.parent.name))
    return found


def test_services_stop_when_tiket_up_is_killed():
    """Killed without a chance to stop them (SIGKILL, out of memory), `tiket up` leaves no
    orphan serving on: each service notices its supervisor is gone, drains and exits."""
    env = {**os.environ, **isolated_env()}
    with tiket_up(env, ["user"]) as (up, output):
        output.wait_for("streaming logs")
        [service] = children_of(up.pid)
        up.kill()
        up.wait()
        deadline = time.monotonic() + 20
        while Path(f"/proc/{service}").exists() and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(service, os.WNOHANG)  # reaped by init, normally; never by us
            time.sleep(0.2)
        assert not Path(f"/proc/{service}").exists(), "the user service outlived tiket up"


def test_a_service_that_dies_under_tiket_up_is_said_so_and_started_again():
    """A service killed under `tiket up` (out of memory, a crash) is reported with how it
    ended and served again, not left DOWN while the rest stream on; Ctrl-C then stops the
    new process too."""
    env = {**os.environ, **isolated_env()}
    with tiket_up(env, ["user"]) as (up, output):
        output.wait_for("streaming logs")
        [first] = children_of(up.pid)
        os.kill(first, signal.SIGKILL)
        output.wait_for("tiket: user exited (killed by SIGKILL)")
        output.wait_for("tiket: starting user again")
        output.wait_for("  user         SERVING on", count=2)
        [second] = children_of(up.pid)
        assert second != first
        user = load(env).addresses["user"]
        assert asyncio.run(health.check(user, "tiket.user.v1.UserService")) == "SERVING"

        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
        assert up.returncode == 0, output.finish()
        assert "tiket: stopped" in output.finish()
        assert not Path(f"/proc/{second}").exists(), "the started-again user outlived tiket up"


def test_up_makes_development_keys_and_no_service_holds_one_that_signs_admin(tmp_path):
    """`tiket up` makes the development key pairs; `tiket token` signs with the identity
    provider's, which no service process is given: each sees only its own key, which the
    others accept for its service tokens and refuse for anything else."""
    env = {**os.environ, **isolated_env(TIKET_STATE_DIR=str(tmp_path))}
    for variable in (
        "TIKET_JWKS",
        "TIKET_SERVICE_JWKS",
        "TIKET_SERVICE_KEY",
        "TIKET_DEV_ISSUER_KEY",
    ):
        env.pop(variable)  # the defaults: keys under TIKET_STATE_DIR, made by tiket up
    with tiket_up(env, ["user", "fare"]) as (up, output):
        settings = load(env)
        assert "made development keys" in output.wait_for("streaming logs")
        issuer_key = (tmp_path / "keys" / "issuer.pem").read_bytes()
        user = settings.addresses["user"]
        admin = run_tiket("token", "--role", "admin", "--sub", "ops", env=env).stdout.strip()
        assert call_get_user(user, admin) == grpc.StatusCode.NOT_FOUND  # accepted, no such card
        for pid in children_of(up.pid):
            environ = dict(
                item.split("=", 1)
                for item in Path(f"/proc/{pid}/environ").read_text().split("\0")
                if "=" in item
            )
            assert not any("PRIVATE KEY" in value for value in environ.values())
            assert "TIKET_DEV_ISSUER_KEY" not in environ
            own = Path(environ["TIKET_SERVICE_KEY"])
            assert own.read_bytes() != issuer_key
            opened = {str(link.resolve()) for link in Path(f"/proc/{pid}/fd").iterdir()}
            assert str(tmp_path / "keys" / "issuer.pem") not in opened
            forged = forge_admin_token(own, settings)
            assert call_get_user(user, forged) == grpc.StatusCode.UNAUTHENTICATED


def forge_admin_token(service_key: Path, settings) -> str:
    """What a compromised service could sign with its own key: an admin token, under the
    kid its own service tokens carry."""
    key = load_private_key(service_key)
    [kid] = [
        k
        for k in json.loads(Path(settings.service_jwks).read_text())["keys"]
        if k["x"] == public_jwk(key)["x"]
    ]
    signer = TokenSigner(key, kid["kid"], settings.token_issuer)
    return signer.mint("admin", "ops", [audience(n) for n in registry.SERVICES], 600)


def call_get_user(address: str, token: str) -> grpc.StatusCode:
    with grpc.insecure_channel(address) as channel:
        get_user = channel.unary_unary(
            "/tiket.user.v1.UserService/GetUser",
            user_pb2.GetUserRequest.SerializeToString,
            user_pb2.User.FromString,
        )
        try:
            get_user(
                user_pb2.GetUserRequest(card_id="NOSUCHCARD"),
                metadata=[("authorization", f"Bearer {token}")],
                timeout=20,
            )
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK
