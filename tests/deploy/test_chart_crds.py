"""The chart's custom resources (Istio, prometheus-operator) against the cloudcoil pydantic
models of their CRDs: each validates, and dumping the model gives back exactly the input, so
no field is unknown (pydantic drops unknown fields) or coerced. Then what the Istio
AuthorizationPolicies let through, evaluated the way Istio does for ALLOW policies."""

from __future__ import annotations

import copy
import fnmatch

import pytest
from cloudcoil.models.istio.networking import v1 as istio_networking
from cloudcoil.models.istio.security import v1 as istio_security
from cloudcoil.models.prometheus_operator import v1 as prometheus
from pydantic import BaseModel

from services import registry
from tests.deploy.chart import VALUE_SETS, is_custom, object_name, of_kind, render

MODULES = {
    "networking.istio.io/v1": istio_networking,
    "security.istio.io/v1": istio_security,
    "monitoring.coreos.com/v1": prometheus,
}
ISTIO_KINDS = {
    "Gateway",
    "VirtualService",
    "DestinationRule",
    "PeerAuthentication",
    "AuthorizationPolicy",
    "RequestAuthentication",
}
GATEWAY = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"


def model(doc: dict) -> type[BaseModel]:
    module = MODULES.get(doc["apiVersion"])
    assert module is not None, f"no model for {doc['apiVersion']}"
    return getattr(module, doc["kind"])


def round_trip(doc: dict) -> dict:
    """`doc` validated by its model (pydantic.ValidationError when invalid) and dumped."""
    validated = model(doc).model_validate(doc)
    return validated.model_dump(by_alias=True, exclude_unset=True, mode="json")


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_custom_resources_match_their_models_with_no_unknown_field(value_set: str) -> None:
    custom = [doc for doc in render(value_set) if is_custom(doc)]
    assert {"ServiceMonitor", "PrometheusRule"} <= {doc["kind"] for doc in custom}
    for doc in custom:
        assert round_trip(doc) == doc, f"{doc['kind']}/{doc['metadata']['name']}"


def test_production_renders_every_istio_resource() -> None:
    kinds = {doc["kind"] for doc in render("production") if is_custom(doc)}
    assert kinds >= ISTIO_KINDS


def test_an_unknown_field_is_caught() -> None:
    """The comparison above can fail: a misspelt outlier-detection field vanishes."""
    rule = copy.deepcopy(next(iter(of_kind(render("production"), "DestinationRule").values())))
    outliers = rule["spec"]["trafficPolicy"]["outlierDetection"]
    outliers["consecutive5xx"] = outliers.pop("consecutive5xxErrors")
    assert round_trip(rule) != rule


# --- AuthorizationPolicy semantics -------------------------------------------------------


def _matches(patterns: list[str], value: str) -> bool:
    """Istio's string match: exact, `prefix*`, `*suffix` or `*`."""
    return any(fnmatch.fnmatchcase(value, p) if "*" in p else p == value for p in patterns)


def _rule_allows(rule: dict, principal: str, path: str, port: int, method: str) -> bool:
    sources = [f["source"] for f in rule.get("from", [])]
    operations = [t["operation"] for t in rule.get("to", [])]
    source_ok = not sources or any(_matches(s.get("principals", ["*"]), principal) for s in sources)
    operation_ok = not operations or any(
        _matches(o.get("paths", ["*"]), path)
        and _matches(o.get("ports", ["*"]), str(port))
        and _matches(o.get("methods", ["*"]), method)
        for o in operations
    )
    return source_ok and operation_ok


def allowed(
    service: str, caller: str, path: str, port_name: str = "grpc", method: str = "POST"
) -> bool:
    """Whether the production chart lets principal `caller` send `method path` to
    `service`'s port `port_name` (ALLOW policies: some rule of the workload's matches)."""
    policy = of_kind(render("production"), "AuthorizationPolicy")[object_name(service)]
    assert policy["spec"]["action"] == "ALLOW"
    port = container_port(service, port_name)
    return any(_rule_allows(r, caller, path, port, method) for r in policy["spec"]["rules"])


def container_port(service: str, port_name: str) -> int:
    deployment = of_kind(render("production"), "Deployment")[object_name(service)]
    ports = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    return next(p["containerPort"] for p in ports if p["name"] == port_name)


def principal(service: str) -> str:
    return f"cluster.local/ns/tiket/sa/{object_name(service)}"


def test_only_the_named_callers_may_place_holds() -> None:
    place_hold = "/tiket.user.v1.UserService/PlaceHold"
    assert allowed("user", principal("journey"), place_hold)
    assert allowed("user", principal("booking"), place_hold)
    assert not allowed("user", principal("notification"), place_hold)
    assert not allowed("user", principal("analytics"), place_hold)


def test_the_mesh_reads_what_every_service_may_read() -> None:
    assert allowed("fare", principal("journey"), "/tiket.fare.v1.FareService/GetFare")
    assert allowed("user", principal("notification"), "/tiket.user.v1.UserService/GetUser")


def test_the_gateway_reaches_edge_rpcs_and_health_only() -> None:
    assert allowed("user", GATEWAY, "/tiket.user.v1.UserService/GetUser")
    assert allowed("journey", GATEWAY, "/grpc.health.v1.Health/Check")
    assert not allowed(
        "journey", GATEWAY, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
    )


@pytest.mark.parametrize("name", list(registry.SERVICES))
def test_strangers_reach_no_rpc(name: str) -> None:
    stranger = "cluster.local/ns/elsewhere/sa/default"
    grpc_service = registry.grpc_service_names(name)[0]
    assert not allowed(name, stranger, f"/{grpc_service}/Anything")
    assert not allowed(name, stranger, "/grpc.health.v1.Health/Check")


def test_only_the_gateway_posts_payment_notifications() -> None:
    notification = "/payments/midtrans/notification"
    assert allowed("booking", GATEWAY, notification, "http")
    assert not allowed("booking", GATEWAY, notification, "http", method="GET")
    assert not allowed("booking", GATEWAY, "/admin", "http")
    assert not allowed("booking", principal("notification"), notification, "http")
