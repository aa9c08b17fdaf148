"""deploy/envoy/envoy.yaml with the real Envoy: it validates, it routes every service of
services/registry.py as the chart does, and a copy of it on free ports in front of real
`tiket serve` processes carries health checks and authenticated calls made with the real
grpcurl; an upstream that dies is taken out by Envoy's health check and calls fail fast."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from deploy.tools import protoset
from libs.auth import Role
from libs.config import load
from libs.server.access import policies_for
from services import registry
from tests.deploy.chart import ROOT, run, tool, values
from tests.support.cleanup import remove_run
from tests.support.processes import ServiceProcess, free_ports, grpcurl_path, service_process
from tests.support.settings import MeshEnv, isolated_env
from tests.support.waiting import wait_until

ENVOY_FILE = ROOT / "deploy" / "envoy" / "envoy.yaml"
SERVICES = list(registry.SERVICES)
# The header that routes grpc.health.v1.Health/Check to one service through the proxy.
HEALTH_HEADER = "tiket-service"
# Errors a service answers about the request once it accepted the caller's token (an empty
# request is not valid for every method; some methods are not built yet): anything else, as
# Unauthenticated, PermissionDenied or Unavailable, fails the test.
GATEWAY_KEY = "test-midtrans-server-key"
# HTTP to Envoy's listener and admin on 127.0.0.1, never through an HTTP_PROXY.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
ANSWERED = ("InvalidArgument", "NotFound", "FailedPrecondition", "OutOfRange", "Unimplemented")


def envoy_config() -> dict:
    return yaml.safe_load(ENVOY_FILE.read_text())


def routes(config: dict) -> list[dict]:
    (listener,) = config["static_resources"]["listeners"]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (host,) = manager["route_config"]["virtual_hosts"]
    return host["routes"]


def clusters(config: dict) -> dict[str, dict]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


def chart_route(name: str) -> dict:
    """The chart's route settings of service `name` (serviceDefaults overlaid)."""
    chart = values()
    return {**chart["serviceDefaults"]["route"], **chart["services"][name].get("route", {})}


def test_envoy_validates_the_config() -> None:
    done = run(tool("envoy"), "--mode", "validate", "-c", str(ENVOY_FILE))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"configuration '{ENVOY_FILE}' OK" in done.stdout + done.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_envoy_routes_each_service_as_the_chart_does(name: str) -> None:
    config = envoy_config()
    expected = chart_route(name)
    for grpc_service in registry.grpc_service_names(name):  # each service the process serves
        prefix = f"/{grpc_service}/"
        route = next(r for r in routes(config) if r["match"].get("prefix") == prefix)
        assert route["route"]["cluster"] == name
        assert route["route"]["timeout"] == expected["timeout"]
        retry = route["route"]["retry_policy"]
        assert "unavailable" in retry["retry_on"].split(",")
        assert (retry["num_retries"], retry["per_try_timeout"]) == (
            expected["retries"],
            expected["perTryTimeout"],
        )
        assert "envoy.filters.http.local_ratelimit" in route["typed_per_filter_config"]
    grpc_service = registry.grpc_service_names(name)[0]
    health = next(r for r in routes(config) if r["name"] == f"{name}-health")
    assert health["match"]["headers"] == [{"name": HEALTH_HEADER, "string_match": {"exact": name}}]
    assert health["route"]["cluster"] == name
    cluster = clusters(config)[name]
    (check,) = cluster["health_checks"]
    assert check["grpc_health_check"] == {"service_name": grpc_service}
    options = cluster["typed_extension_protocol_options"]
    assert "http2_protocol_options" in str(options)


def test_server_streams_have_no_timeout_and_no_retries() -> None:
    for path in _streaming_paths():
        route = next(r for r in routes(envoy_config()) if r["match"].get("path") == path)
        assert route["route"]["timeout"] == "0s" and "retry_policy" not in route["route"], path


