"""The ``control_plane`` fixture every tests/k8s module runs against.

One control plane per test session (starting one costs seconds; see tests/k8s/cluster.py):
by default the Go-built, kubelet-less one on loopback with kwok fake nodes; with
``KONFER_TEST_CLUSTER=kind`` a kind cluster through pytest-kind (needs Docker, so never on the
machines that run ``make test``). When the binaries are not built the tests skip, unless
``KONFER_TEST_REQUIRE_SERVICES=1`` (as under ``make test``), where that is a failure.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from konfer.core.settings import Settings
from tests.conftest import SettingsFactory
from tests.k8s.cluster import (
    ROOT,
    Binaries,
    ControlPlane,
    ControlPlaneUnavailable,
    kind_control_plane,
    start_control_plane,
)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """Admin kubeconfig, server URL, kubectl()/helm, user_kubeconfig() for RBAC tests.

    Tests share it, so each works in its own namespace (or names its objects uniquely).
    """
    if os.environ.get("KONFER_TEST_CLUSTER") == "kind":
        with kind_control_plane() as kind:
            yield kind
        return
    try:
        binaries = Binaries.locate()
    except ControlPlaneUnavailable as missing:
        if os.environ.get("KONFER_TEST_REQUIRE_SERVICES"):
            pytest.fail(str(missing))
        pytest.skip(str(missing))
    cp = start_control_plane(binaries)
    try:
        yield cp
    finally:
        cp.stop()


API_RBAC = ROOT / "operator" / "rbac" / "api.yaml"


@pytest.fixture
def ns(control_plane: ControlPlane, operator: object) -> Iterator[str]:
    """A namespace of its own for one test, with the module's operator running (each
    module that asks for it brings ``operator`` through ``operator_fixture``)."""
    name = control_plane.create_namespace(f"t-{uuid.uuid4().hex[:8]}")
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
def api_kubeconfig(control_plane: ControlPlane, ns: str) -> Path:
    """The api's own identity: operator/rbac/api.yaml bound in the test's namespace."""
    cp = control_plane
    cp.kubectl("apply", "-f", str(API_RBAC))
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "konfer-api", "namespace": ns},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "konfer-api",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "konfer-api"}
        ],
    }
    cp.kubectl("apply", "-f", "-", input=json.dumps(binding))
    return cp.user_kubeconfig("konfer-api")


@pytest.fixture
def api_settings(make_settings: SettingsFactory, api_kubeconfig: Path, ns: str) -> SettingsFactory:
    """Settings of an api in the kubernetes runtime, as itself (``api_kubeconfig``) in the
    test's namespace; the SFU gets 30 s to be ready unless a test says otherwise."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"kubernetes_sfu_ready_timeout_seconds": 30, **overrides}
        return make_settings(
            runtime="kubernetes", kubeconfig=api_kubeconfig, kubernetes_namespace=ns, **values
        )

    return make
