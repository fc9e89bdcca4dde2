"""The chart's dashboard and alert rules query metrics the code really exports.

A renamed metric would leave a panel empty or an alert silent without any error; these
checks tie every series name in charts/konfer to the module that defines it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, ProcessCollector

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "konfer"
SUFFIXES = ("_bucket", "_count", "_sum", "_total")
PROMQL_WORDS = {
    "sum", "by", "rate", "count", "histogram_quantile", "topk", "max", "or", "and", "le",
    "label_values", "irate", "increase", "avg", "without", "on", "ignoring",
}  # fmt: skip


def series_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (identifiers not inside {…} or (…) clauses)."""
    stripped = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    stripped = re.sub(r"\bby\s*\([^)]*\)", "", stripped)  # grouping labels
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)  # ranges
    stripped = re.sub(r'"[^"]*"', "", stripped)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", stripped))
    return {n for n in names if n not in PROMQL_WORDS and not n.startswith("__")}


def exported_names() -> set[str]:
    """Names defined by our metrics modules, by KServe's model server and by the process
    collector the api registers."""
    sources = [
        ROOT / "api" / "konfer" / "api" / "metrics.py",
        ROOT / "sfu" / "konfer" / "sfu" / "metrics.py",
        ROOT / "sfu" / "konfer" / "sfu" / "recorder" / "metrics.py",
        ROOT / "ai" / "konfer" / "ai" / "metrics.py",
    ]
    names: set[str] = set()
    for source in sources:
        names |= set(re.findall(r'"((?:konfer_|http_)[a-z0-9_]+)"', source.read_text()))
    kserve = pytest.importorskip("kserve.metrics")
    for attr in ("PREDICT_HIST_TIME", "PRE_HIST_TIME", "POST_HIST_TIME"):
        names.add(getattr(kserve, attr)._name)
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    names |= {m.name for m in registry.collect()}
    names.add("up")  # Prometheus' own per-target series
    return names


def known(name: str, exported: set[str]) -> bool:
    base = name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            base = name.removesuffix(suffix)
            break
    return name in exported or base in exported


def test_dashboard_panels_query_exported_metrics() -> None:
    dashboard = json.loads((CHART / "files" / "dashboards" / "konfer.json").read_text())
    exported = exported_names()
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in series_names(target["expr"])
    }
    assert "konfer_sfu_peers" in queried
    unknown = sorted(n for n in queried if not known(n, exported))
    assert unknown == [], f"dashboard queries metrics nothing exports: {unknown}"


def test_alert_rules_query_exported_metrics() -> None:
    rules = (CHART / "templates" / "_rules.tpl").read_text()
    exprs = re.findall(r"expr: \|-\n((?:\s{10}.*\n)+)|expr: (.*)\n", rules)
    exported = exported_names()
    queried: set[str] = set()
    for block, line in exprs:
        text = re.sub(r"\{\{[^}]*\}\}", "", block or line)
        queried |= series_names(text)
    assert {"up", "http_requests_total", "process_resident_memory_bytes"} <= queried
    unknown = sorted(n for n in queried if not known(n, exported))
    assert unknown == [], f"alerts query metrics nothing exports: {unknown}"


def test_series_names_reads_names_not_labels_or_functions() -> None:
    expr = 'sum by (le, endpoint) (rate(http_request_duration_seconds_bucket{a="b"}[5m]))'
    assert series_names(expr) == {"http_request_duration_seconds_bucket"}