def _streaming_paths() -> list[str]:
    return [
        f"/{service.full_name}/{method.name}"
        for name in SERVICES
        for service in registry.definition(name).services
        for method in service.methods
        if method.server_streaming
    ]


# --- the real Envoy in front of the real services ----------------------------------------


def proxy_config(upstreams: dict[str, int], listener: int, admin: int) -> dict:
    """envoy.yaml with its listener, admin and upstream ports (by cluster) moved."""
    config = envoy_config()
    config["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=admin)
    (envoy_listener,) = config["static_resources"]["listeners"]
    envoy_listener["address"]["socket_address"].update(address="127.0.0.1", port_value=listener)
    for cluster in config["static_resources"]["clusters"]:
        (endpoints,) = cluster["load_assignment"]["endpoints"]
        (endpoint,) = endpoints["lb_endpoints"]
        address = endpoint["endpoint"]["address"]["socket_address"]
        address["port_value"] = upstreams[cluster["name"]]
    return config


@dataclass
class Proxy:
    """Envoy in front of the services, as a test sees it."""

    address: str
    admin: str
    protoset: Path
    access_log: Path
    mesh: MeshEnv
    services: dict[str, ServiceProcess]

    def call(
        self, method: str, data: object = None, token: str | None = None, *headers: str
    ) -> subprocess.CompletedProcess[str]:
        command = [grpcurl_path(), "-plaintext", "-protoset", str(self.protoset)]
        if token:
            command += ["-H", f"authorization: Bearer {token}"]
        for header in headers:
            command += ["-H", header]
        command += ["-d", json.dumps(data if data is not None else {}), self.address, method]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)

    def health(self, name: str) -> subprocess.CompletedProcess[str]:
        service = registry.grpc_service_names(name)[0]
        return self.call(
            "grpc.health.v1.Health/Check", {"service": service}, None, f"{HEALTH_HEADER}: {name}"
        )

    def log(self) -> list[dict]:
        lines = self.access_log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def host_health(self, cluster: str) -> list[str]:
        """The health flags Envoy's admin reports for the hosts of `cluster`."""
        with DIRECT.open(f"http://{self.admin}/clusters", timeout=5) as reply:
            text = reply.read().decode()
        return [
            line.rsplit("::", 1)[-1]
            for line in text.splitlines()
            if line.startswith(f"{cluster}::") and "::health_flags::" in line
        ]


@contextlib.contextmanager
def envoy(config: dict, directory: Path) -> Iterator[subprocess.Popen]:
    """The real Envoy running `config`, stopped on exit; its stdout is the access log."""
    path = directory / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    with (directory / "access.log").open("w") as out, (directory / "envoy.err").open("w") as err:
        process = subprocess.Popen(
            [
                tool("envoy"),
                "-c",
                str(path),
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warn",
                "--file-flush-interval-msec",  # the access log, every 0.1 s instead of 10 s
                "100",
            ],
            stdout=out,
            stderr=err,
        )
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def proxy() -> Iterator[Proxy]:
    webhook = free_ports(1)[0]
    # The booking process serves the payment gateway's notifications once it has a key.
    env = isolated_env(
        TIKET_BOOKING_MIDTRANS_SERVER_KEY=GATEWAY_KEY, TIKET_BOOKING_HTTP_PORT=str(webhook)
    )
    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tiket-envoy-")))
        children = {}
        try:
            for name in SERVICES:
                child = stack.enter_context(service_process(name, env))
                env[f"TIKET_{name.upper()}_ADDR"] = child.address
                children[name] = child
            listener, admin = free_ports(2)
            upstreams = {
                name: int(child.address.rsplit(":", 1)[1]) for name, child in children.items()
            }
            upstreams["booking_webhook"] = webhook
            stack.enter_context(envoy(proxy_config(upstreams, listener, admin), directory))
            protoset.write(directory / "tiket.protoset")
            yield Proxy(
                f"127.0.0.1:{listener}",
                f"127.0.0.1:{admin}",
                directory / "tiket.protoset",
                directory / "access.log",
                MeshEnv(env, load(env)),
                children,
            )
        finally:
            stack.close()
            asyncio.run(remove_run(load(env), SERVICES))


