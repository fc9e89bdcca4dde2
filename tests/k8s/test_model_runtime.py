"""The api's model runtime in Kubernetes (``KONFER_RUNTIME=kubernetes``) against the control
plane, with the operator reconciling and the api under operator/rbac/api.yaml: loading a
model creates its InferenceModel, the InferenceService's pods are the nodes every replica
lists, health checks really probe the pod, unloading deletes or scales down.

KServe's controller is not installed, so the tests create the predictor pods it would make
(labelled ``serving.kserve.io/inferenceservice``); kwok runs them. They use the host network
so their address is 127.0.0.1 and a free port nobody listens on: a probe is refused at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from konfer.core.process import die_with_parent
from tests.conftest import SettingsFactory
from tests.helpers import assert_error
from tests.k8s.cluster import ControlPlane, free_port
from tests.k8s.objects import eventually, get
from tests.k8s.operator_proc import operator_fixture

pytestmark = pytest.mark.k8s

__all__ = ["operator_fixture"]

ISVC = "inferenceservices.serving.kserve.io"
TEXT = (
    "The release ships on Monday. The team fixed the login bug. "
    "Marketing prepares the announcement. Support reviews the open tickets."
)


async def predictor_pod(
    cp: ControlPlane, ns: str, model: str, name: str, port: int, *, ready: bool = True
) -> None:
    """A pod as KServe's controller would make for the model's InferenceService."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {
                "serving.kserve.io/inferenceservice": model,
                "component": "predictor",
                "konfer.io/inference-model": model,
            },
            # kwok keeps an unready pod Pending (no IP) for the test's lifetime.
            "annotations": {} if ready else {"pod-ready.stage.kwok.x-k8s.io/delay": "1h"},
        },
        "spec": {
            "hostNetwork": True,
            "containers": [
                {
                    "name": "kserve-container",
                    "image": "konfer/model-server:test",
                    "ports": [{"containerPort": port, "protocol": "TCP"}],
                }
            ],
        },
    }
    await asyncio.to_thread(cp.kubectl, "apply", "-n", ns, "-f", "-", input=json.dumps(pod))


def nodes_by_id(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["node_id"]: n for n in body["data"]["nodes"]}


