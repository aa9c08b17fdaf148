"""The Grafana dashboard shipped in the chart (files/dashboard.json): every PromQL expression
selects only series the services export, each filtered to the dashboard's namespace, the
panels issue 17 asks for are there, and the chart renders it as a ConfigMap the Grafana
sidecar loads (and not when switched off)."""

from __future__ import annotations

import json
import re

import pytest

from tests.deploy.chart import CHART, exported_series, of_kind, render, selectors

DASHBOARD = json.loads((CHART / "files" / "dashboard.json").read_text())
NAMESPACE_MATCHER = 'namespace="$namespace"'


def panels() -> list[dict]:
    return [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]


def expressions() -> list[str]:
    return [target["expr"] for panel in panels() for target in panel["targets"]]


def bare_names(expr: str) -> list[str]:
    """Names in `expr` that are neither a selector with matchers, a function, a label of a
    `by (…)` clause nor a range: a metric selected without matchers would be one."""
    rest = re.sub(r"[a-zA-Z_:][\w:]*\{[^}]*\}", "", expr)  # selectors
    rest = re.sub(r"\[[^\]]*\]", "", rest)  # ranges
    rest = re.sub(r"\b(?:by|without)\s*\([^)]*\)", "", rest)  # grouping labels
    return [name for name in re.findall(r"\b[a-zA-Z_:][\w:]*\b(?!\s*\()", rest)]


@pytest.mark.parametrize("expr", expressions())
def test_every_expression_selects_exported_series_of_the_namespace(expr: str) -> None:
    used = selectors(expr)
    assert used, expr
    assert not used - exported_series(), f"not exported: {used - exported_series()}"
    assert expr.count("{") == expr.count(NAMESPACE_MATCHER), f"a selector misses it: {expr}"
    assert bare_names(expr) == [], expr


def test_the_namespace_variable_reads_an_exported_series() -> None:
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    (metric,) = re.findall(
        r"label_values\((\w+), namespace\)", variables["namespace"]["definition"]
    )
    assert metric in exported_series()


def test_the_panels_issue_17_asks_for() -> None:
    used = {name for expr in expressions() for name in selectors(expr)}
    assert {
        "grpc_server_handled_total",  # RPS and error rate per service
        "grpc_server_handling_seconds_bucket",  # p95 per service
        "tiket_db_pool_in_use",
        "tiket_db_pool_max",
        "tiket_db_pool_waiting",
        "tiket_outbox_unsent",
        "tiket_outbox_oldest_unsent_seconds",
        "tiket_consumer_lag_messages",
        "tiket_dlq_messages",
        "tiket_taps_total",
        "tiket_refusals_total",
        "tiket_outbox_events_total",  # bookings by status: the booking.* events
    } <= used
    assert any("booking" in expr and "tiket_outbox_events_total" in expr for expr in expressions())
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_the_chart_ships_it_for_the_grafana_sidecar() -> None:
    (config_map,) = (
        doc
        for doc in of_kind(render("production"), "ConfigMap").values()
        if doc["metadata"]["labels"].get("grafana_dashboard") == "1"
    )
    assert json.loads(config_map["data"]["tiket.json"]) == DASHBOARD


def test_it_can_be_switched_off() -> None:
    docs = render("default", "--set", "metrics.grafanaDashboard.enabled=false")
    labelled = [
        doc
        for doc in of_kind(docs, "ConfigMap").values()
        if "grafana_dashboard" in doc["metadata"]["labels"]
    ]
    assert labelled == []
