"""``konfer operator`` as a child process under the least-privilege RBAC of
operator/rbac/operator.yaml, for tests/k8s and bench/operator.py.

The operator authenticates with a client certificate for the user ``konfer-operator``
(``ControlPlane.user_kubeconfig``) bound to the ClusterRole and Role of that file, never
as cluster admin.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from konfer.core.process import die_with_parent
from tests.k8s.cluster import ROOT, ControlPlane, free_port

RBAC = ROOT / "operator" / "rbac" / "operator.yaml"
OPERATOR_USER = "konfer-operator"
LEASE_NAMESPACE = "konfer-system"


def grant_operator_rbac(cp: ControlPlane, lease_namespace: str = LEASE_NAMESPACE) -> Path:
    """Applies operator.yaml, binds it to the operator's user, returns its kubeconfig."""
    if cp.kubectl("get", "namespace", lease_namespace, check=False).returncode != 0:
        cp.create_namespace(lease_namespace)
    cp.kubectl("apply", "-n", lease_namespace, "-f", str(RBAC))
    bindings = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "konfer-operator-test"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "konfer-operator",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "konfer-operator-test", "namespace": lease_namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "konfer-operator-leader-election",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}
            ],
        },
    ]
    cp.kubectl("apply", "-f", "-", input="\n".join(json.dumps(b) for b in bindings))
    return cp.user_kubeconfig(OPERATOR_USER)


@dataclass
class OperatorProcess:
    """One ``konfer operator`` process; ``restart`` kills it hard (SIGKILL) first."""

    cp: ControlPlane
    kubeconfig: Path
    log: Path
    args: list[str] = field(default_factory=lambda: ["--standalone"])
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    health_port: int = 0
    metrics_port: int = 0

    def start(self, timeout: float = 60, *, wait_healthy: bool = True) -> None:
        """Start it; wait for kopf's liveness endpoint (only the leader serves one)."""
        self.health_port, self.metrics_port = free_port(), free_port()
        env = {
            **self.cp.env,
            "KONFER_KUBECONFIG": str(self.kubeconfig),
            "KONFER_JSON_LOGS": "false",
            "KONFER_LOG_LEVEL": "INFO",
            "KONFER_OPERATOR_HEALTH_PORT": str(self.health_port),
            "KONFER_OPERATOR_METRICS_PORT": str(self.metrics_port),
            "KONFER_OPERATOR_LEASE_NAMESPACE": LEASE_NAMESPACE,
            **self.env,
        }
        env.pop("KUBECONFIG", None)  # only KONFER_KUBECONFIG: never the admin's
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "konfer.cli.main", "operator", *self.args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                preexec_fn=lambda: die_with_parent(signal.SIGKILL),
            )
        deadline = time.monotonic() + timeout
        ready = self.healthy if wait_healthy else lambda: bool(self.metrics())
        while not ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the operator did not start:\n{self.tail()}")
            time.sleep(0.2)

    def healthy(self) -> bool:
        return self._get(self.health_port, "/healthz") is not None

    def metrics(self) -> str:
        return self._get(self.metrics_port, "/metrics") or ""

    def leading(self) -> bool:
        return "konfer_operator_leader 1.0" in self.metrics()

    def _get(self, port: int, path: str) -> str | None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                return str(r.read().decode()) if r.status == 200 else None
        except OSError:
            return None

    def tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    def rss_bytes(self) -> int:
        assert self.proc is not None
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0


@pytest.fixture(scope="module", name="operator")
def operator_fixture(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """``konfer operator --standalone`` for one test module, under operator.yaml's RBAC."""
    kubeconfig = grant_operator_rbac(control_plane)
    proc = OperatorProcess(
        control_plane,
        kubeconfig,
        tmp_path_factory.mktemp("operator") / "operator.log",
        env={
            "KONFER_OPERATOR_RECORDER_BACKOFF_LIMIT": "0",
            "KONFER_OPERATOR_RECORDER_POD_ANNOTATIONS": json.dumps(
                {"pod-complete.stage.kwok.x-k8s.io/delay": "1h"}
            ),
            "KONFER_OPERATOR_RESYNC_SECONDS": "0.5",
        },
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        print(proc.tail())
