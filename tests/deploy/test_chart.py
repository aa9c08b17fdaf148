"""helm/tiket as Helm and Kubernetes' own schemas see it: lint, the values schema, every core
object valid for the oldest and newest Kubernetes the chart supports, and every service of
services/registry.py deployed with what issue 17 asks for."""

from __future__ import annotations

import copy
import json
import re
import sys

import pytest
import yaml

from libs.config import SERVICE_PORTS, load
from libs.db.database import drop_database
from services import registry
from services.booking import config as booking_config
from tests.deploy.chart import (
    CHART,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    Docs,
    exported_series,
    helm,
    is_custom,
    object_name,
    of_kind,
    render,
    run,
    selectors,
    selects,
    template,
    tool,
    values,
)
from tests.support.databases import POSTGRES_URL, unique_name
from tests.support.processes import tiket

SERVICES = list(registry.SERVICES)
# The chart's kubeVersion floor and the newest schemas kubernetes-validate bundles.
KUBE_VERSIONS = ("1.30", "1.37")
GATEWAY = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"


def core(docs: Docs) -> list[dict]:
    return [doc for doc in docs if not is_custom(doc)]


def kubernetes_validate(docs: list[dict], version: str) -> tuple[int, str]:
    """`kubernetes-validate --strict` of `docs` as one stream on stdin: (exit code, output)."""
    done = run(
        tool("kubernetes-validate"),
        "--strict",
        "-k",
        version,
        "-",
        stdin=yaml.safe_dump_all(docs),
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_strict_passes(value_set: str) -> None:
    done = helm("lint", "--strict", str(CHART), *VALUE_SETS[value_set])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize(
    "flag",
    [
        "serviceDefaults.replica=3",  # misspelt key
        "services.user.port=grpc",  # not a port
        "config.environment=prod",  # not an environment the services know
        "secrets.postgres.key=",  # a secret reference must name its key
        "serviceDefaults.autoscaling.targetCPUUtilizationPercentage=170",
    ],
)
def test_values_schema_refuses_bad_values(flag: str) -> None:
    done = template("default", "--set", flag)
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr, done.stderr


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_core_objects_pass_kubernetes_validate_strict(value_set: str, version: str) -> None:
    docs = core(render(value_set))
    code, output = kubernetes_validate(docs, version)
    assert code == 0, output
    assert "WARN" not in output and "ERROR" not in output, output
    assert output.count(" passed for resource ") == len(docs), output


def test_kubernetes_validate_strict_refuses_an_unknown_field() -> None:
    """The check above can fail: a misspelt probe field is an error in strict mode."""
    deployment = copy.deepcopy(next(iter(of_kind(render("default"), "Deployment").values())))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["grpcc"] = container["readinessProbe"].pop("grpc")
    code, output = kubernetes_validate([deployment], KUBE_VERSIONS[-1])
    assert code != 0
    assert "grpcc" in output, output


def test_the_chart_has_a_block_for_every_service_and_no_other() -> None:
    assert sorted(values()["services"]) == sorted(SERVICES)


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_is_deployed_with_its_objects(name: str) -> None:
    docs = render("production")
    obj = object_name(name)
    grpc_service = registry.grpc_service_names(name)[0]
    port = SERVICE_PORTS[name][0]

    deployment = of_kind(docs, "Deployment")[obj]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    (container,) = pod["spec"]["containers"]
    assert container["args"] == [name]
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["grpc"] == port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == port, probe
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["grpc"]["service"] == grpc_service, probe

    service = of_kind(docs, "Service")[obj]
    assert selects(service["spec"]["selector"], labels)
    grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert (grpc_port["port"], grpc_port["targetPort"]) == (port, "grpc")

    hpa = of_kind(docs, "HorizontalPodAutoscaler")[obj]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": obj,
    }
    resources = [m["resource"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"]
    targets = {m["name"]: m["target"] for m in resources}
    assert targets["cpu"] == {"type": "Utilization", "averageUtilization": 70}
    assert "memory" in targets
    assert selects(
        of_kind(docs, "PodDisruptionBudget")[obj]["spec"]["selector"]["matchLabels"], labels
    )

    assert obj in of_kind(docs, "ServiceAccount")
    assert pod["spec"]["serviceAccountName"] == obj

    job = of_kind(docs, "Job")[object_name(f"migrate-{name}")]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["tiket", "migrate", name]

    host = f"{obj}.{NAMESPACE}.svc.cluster.local"
    routes = of_kind(docs, "VirtualService")["tiket"]["spec"]["http"]
    for served in registry.grpc_service_names(name):  # every service the process serves
        assert any(
            {"uri": {"prefix": f"/{served}/"}} in route["match"]
            and route["route"] == [{"destination": {"host": host, "port": {"number": port}}}]
            for route in routes
        ), f"no VirtualService route of {served} to {host}"
    assert of_kind(docs, "DestinationRule")[obj]["spec"]["host"] == host
    policy = of_kind(docs, "AuthorizationPolicy")[obj]
    assert selects(policy["spec"]["selector"]["matchLabels"], labels)
    assert policy["spec"]["action"] == "ALLOW"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_pod_is_locked_down(value_set: str) -> None:
    """Non-root, read-only root filesystem, no privilege escalation, no capability,
    seccomp RuntimeDefault: the services' pods and the migration Jobs'."""
    docs = render(value_set)
    pods = [d["spec"]["template"] for d in docs if d["kind"] in ("Deployment", "Job")]
    assert len(pods) == 2 * len(SERVICES)
    for pod in pods:
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"]["automountServiceAccountToken"] is False
        for container in pod["spec"]["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
            assert container["resources"]["limits"]


def test_service_containers_get_seed_001_resources() -> None:
    for deployment in of_kind(render("default"), "Deployment").values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}


def _settings_names() -> set[str]:
    """The TIKET_* variables read by a literal name: libs/config.py's, and those of each
    service's own config.py (`PREFIX + "NAME"`)."""
    root = CHART.parents[1]
    names = set(re.findall(r'"(TIKET_[A-Z0-9_]+)"', (root / "libs" / "config.py").read_text()))
    for path in root.glob("services/*/config.py"):
        source = path.read_text()
        prefix = re.search(r'^PREFIX = "(TIKET_[A-Z0-9_]+)"', source, re.MULTILINE)
        if prefix:
            names |= {prefix[1] + n for n in re.findall(r'PREFIX \+ "([A-Z0-9_]+)"', source)}
    return names


@pytest.mark.parametrize("value_set", VALUE_SETS)
@pytest.mark.parametrize("name", SERVICES)
def test_service_config_is_a_valid_production_configuration(value_set: str, name: str) -> None:
    """Each service's ConfigMap, with the secrets' URLs, is what libs/config.py accepts in
    production, names only variables it reads, and points at every peer's Service."""
    docs = render(value_set)
    data = of_kind(docs, "ConfigMap")[object_name(name)]["data"]
    per_service = re.compile(
        rf"TIKET_({'|'.join(n.upper() for n in SERVICE_PORTS)})_(PORT|METRICS_PORT|ADDR)"
    )
    unknown = {
        key for key in data if key not in _settings_names() and not per_service.fullmatch(key)
    }
    assert not unknown, f"variables tiket does not read: {unknown}"
    settings = load(
        {
            **data,
            "TIKET_POSTGRES_URL": "postgresql://tiket:secret@postgres:5432",
            "TIKET_AMQP_URL": "amqp://tiket:secret@rabbitmq:5672/",
            "TIKET_REDIS_URL": "redis://redis:6379/0",
        }
    )
    settings.check_production()
    assert settings.env == "production"
    assert settings.host == "0.0.0.0"
    assert settings.grpc_ports[name] == SERVICE_PORTS[name][0]
    assert settings.metrics_ports[name] == SERVICE_PORTS[name][1]
    for peer in SERVICES:
        assert settings.addresses[peer] == f"{object_name(peer)}:{SERVICE_PORTS[peer][0]}"
    env = of_kind(docs, "Deployment")[object_name(name)]["spec"]["template"]["spec"]
    secret_env = {
        e["name"] for e in env["containers"][0]["env"] if "secretKeyRef" in e["valueFrom"]
    }
    own = set(values()["services"][name].get("secretEnv", {}))
    assert secret_env == {"TIKET_POSTGRES_URL", "TIKET_AMQP_URL", "TIKET_REDIS_URL", *own}
    assert own <= _settings_names()


UNREAD_PROBE = """
import importlib, json, sys
from libs.config import load, unread_settings
name, env = sys.argv[1], json.loads(sys.argv[2])
load(env)
try:
    importlib.import_module(f"services.{name}.config").load(env)
except ModuleNotFoundError:
    pass  # a service without settings of its own
print(json.dumps(unread_settings(env, name)))
"""


@pytest.mark.parametrize("name", SERVICES)
def test_no_service_is_given_a_variable_it_does_not_read(name: str) -> None:
    """The service would warn at every start of a cluster about a variable of its ConfigMap
    (or Secrets) that none of its settings reads; read in a process of its own, as in the
    pod."""
    docs = render("production")
    env = dict(of_kind(docs, "ConfigMap")[object_name(name)]["data"])
    pod = of_kind(docs, "Deployment")[object_name(name)]["spec"]["template"]["spec"]
    env |= {e["name"]: "x" for e in pod["containers"][0]["env"]}
    env |= {
        "TIKET_POSTGRES_URL": "postgresql://tiket:secret@postgres:5432",
        "TIKET_AMQP_URL": "amqp://tiket:secret@rabbitmq:5672/",
        "TIKET_REDIS_URL": "redis://redis:6379/0",
    }
    probe = run(sys.executable, "-c", UNREAD_PROBE, name, json.dumps(env))
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout) == [], probe.stdout


def service_links(services: list[dict]) -> dict[str, str]:
    """The variables the kubelet puts in a pod for every Service of its namespace unless
    the pod says enableServiceLinks: false (docker-links style: tiket-user gives
    TIKET_USER_SERVICE_HOST, TIKET_USER_PORT=tcp://…, …)."""
    links: dict[str, str] = {}
    for service in services:
        prefix = service["metadata"]["name"].upper().replace("-", "_")
        host = "10.96.0.10"
        ports = service["spec"]["ports"]
        links[f"{prefix}_SERVICE_HOST"] = host
        links[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        links[f"{prefix}_PORT"] = f"tcp://{host}:{ports[0]['port']}"
        for p in ports:
            base = f"{prefix}_PORT_{p['port']}_TCP"
            links[f"{prefix}_SERVICE_PORT_{p['name'].upper()}"] = str(p["port"])
            links |= {base: f"tcp://{host}:{p['port']}", f"{base}_PROTO": "tcp"}
            links |= {f"{base}_PORT": str(p["port"]), f"{base}_ADDR": host}
    return links


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_kubernetes_service_links_cannot_break_a_pod_s_configuration(kind: str) -> None:
    """With release `tiket`, the Service tiket-user would give every other pod
    TIKET_USER_PORT=tcp://10.96.0.10:50051 — tiket's own variable for the user service's
    port, which no pod but the user's sets — and every service would refuse to start.
    The environment the kubelet builds (service links unless disabled, then envFrom, then
    env) must load, with each port as configured."""
    docs = render("production")
    configmaps = of_kind(docs, "ConfigMap")
    links = service_links(list(of_kind(docs, "Service").values()))
    secrets = {
        "TIKET_POSTGRES_URL": "postgresql://tiket:secret@postgres:5432",
        "TIKET_AMQP_URL": "amqp://tiket:secret@rabbitmq:5672/",
        "TIKET_REDIS_URL": "redis://redis:6379/0",
    }
    for name, workload in of_kind(docs, kind).items():
        pod = workload["spec"]["template"]["spec"]
        env = {} if pod.get("enableServiceLinks") is False else dict(links)
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                env |= configmaps[source["configMapRef"]["name"]]["data"]
            env |= {
                e["name"]: e.get("value", secrets.get(e["name"], "x")) for e in container["env"]
            }
            settings = load(env)
            assert settings.grpc_ports == {n: ports[0] for n, ports in SERVICE_PORTS.items()}, name


def test_booking_serves_the_payment_gateway_notifications_over_http() -> None:
    """The booking process's HTTP port (Midtrans notifications) is configured, exposed,
    let through the NetworkPolicy and routed by the gateway without retries."""
    docs = render("production")
    obj = object_name("booking")
    http = values()["services"]["booking"]["http"]
    data = of_kind(docs, "ConfigMap")[obj]["data"]
    assert booking_config.load(data).http_port == http["port"]
    pod = of_kind(docs, "Deployment")[obj]["spec"]["template"]["spec"]
    ports = {p["name"]: p["containerPort"] for p in pod["containers"][0]["ports"]}
    assert ports["http"] == http["port"]
    key = next(
        e for e in pod["containers"][0]["env"] if e["name"] == "TIKET_BOOKING_MIDTRANS_SERVER_KEY"
    )
    assert key["valueFrom"]["secretKeyRef"]["optional"] is True  # no gateway: HTTP stays off
    service = of_kind(docs, "Service")[obj]["spec"]["ports"]
    assert {"name": "http", "port": http["port"], "targetPort": "http"}.items() <= next(
        p for p in service if p["name"] == "http"
    ).items()
    ingress = of_kind(docs, "NetworkPolicy")[obj]["spec"]["ingress"][0]["ports"]
    assert {"port": "http", "protocol": "TCP"} in ingress
    route = next(
        r
        for r in of_kind(docs, "VirtualService")["tiket"]["spec"]["http"]
        if r["name"] == "booking-http"
    )
    assert route["match"] == [{"uri": {"prefix": "/payments/midtrans/"}}]
    assert route["route"][0]["destination"]["port"] == {"number": http["port"]}
    assert route["retries"] == {"attempts": 0}


def test_migration_jobs_migrate_with_their_own_settings() -> None:
    """Each hook Job's command with its environment (the database prefix made unique and
    the Secret's URL this machine's) creates and migrates its service's database."""
    prefix = f"{unique_name('tiket_job')}_"
    jobs = of_kind(render("production"), "Job")
    try:
        for name in SERVICES:
            pod = jobs[object_name(f"migrate-{name}")]["spec"]["template"]["spec"]
            (container,) = pod["containers"]
            env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
            assert env["TIKET_ENV"] == "production"
            env |= {"TIKET_DB_PREFIX": prefix, "TIKET_POSTGRES_URL": POSTGRES_URL}
            done = tiket(*container["command"][1:], env=env)
            assert done.returncode == 0, done.stderr
            assert done.stdout.startswith(f"{name}: {prefix}{name}: "), done.stdout
    finally:
        for name in SERVICES:
            drop_database(f"{POSTGRES_URL.rstrip('/')}/{prefix}{name}")


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_behind_istio_the_sidecar_starts_first_and_outlives_the_drain(value_set: str) -> None:
    """Each service connects to PostgreSQL, RabbitMQ and Redis through its sidecar at start,
    and still writes through it while it drains after the preStop sleep: the sidecar must
    be up before the service and stay until the service's connections are closed."""
    docs = render(value_set)
    istio = any(doc["kind"] == "PeerAuthentication" for doc in docs)  # istio.enabled
    for name, deployment in of_kind(docs, "Deployment").items():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        if not istio:
            assert "proxy.istio.io/config" not in annotations, name
            continue
        proxy = yaml.safe_load(annotations["proxy.istio.io/config"])
        assert proxy["holdApplicationUntilProxyStarts"] is True, name
        assert proxy["proxyMetadata"]["EXIT_ON_ZERO_ACTIVE_CONNECTIONS"] == "true", name


def test_production_values_run_more_replicas_behind_istio() -> None:
    docs = render("production")
    for hpa in of_kind(docs, "HorizontalPodAutoscaler").values():
        assert hpa["spec"]["minReplicas"] >= 3
    for pdb in of_kind(docs, "PodDisruptionBudget").values():
        assert pdb["spec"]["minAvailable"] >= 2
    for peer in of_kind(docs, "PeerAuthentication").values():
        assert peer["spec"]["mtls"] == {"mode": "STRICT"}
    assert len(of_kind(docs, "PeerAuthentication")) == len(SERVICES)
    assert not any(d["apiVersion"].startswith("networking.istio.io") for d in render("default"))


def test_production_scales_on_request_rate_too_through_the_adapter_rule() -> None:
    """Seed 001: HPA on CPU 70 % and request rate; the rate is a per-pod metric that
    prometheus-adapter serves from a series every service exports."""
    adapter = yaml.safe_load((CHART / "files" / "prometheus-adapter-rules.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    assert set(selectors(rule["seriesQuery"])) <= exported_series()
    for hpa in of_kind(render("production"), "HorizontalPodAutoscaler").values():
        pods = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
        assert [p["metric"]["name"] for p in pods] == [rule["name"]["as"]]
        assert pods[0]["target"] == {"type": "AverageValue", "averageValue": "100"}
    for hpa in of_kind(render("default"), "HorizontalPodAutoscaler").values():
        assert {m["type"] for m in hpa["spec"]["metrics"]} == {"Resource"}


def test_network_policy_denies_by_default_and_opens_grpc_per_service() -> None:
    docs = render("default")
    policies = of_kind(docs, "NetworkPolicy")
    deny = policies["tiket-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny
    for name in SERVICES:
        ingress = policies[object_name(name)]["spec"]["ingress"]
        assert {"port": "grpc", "protocol": "TCP"} in ingress[0]["ports"]


def _readme_value_keys() -> set[str]:
    """The values the README's Deployment table documents (first column, dotted paths; a
    bare name continues the first path's parent: `migrations.enabled`, `backoffLimit`)."""
    readme = (CHART.parents[1] / "README.md").read_text()
    section = readme.split("## Deployment\n", 1)[1].split("\n## ", 1)[0]
    keys = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        names = re.findall(r"`([A-Za-z.]+)`", line.split("|")[1])
        parent = names[0].rsplit(".", 1)[0] if "." in names[0] else ""
        keys |= {name if "." in name or not parent else f"{parent}.{name}" for name in names}
    return keys


def egress_ports(docs) -> set[int]:
    egress = of_kind(docs, "NetworkPolicy")[f"{RELEASE}-egress"]["spec"]["egress"]
    return {port["port"] for rule in egress for port in rule.get("ports", [])}


@pytest.mark.parametrize(
    ("endpoint", "port"),
    [("http://otel-collector.monitoring:4317", 4317), ("http://otel:55681", 55681)],
)
def test_the_pods_may_reach_the_trace_collector_they_are_given(endpoint: str, port: int) -> None:
    """With an OTLP endpoint the egress policy opens its port: it used to allow only the
    databases, DNS and HTTPS, so every span was dropped at the pod's edge."""
    assert port in egress_ports(
        render("default", "--set", f"config.tracing.otlpEndpoint={endpoint}")
    )
    assert port not in egress_ports(render("default"))


@pytest.mark.parametrize(("port", "expected"), [(None, 25), ("587", 587)])
def test_a_notification_service_given_an_smtp_relay_may_reach_it(port, expected) -> None:
    """Email configured through the notification service's env (README) was blocked by the
    egress policy, which knew nothing of SMTP: no rider was ever mailed in a cluster."""
    flags = ["--set", "services.notification.env.TIKET_NOTIFICATION_SMTP_HOST=smtp.example.com"]
    if port:
        flags += ["--set-string", f"services.notification.env.TIKET_NOTIFICATION_SMTP_PORT={port}"]
    assert expected in egress_ports(render("default", *flags))
    assert expected not in egress_ports(render("default"))


@pytest.mark.parametrize(
    ("url", "expected"),
    [("http://push.internal/hook", 80), ("https://sms.example.com:8443/x", 8443)],
)
def test_a_notification_webhook_s_port_is_opened(url: str, expected: int) -> None:
    flags = ["--set", f"services.notification.env.TIKET_NOTIFICATION_WEBHOOK_URL={url}"]
    assert expected in egress_ports(render("default", *flags))
    assert expected not in egress_ports(render("default"))


def test_an_identity_provider_on_a_port_of_its_own_may_be_reached() -> None:
    """Keycloak at :8443: without its port every token check failed for want of its keys."""
    jwks = "https://id.example.com:8443/realms/tiket/protocol/openid-connect/certs"
    assert 8443 in egress_ports(render("default", "--set", f"auth.jwks={jwks}"))
    assert 8443 not in egress_ports(render("default"))


def test_readme_values_table_matches_values_yaml() -> None:
    chart = values()
    documented = _readme_value_keys()

    def resolves(path: str) -> bool:
        node: object = chart
        for part in path.split("."):
            if not isinstance(node, dict) or (part not in node and part != "NAME"):
                return False
            node = node[part] if part != "NAME" else next(iter(node.values()))
        return True

    assert not {key for key in documented if not resolves(key)}, "documented, not in values.yaml"
    missing = {
        f"{top}.{key}"
        for top, block in chart.items()
        if isinstance(block, dict) and top not in documented and top != "services"
        for key in block
        if f"{top}.{key}" not in documented
    } | {
        top
        for top in chart
        if top not in documented and not any(d.startswith(f"{top}.") for d in documented)
    }
    assert not missing, f"values.yaml keys the README's table leaves out: {sorted(missing)}"


def test_every_alert_reads_series_the_services_export() -> None:
    (rule,) = of_kind(render("default"), "PrometheusRule").values()
    exprs = [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]
    used = {name for expr in exprs for name in selectors(expr)}
    assert len(used) >= 4, used
    assert {"tiket_outbox_oldest_unsent_seconds", "tiket_dlq_messages"} <= used
    assert not used - exported_series(), f"not exported: {used - exported_series()}"
