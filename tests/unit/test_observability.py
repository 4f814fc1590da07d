"""The Grafana dashboard and the alerting rules name only metrics (and label values) svcreg
really exports: a renamed metric fails here, not silently on someone's dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, generate_latest

from svcreg.discovery.index import Index
from svcreg.discovery.indexmetrics import IndexCollector
from svcreg.operator.writer import WriteOutcome
from svcreg.telemetry.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "svcreg-dashboard.json"
ALERTS = ROOT / "deploy" / "helm" / "svcreg" / "files" / "svcreg-alerts.yaml"


def exported() -> set[str]:
    """Every sample name svcreg's /metrics can carry (histograms' _bucket/_sum/_count too)."""
    metrics = Metrics()
    index = Index()
    index.observe(
        "ADDED",
        {"metadata": {"name": "x", "namespace": "a"}, "spec": {"endpoint": "http://x:80"}, "status": {}},
    )
    registry = CollectorRegistry()
    registry.register(IndexCollector(index, per_service=True))
    text = generate_latest(metrics.registry).decode() + generate_latest(registry).decode()
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE"):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            if kind == "counter":
                names.add(f"{name}_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def _named(expression: str) -> set[str]:
    return set(re.findall(r"\bsvcreg_[a-z_]+", expression))


def test_the_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(expressions) >= 14
    known = exported()
    for expression in expressions:
        assert _named(expression) <= known, (expression, _named(expression) - known)


def test_the_alerts_name_only_exported_metrics_and_label_values() -> None:
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} >= {
        "SvcregProberWedged",
        "SvcregSchedulerLagging",
        "SvcregPartitionSuspected",
        "SvcregStatusWritesFailing",
        "SvcregDiscoveryErrors",
        "SvcregServiceMostlyUnhealthy",
    }
    known = exported()
    for rule in rules:
        assert _named(rule["expr"]) <= known, (rule["alert"], _named(rule["expr"]) - known)
    writes = next(r for r in rules if r["alert"] == "SvcregStatusWritesFailing")["expr"]
    assert f'result="{WriteOutcome.FAILED}"' in writes
