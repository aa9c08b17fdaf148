"""`tiket serve NAME --workers N`: N processes of one service on one port.

Python runs one thread of Python at a time, so one process serves one core. The parent
migrates the database once, checks the port is free, then starts N workers that share the
port through SO_REUSEPORT (the kernel spreads connections across them), serves the merged
Prometheus metrics of all workers, restarts a worker that dies, and on SIGTERM or Ctrl-C
drains them all and exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from libs import jsonlog, tls
from libs.config import Settings
from libs.server.runtime import ServiceDefinition, StartupError, check_identity, prepare_database

log = logging.getLogger(__name__)
WORKER_ENV = "TIKET_WORKER"  # the worker's number, from 1
# A worker that dies sooner than this after starting is failing to start, not crashing.
MIN_UPTIME_SECONDS = 5.0


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen
    started: float = field(default_factory=time.monotonic)


def worker_number() -> int:
    """This process's number among its service's workers, from 1; 0 when it is no worker."""
    return int(os.environ.get(WORKER_ENV, "0"))


def serve_workers(definition: ServiceDefinition, settings: Settings, count: int) -> None:
    """Run `count` workers of `definition` until SIGTERM/SIGINT; exit 0 after draining them,
    1 when they cannot start."""
    jsonlog.setup(definition.name, settings.log_level)
    name = definition.name
    try:
        check_identity(definition.name, settings)
        if settings.tls_server:
            tls.server_credentials(settings)  # a bad file: said once here, not by every worker
        port = settings.grpc_ports[name]
        _check_port_free(settings.host, port, name)
        prepare_database(definition, settings)
    except (StartupError, tls.TlsError) as exc:
        log.error("cannot start: %s", exc)
        sys.exit(1)
    with tempfile.TemporaryDirectory(prefix=f"tiket-{name}-metrics-") as metrics_dir:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=metrics_dir)
        httpd, _ = start_http_server(settings.metrics_ports[name], settings.host, registry)
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
        try:
            code = _supervise(name, count, env, settings.grace_seconds)
        finally:
            httpd.shutdown()
    sys.exit(code)


def _check_port_free(host: str, port: int, name: str) -> None:
    if port == 0:
        raise StartupError(f"workers share one port: set TIKET_{name.upper()}_PORT to a number")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            raise StartupError(
                f"cannot listen on {host}:{port}: the port is in use (another tiket "
                f"running?); stop it or set TIKET_{name.upper()}_PORT"
            ) from None


def _supervise(name: str, count: int, env: dict[str, str], grace: float) -> int:
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    workers = [_spawn(name, i, env) for i in range(count)]
    log.info("supervising", extra={"workers": count})
    while not stopping:
        for i, worker in enumerate(workers):
            if worker.process.poll() is None:
                continue
            if time.monotonic() - worker.started < MIN_UPTIME_SECONDS:
                log.error("worker %d exited with %s at start-up", i, worker.process.returncode)
                _stop_all(workers, grace)
                return 1
            log.error("worker %d exited with %s; restarting it", i, worker.process.returncode)
            workers[i] = _spawn(name, i, env)
        time.sleep(0.2)
    log.info("draining", extra={"grace_seconds": grace})
    _stop_all(workers, grace)
    return 0


def _spawn(name: str, index: int, env: dict[str, str]) -> _Worker:
    command = [sys.executable, "-m", "cli.main", "serve", name]
    process = subprocess.Popen(command, env={**env, WORKER_ENV: str(index + 1)})
    return _Worker(index, process)


def _stop_all(workers: list[_Worker], grace: float) -> None:
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace + 5
    for worker in workers:
        try:
            worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()