async def test_loading_a_model_creates_its_inference_model_and_its_pods_become_nodes(
    control_plane: ControlPlane,
    ns: str,
    api_settings: SettingsFactory,
    open_client: Callable[..., Any],
) -> None:
    cp = control_plane
    settings = api_settings(
        ai_health_interval_seconds=0.3,
        ai_server_start_timeout_seconds=30,
    )
    async with open_client(settings) as api, open_client(settings) as other:
        admin = (await api.make_admin())["headers"]
        user = (await other.signup())["headers"]
        r = await api.get("/api/v1/models", headers=admin)
        assert r.status_code == 200, r.text
        models = {m["model_id"]: m for m in r.json()["data"]["models"]}
        assert models["textrank"]["status"] == "unloaded"
        assert "whisper-tiny-en" in models  # in a cluster a model's id is an object name

        # No server yet: the AI route says how to deploy one.
        r = await api.post("/api/v1/ai/summarize", json={"text": TEXT}, headers=admin)
        error = assert_error(r, 503, "MODEL_NOT_READY")
        assert "InferenceModel" in error["message"]
        assert "POST /api/v1/models/{model_id}/load" in error["message"]

        load = asyncio.create_task(api.post("/api/v1/models/textrank/load", headers=admin))
        model = await eventually(lambda: get(cp, ns, "inferencemodel", "textrank"), "the model")
        assert model["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "konfer-api"
        assert model["spec"]["task"] == "summarization"
        assert model["spec"]["runtime"] == "builtin"
        assert model["spec"]["storageUri"] == "textrank"
        assert model["spec"]["minReplicas"] == 1
        isvc = await eventually(lambda: get(cp, ns, ISVC, "textrank"), "the InferenceService")
        assert isvc["spec"]["predictor"]["minReplicas"] == 1
        assert not load.done()  # it waits for a pod that is ready

        port = free_port()
        ready_pod, pending_pod = "textrank-predictor-5c7d9-ready", "textrank-predictor-5c7d9-slow"
        await predictor_pod(cp, ns, "textrank", pending_pod, free_port(), ready=False)
        await predictor_pod(cp, ns, "textrank", ready_pod, port)
        r = await asyncio.wait_for(load, 30)
        assert r.status_code == 200, r.text
        assert r.json()["node_id"] == ready_pod

        # Both pods are nodes, on this replica and on the other one alike.
        async def both_listed() -> dict[str, dict[str, Any]] | None:
            got = await other.get("/api/v1/nodes", headers=user)
            found = nodes_by_id(got.json())
            if not {ready_pod, pending_pod} <= set(found):
                return None
            # The other replica refreshes its view of the pods on its own schedule: it may
            # still hold the ready pod as it was before kwok gave it an address.
            return found if found[ready_pod]["address"] else None

        listed = await eventually(both_listed, "the pods on the other replica")
        assert listed[ready_pod]["address"] == f"127.0.0.1:{port}"
        assert listed[ready_pod]["model_id"] == "textrank"
        assert listed[pending_pod]["status"] == "starting"  # not Ready: never sent requests
        mine = nodes_by_id((await api.get("/api/v1/nodes", headers=admin)).json())
        assert set(mine) == set(listed)

        # The health check really goes to the pod's address, where nobody answers.
        r = await api.post(f"/api/v1/nodes/{ready_pod}/health-check", headers=admin)
        assert r.status_code == 200, r.text
        check = r.json()
        assert check["status"] == "unhealthy"
        assert check["checks"]["connectivity"] == "fail"
        assert "unreachable: ConnectError" in check["error"]
        assert f"127.0.0.1:{port}" in check["error"]
        r = await api.get(f"/api/v1/nodes/{ready_pod}/status", headers=admin)
        assert r.json()["status"] == "offline"
        events = (await api.get("/api/v1/failover/events", headers=admin)).json()["events"]
        assert any(e["failed_node"] == ready_pod for e in events)

        # No ready node: 503 naming how to deploy; the model is still coming up.
        r = await api.post("/api/v1/ai/summarize", json={"text": TEXT}, headers=admin)
        error = assert_error(r, 503, "MODEL_NOT_READY")
        assert "InferenceModel" in error["message"]
        r = await api.post(
            "/api/v1/ai/summarize", json={"text": TEXT, "model": "textrank"}, headers=admin
        )
        error = assert_error(r, 503, "MODEL_NOT_READY")
        assert error["message"].startswith("No model textrank is loaded")
        status = (await api.get("/api/v1/models/textrank/status", headers=admin)).json()
        assert status["status"] == "loading"  # a pod is still starting

        # A pod that disappears leaves every replica's node list.
        await asyncio.to_thread(cp.kubectl, "delete", "-n", ns, "pod", pending_pod, "--wait=false")

        async def pending_gone() -> bool:
            got = nodes_by_id((await other.get("/api/v1/nodes", headers=user)).json())
            return pending_pod not in got

        await eventually(pending_gone, "the deleted pod to leave the nodes")

        # Unloading deletes the InferenceModel the api made; its pods are no nodes any more.
        r = await api.delete("/api/v1/models/textrank/unload", headers=admin)
        assert r.status_code == 200, r.text
        assert ready_pod in r.json()["nodes"]

        async def model_gone() -> bool:
            return await get(cp, ns, "inferencemodel", "textrank") is None

        await eventually(model_gone, "the InferenceModel to be deleted")

        async def no_nodes() -> bool:
            got = (await other.get("/api/v1/nodes", headers=user)).json()
            return got["data"]["count"] == 0

        await eventually(no_nodes, "the other replica to drop the model's pods")


async def test_a_platform_model_is_listed_times_out_with_its_phase_and_unloads_to_zero(
    control_plane: ControlPlane,
    ns: str,
    api_settings: SettingsFactory,
    open_client: Callable[..., Any],
) -> None:
    cp = control_plane
    deployed = {
        "apiVersion": "konfer.io/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": "emotion-onnx"},
        "spec": {
            "task": "emotion-detection",
            "runtime": "onnx",
            "storageUri": "s3://models/emotion",
            "minReplicas": 1,
            "maxReplicas": 2,
        },
    }
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(deployed))
    settings = api_settings(
        ai_health_interval_seconds=0.3,
        ai_server_start_timeout_seconds=2,
    )
    async with open_client(settings) as api:
        admin = (await api.make_admin())["headers"]
        r = await api.get("/api/v1/models/emotion-onnx/status", headers=admin)
        assert r.status_code == 200, r.text
        assert (r.json()["runtime"], r.json()["storage_uri"]) == ("onnx", "s3://models/emotion")
        assert r.json()["status"] == "unloaded"

        # No KServe controller makes its pod: loading gives up after the bounded wait.
        started = time.monotonic()
        r = await api.post("/api/v1/models/emotion-onnx/load", headers=admin)
        error = assert_error(r, 500, "MODEL_LOAD_FAILED")
        assert time.monotonic() - started < 10
        assert "no pod of InferenceModel emotion-onnx became ready within 2s" in error["message"]
        assert "phase " in error["message"]
        model = await get(cp, ns, "inferencemodel", "emotion-onnx")
        assert model is not None
        assert model["spec"]["minReplicas"] == 1  # not scaled past what was wanted

        # Unloading the platform's model scales it to zero and leaves the object.
        r = await api.delete("/api/v1/models/emotion-onnx/unload", headers=admin)
        assert r.status_code == 200, r.text
        model = await get(cp, ns, "inferencemodel", "emotion-onnx")
        assert model is not None
        assert model["spec"]["minReplicas"] == 0
        assert model["spec"]["storageUri"] == "s3://models/emotion"


