"""The container image `make image` built (TIKET_TEST_IMAGE), run with podman as the chart
runs it (non-root, read-only root filesystem, no capability) against this machine's
PostgreSQL, Redis and RabbitMQ: every service answers SERVING through the published port
and exits 0 on SIGTERM. `make test-image` runs this; other runs leave it out (conftest.py)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from libs.config import Settings, load
from services import registry
from tests.deploy.chart import ROOT
from tests.support import keys
from tests.support.cleanup import remove_run
from tests.support.processes import free_port, wait_serving
from tests.support.settings import isolated_env

pytestmark = [pytest.mark.image, pytest.mark.timeout(300)]
IMAGE = os.environ.get("TIKET_TEST_IMAGE", "localhost/tiket:0.1.0")
CONTAINERS_CONF = ROOT / "deploy" / "podman" / "containers.conf"
# slirp4netns maps this address in the container to the host's loopback, where the
# machine's PostgreSQL, Redis and RabbitMQ listen.
HOST_LOOPBACK = "10.0.2.2"
KEYS = "/etc/tiket/keys"
PORT = 50051  # every service listens on it inside its container; published on a free one


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args],
        env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def inspect_image() -> dict:
    done = podman("image", "inspect", IMAGE)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)[0]


@pytest.fixture(scope="module")
def readable_keys() -> Iterator[Path]:
    """This run's development keys, readable by the image's user (10001)."""
    directory = Path(tempfile.mkdtemp(prefix="tiket-image-keys-"))
    try:
        shutil.copytree(keys.keys_dir(), directory, dirs_exist_ok=True)
        for path in [directory, *directory.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def to_host(url: str) -> str:
    """`url` as the container reaches it: the host's loopback through slirp4netns."""
    return url.replace("127.0.0.1", HOST_LOOPBACK).replace("localhost", HOST_LOOPBACK)


def container_env(settings: Settings, isolated: dict[str, str], name: str) -> dict[str, str]:
    """The run's isolated TIKET_* settings, as the container reaches the host and its keys."""
    return {
        **isolated,
        "TIKET_POSTGRES_URL": to_host(settings.postgres_url),
        "TIKET_REDIS_URL": to_host(settings.redis_url),
        "TIKET_AMQP_URL": to_host(settings.amqp_url),
        "TIKET_JWKS": f"{KEYS}/issuer.jwks.json",
        "TIKET_SERVICE_JWKS": f"{KEYS}/services.jwks.json",
        "TIKET_SERVICE_KEY": f"{KEYS}/services/{{service}}.pem",
        "TIKET_DEV_ISSUER_KEY": f"{KEYS}/issuer.pem",
        f"TIKET_{name.upper()}_PORT": str(PORT),
    }


def test_image_runs_as_non_root_with_the_tiket_entrypoint() -> None:
    config = inspect_image()["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["tiket", "serve"]


def test_final_stage_has_no_compiler_and_no_pip() -> None:
    done = podman(
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        IMAGE,
        "-c",
        "for tool in cc gcc g++ make pip pip3; do command -v $tool; done; true",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"found in the image: {done.stdout}"


@pytest.mark.parametrize("name", list(registry.SERVICES))
def test_service_serves_health_and_exits_cleanly_on_sigterm(name: str, readable_keys: Path) -> None:
    published = free_port()
    isolated = isolated_env()
    settings = load(isolated)
    env = container_env(settings, isolated, name)
    container = f"tiket-test-{name}-{uuid.uuid4().hex[:8]}"
    command = [
        "run",
        "--detach",
        "--name",
        container,
        "--network",
        "slirp4netns:allow_host_loopback=true",
        "--publish",
        f"127.0.0.1:{published}:{PORT}",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--volume",
        f"{readable_keys}:{KEYS}:ro",
    ]
    for key, value in env.items():
        command += ["--env", f"{key}={value}"]
    started = podman(*command, IMAGE, name)
    assert started.returncode == 0, started.stderr
    try:
        try:
            wait_serving(f"127.0.0.1:{published}", registry.grpc_service_names(name)[0], timeout=90)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{podman('logs', container).stderr[-3000:]}") from None
        assert podman("kill", "--signal", "TERM", container).returncode == 0
        waited = podman("wait", container, timeout=60)
        logs = podman("logs", container).stderr[-3000:]
        assert waited.stdout.strip() == "0", f"exit {waited.stdout.strip()}: {logs}"
    finally:
        podman("rm", "--force", "--time", "0", container)
        asyncio.run(remove_run(settings, [name]))