def admin_reads(name: str) -> list[str]:
    """The unary Get*/List* methods of service `name` an admin may call."""
    policies = policies_for(registry.definition(name).services)
    return [
        path.lstrip("/")
        for path, policy in sorted(policies.items())
        if path.rsplit("/", 1)[1].startswith(("Get", "List"))
        and Role.ADMIN in policy.roles
        and path not in {f"/{p.lstrip('/')}" for p in _streaming_paths()}
    ]


@pytest.mark.e2e
@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", SERVICES)
async def test_every_service_answers_through_envoy(proxy: Proxy, name: str) -> None:
    async def serving() -> bool:
        done = await asyncio.to_thread(proxy.health, name)
        return done.returncode == 0 and '"SERVING"' in done.stdout

    await wait_until(serving, f"{name} SERVING through Envoy", within=60)

    reads = admin_reads(name)
    assert reads, f"{name} has no Get/List method an admin may call"
    anonymous = proxy.call(reads[0])
    assert anonymous.returncode != 0 and "Unauthenticated" in anonymous.stderr, anonymous.stderr
    token = proxy.mesh.token(Role.ADMIN, "envoy-test")
    answers = {method: proxy.call(method, {}, token) for method in reads}
    for method, done in answers.items():
        answered = done.returncode == 0 or any(f"Code: {c}\n" in done.stderr for c in ANSWERED)
        assert answered, f"{method}: {done.stderr}"
        # The protoset decodes the google.rpc details an error carries.
        assert "is not recognized" not in done.stderr, f"{method}: {done.stderr}"

    # Envoy routed them: its access log (flushed every second) has them on this cluster.
    def logged() -> bool:
        paths = {e["path"] for e in proxy.log() if e["upstream_cluster"] == name}
        return paths >= {f"/{m}" for m in reads}

    await wait_until(logged, f"Envoy's access log of the calls to {name}", within=30)


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_payment_notifications_reach_booking_over_http(proxy: Proxy) -> None:
    """A notification with a wrong signature goes through Envoy's HTTP route to the booking
    process, which refuses it (401): the route reaches the service, and the service checks."""
    body = {
        "order_id": "B-1",
        "status_code": "200",
        "gross_amount": "1000.00",
        "signature_key": "0",
    }
    request = urllib.request.Request(
        f"http://{proxy.address}/payments/midtrans/notification",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        DIRECT.open(request, timeout=10)
    assert refused.value.code == 401
    assert "signature" in refused.value.read().decode()


@pytest.mark.e2e
@pytest.mark.timeout(240)
async def test_a_dead_upstream_is_taken_out_and_calls_fail_fast(proxy: Proxy) -> None:
    """Kill the last service: Envoy's active health check marks its host failed, and a
    call then fails at once with UNAVAILABLE, no healthy upstream (flag UH), the host never
    tried."""
    name = SERVICES[-1]
    read = admin_reads(name)[0]
    proxy.services[name].process.kill()
    proxy.services[name].process.wait()

    async def failed() -> bool:
        flags = await asyncio.to_thread(proxy.host_health, name)
        return bool(flags) and all("/failed_active_hc" in f for f in flags)

    await wait_until(failed, f"Envoy's health check to take {name} out", within=60)
    token = proxy.mesh.token(Role.ADMIN, "envoy-test")
    done = proxy.call(read, {}, token)
    assert done.returncode != 0 and "Unavailable" in done.stderr, done.stderr

    def refused_unhealthy() -> bool:
        entries = [e for e in proxy.log() if e["path"] == f"/{read}"]
        return bool(entries) and "UH" in entries[-1]["flags"].split(",")

    await wait_until(refused_unhealthy, "the call logged as no healthy upstream", within=30)
    for other in SERVICES[:-1]:
        assert proxy.health(other).returncode == 0, other