@pytest.fixture
def textrank_server(tmp_path: Path) -> Iterator[int]:
    """A real ``konfer model-server`` for textrank on 127.0.0.1: what the pod would run."""
    port = free_port()
    env = {**os.environ, "KONFER_DATA_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    args = ["model-server", "--name", "textrank", "--task", "summarization"]
    args += ["--runtime", "builtin", "--storage-uri", "packaged:textrank"]
    args += ["--host", "127.0.0.1", "--http-port", str(port), "--exit-with-parent"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "konfer.cli.main", *args],
        stdin=subprocess.DEVNULL,
        env=env,
        preexec_fn=lambda: die_with_parent(signal.SIGKILL),
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "the model server exited"
            assert time.monotonic() < deadline, "the model server did not get ready"
            try:
                url = f"http://127.0.0.1:{port}/v2/models/textrank/ready"
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=15)


async def test_a_ready_pod_that_answers_serves_ai_requests_found_through_discovery(
    control_plane: ControlPlane,
    ns: str,
    api_settings: SettingsFactory,
    open_client: Callable[..., Any],
    textrank_server: int,
) -> None:
    cp = control_plane
    settings = api_settings(
        ai_health_interval_seconds=0.3,
        ai_server_start_timeout_seconds=30,
    )
    async with open_client(settings) as api:
        admin = (await api.make_admin())["headers"]
        load = asyncio.create_task(api.post("/api/v1/models/textrank/load", headers=admin))
        await eventually(lambda: get(cp, ns, ISVC, "textrank"), "the InferenceService")
        pod = "textrank-predictor-6b8c4-serve"
        await predictor_pod(cp, ns, "textrank", pod, textrank_server)
        r = await asyncio.wait_for(load, 30)
        assert r.status_code == 200, r.text
        assert r.json()["node_id"] == pod

        r = await api.post("/api/v1/ai/summarize", json={"text": TEXT}, headers=admin)
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "textrank"
        assert r.json()["summary"]
        stats = (await api.get("/api/v1/load-balancer/stats", headers=admin)).json()["stats"]
        assert stats["requests_per_node"] == {pod: 1}
        r = await api.post(f"/api/v1/nodes/{pod}/health-check", headers=admin)
        assert r.json()["status"] == "healthy", r.text
        assert r.json()["checks"]["connectivity"] == "pass"
        status = (await api.get(f"/api/v1/nodes/{pod}/status", headers=admin)).json()
        assert status["status"] == "online"
        assert status["memory_bytes"] > 0  # read from the server's /metrics by the probe
