"""The ``control_plane`` fixture every tests/k8s module runs against.

One control plane per test session (starting one costs seconds; see tests/k8s/cluster.py):
by default the Go-built, kubelet-less one on loopback with kwok fake nodes; with
``KONFER_TEST_CLUSTER=kind`` a kind cluster through pytest-kind (needs Docker, so never on the
machines that run ``make test``). When the binaries are not built the tests skip, unless
``KONFER_TEST_REQUIRE_SERVICES=1`` (as under ``make test``), where that is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.k8s.cluster import (
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
