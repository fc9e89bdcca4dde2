"""Rendering the Helm chart (charts/konfer) for the chart tests.

helm is the pinned binary scripts/build-k8s.sh builds (scripts/versions.env HELM_VERSION);
promtool comes from Debian's ``prometheus`` package; the Prometheus Operator's CRDs are
copied out of the Go module cache by scripts/install-test-deps.sh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.cluster import cache_dir, read_versions

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "konfer"
VALUES_FILES = {
    "default": None,
    "production": CHART / "values-production.yaml",
    "minimal": CHART / "values-minimal.yaml",
}
KUBE_VERSION = "1.32"
MONITORING_API = "monitoring.coreos.com/v1/ServiceMonitor"


def _missing(what: str) -> None:
    message = f"{what} is missing: run scripts/install-test-deps.sh"
    if os.environ.get("KONFER_TEST_REQUIRE_SERVICES"):
        pytest.fail(message)
    pytest.skip(message)


def helm_binary() -> Path:
    helm = cache_dir() / "bin" / f"helm-{read_versions()['HELM_VERSION']}" / "helm"
    if not helm.exists():
        _missing(str(helm))
    return helm


def promtool_binary() -> Path:
    found = shutil.which("promtool")
    if found is None:
        _missing("promtool (Debian package prometheus)")
    return Path(str(found))


def monitoring_crds() -> list[Path]:
    version = read_versions()["PROMETHEUS_OPERATOR_VERSION"]
    folder = cache_dir() / "crds" / f"prometheus-operator-{version}"
    crds = sorted(folder.glob("monitoring.coreos.com_*.yaml"))
    if len(crds) != 3:
        _missing(f"the Prometheus Operator CRDs in {folder}")
    return crds


def helm(
    *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(helm_binary()), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stderr}")
    return done


def values_args(name: str, sets: Sequence[str] = ()) -> list[str]:
    path = VALUES_FILES[name]
    args = ["-f", str(path)] if path is not None else []
    for item in sets:
        args += ["--set", item]
    return args


def template(
    name: str = "default",
    sets: Sequence[str] = (),
    *,
    release: str = "konfer",
    namespace: str = "konfer",
    monitoring: bool = True,
) -> list[dict[str, Any]]:
    """The chart rendered for Kubernetes 1.32, as parsed objects (empty documents dropped)."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    args += ["--kube-version", KUBE_VERSION, "--include-crds"]
    if monitoring:
        args += ["--api-versions", MONITORING_API]
    rendered = helm(*args, *values_args(name, sets)).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def prometheus_rule_groups(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (rule,) = by_kind(objects, "PrometheusRule")
    spec: dict[str, Any] = rule["spec"]
    return spec
