"""The Helm chart rendered by the real Helm binary, and the tools that check it."""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "tiket"
BIN = Path(sys.executable).parent
NAMESPACE = "tiket"
RELEASE = "tiket"
# The value sets the chart is tested with: its defaults, and the production file.
VALUE_SETS = {"default": (), "production": ("-f", str(CHART / "values-production.yaml"))}
# API groups of custom resources: no Kubernetes schema knows them (see test_chart_crds.py).
CRD_GROUPS = ("networking.istio.io", "security.istio.io", "monitoring.coreos.com")

Docs = tuple[dict, ...]


def tool(name: str) -> str:
    """The path of a tool the dev install puts beside the virtualenv's Python."""
    path = BIN / name
    assert path.exists(), f"{path} is missing: `make setup` installs it"
    return str(path)


def run(*command: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=120, check=False
    )


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return run(tool("helm"), *args)


def template(values: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart with value set `values` and extra flags, unparsed."""
    return helm(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *VALUE_SETS[values], *extra
    )


@cache
def render(values: str, *extra: str) -> Docs:
    """`helm template` of the chart with value set `values` (and extra flags), parsed."""
    done = template(values, *extra)
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def is_custom(doc: dict) -> bool:
    return doc["apiVersion"].split("/")[0] in CRD_GROUPS


def of_kind(docs: Docs, kind: str) -> dict[str, dict]:
    """The objects of `kind`, by name."""
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def object_name(service: str) -> str:
    """The name of a service's objects for the release `tiket`."""
    return f"{RELEASE}-{service}"


def values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a matchLabels `selector` selects an object with `labels`."""
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def exported_series() -> set[str]:
    """The series names the services export: the metrics of every module that defines one
    (imported here, which registers them), as Prometheus names their series."""
    import libs.events.gauges
    import libs.events.relay
    import libs.server.metrics  # noqa: F401
    import services.fare.cache
    import services.journey.api
    import services.notification.app
    import services.notification.delivery  # noqa: F401

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {
        metric.name + suffix
        for metric in REGISTRY.collect()
        for suffix in suffixes.get(metric.type, ())
    }


def selectors(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: every selector has label matchers
    (`name{…}`), which tests assert separately."""
    return set(re.findall(r"\b([a-zA-Z_:][\w:]*)\{", expr))
