"""Where model servers run in Kubernetes, against the control plane with the operator
reconciling and the api under operator/rbac/api.yaml: an InferenceModel's nodeSelector and
tolerations (validated by the API server, passed to the InferenceService's predictor),
``load-on/{node}`` pinning a model to a kwok node, an unknown node answered with the
scheduler's reason, and ``/models/rebalance`` releasing placement the cluster cannot satisfy.

KServe's controller is not installed, so the tests create the predictor pods it would make,
with the InferenceService's nodeSelector; kube-scheduler places them (or reports them
Unschedulable) and kwok runs them on the host network, so their address is 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import SettingsFactory
from tests.helpers import assert_error
from tests.k8s.cluster import FAKE_NODES, ControlPlane, free_port
from tests.k8s.objects import eventually, get
from tests.k8s.operator_proc import operator_fixture

pytestmark = pytest.mark.k8s

__all__ = ["operator_fixture"]

ISVC = "inferenceservices.serving.kserve.io"
HOSTNAME = "kubernetes.io/hostname"


def selector_of(isvc: dict[str, Any] | None) -> dict[str, str]:
    return dict(((isvc or {}).get("spec") or {}).get("predictor", {}).get("nodeSelector") or {})


async def isvc_selecting(cp: ControlPlane, ns: str, model: str, host: str | None) -> None:
    """Waits until the operator has carried the model's placement to its InferenceService."""

    async def carried() -> bool:
        return selector_of(await get(cp, ns, ISVC, model)).get(HOSTNAME) == host

    await eventually(carried, f"InferenceService {model} to select {host}")


async def predictor_pod(
    cp: ControlPlane, ns: str, model: str, name: str, node_selector: dict[str, str]
) -> None:
    """A pod as KServe's controller would make from the InferenceService's predictor."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"serving.kserve.io/inferenceservice": model, "component": "predictor"},
        },
        "spec": {
            "hostNetwork": True,
            "nodeSelector": node_selector,
            "containers": [
                {
                    "name": "kserve-container",
                    "image": "konfer/model-server:test",
                    "ports": [{"containerPort": free_port(), "protocol": "TCP"}],
                }
            ],
        },
    }
    await asyncio.to_thread(cp.kubectl, "apply", "-n", ns, "-f", "-", input=json.dumps(pod))


async def pod_from_isvc(cp: ControlPlane, ns: str, model: str, name: str) -> None:
    isvc = await get(cp, ns, ISVC, model)
    await predictor_pod(cp, ns, model, name, selector_of(isvc))


async def unschedulable_pod(cp: ControlPlane, ns: str, name: str) -> str:
    """Waits for kube-scheduler to report the pod Unschedulable; returns its message."""

    async def reported() -> str | None:
        pod = await get(cp, ns, "pod", name)
        for cond in ((pod or {}).get("status") or {}).get("conditions") or []:
            if cond["type"] == "PodScheduled" and cond.get("reason") == "Unschedulable":
                return str(cond["message"])
        return None

    return await eventually(reported, f"pod {name} to be Unschedulable")


def apply(cp: ControlPlane, ns: str, obj: dict[str, Any], check: bool = True) -> Any:
    return cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(obj), check=check)


def inference_model(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "konfer.io/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": name},
        "spec": {"task": "summarization", "storageUri": "textrank", **spec},
    }


async def test_the_api_server_checks_placement_and_the_operator_passes_it_to_the_predictor(
    control_plane: ControlPlane, ns: str
) -> None:
    cp = control_plane
    bad_selector = apply(
        cp, ns, inference_model("bad-sel", nodeSelector={HOSTNAME: 5}), check=False
    )
    assert bad_selector.returncode != 0
    assert "spec.nodeSelector" in bad_selector.stderr
    assert "string" in bad_selector.stderr
    bad_effect = inference_model("bad-tol", tolerations=[{"key": "gpu", "effect": "Sometimes"}])
    refused = apply(cp, ns, bad_effect, check=False)
    assert refused.returncode != 0
    assert "spec.tolerations[0].effect" in refused.stderr
    exists_with_value = [{"key": "gpu", "operator": "Exists", "value": "yes"}]
    refused = apply(cp, ns, inference_model("bad-tol", tolerations=exists_with_value), check=False)
    assert refused.returncode != 0
    assert "operator Exists has no value" in refused.stderr
    assert await get(cp, ns, "inferencemodel", "bad-sel") is None

    toleration = {"key": "dedicated", "operator": "Equal", "value": "ai", "effect": "NoSchedule"}
    placed = inference_model(
        "placed", nodeSelector={HOSTNAME: FAKE_NODES[1], "type": "kwok"}, tolerations=[toleration]
    )
    apply(cp, ns, placed)
    await isvc_selecting(cp, ns, "placed", FAKE_NODES[1])  # KServe's schema accepted it
    isvc = await get(cp, ns, ISVC, "placed")
    assert isvc is not None
    assert selector_of(isvc) == {HOSTNAME: FAKE_NODES[1], "type": "kwok"}
    assert isvc["spec"]["predictor"]["tolerations"] == [toleration]

    # Placement taken off the InferenceModel goes from the InferenceService too.
    patch = [{"op": "remove", "path": "/spec/nodeSelector/kubernetes.io~1hostname"}]
    patch.append({"op": "remove", "path": "/spec/tolerations"})
    await asyncio.to_thread(
        cp.kubectl, "patch", "-n", ns, "inferencemodel", "placed", "--type=json",
        "-p", json.dumps(patch),
    )  # fmt: skip

    async def released() -> bool:
        isvc = await get(cp, ns, ISVC, "placed")
        predictor = (isvc or {}).get("spec", {}).get("predictor", {})
        return selector_of(isvc) == {"type": "kwok"} and not predictor.get("tolerations")

    await eventually(released, "the InferenceService to drop the hostname and tolerations")


async def test_load_on_a_node_pins_the_model_there_and_an_unknown_node_says_why(
    control_plane: ControlPlane,
    ns: str,
    api_settings: SettingsFactory,
    open_client: Callable[..., Any],
) -> None:
    cp = control_plane
    host = FAKE_NODES[1]
    settings = api_settings(ai_health_interval_seconds=0.3, ai_server_start_timeout_seconds=30)
    async with open_client(settings) as api:
        admin = (await api.make_admin())["headers"]
        load = asyncio.create_task(
            api.post(f"/api/v1/models/textrank/load-on/{host}", headers=admin)
        )
        await isvc_selecting(cp, ns, "textrank", host)
        model = await get(cp, ns, "inferencemodel", "textrank")
        assert model is not None
        assert model["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "konfer-api"
        assert model["spec"]["nodeSelector"] == {HOSTNAME: host}
        assert model["spec"]["minReplicas"] == 1
        assert not load.done()  # it waits for a Ready pod on that node

        await pod_from_isvc(cp, ns, "textrank", "textrank-predictor-a1")
        r = await asyncio.wait_for(load, 30)
        assert r.status_code == 200, r.text
        assert (r.json()["node_id"], r.json()["host"]) == ("textrank-predictor-a1", host)
        pod = await get(cp, ns, "pod", "textrank-predictor-a1")
        assert pod is not None
        assert pod["spec"]["nodeName"] == host  # the scheduler honoured the pin
        nodes = (await api.get("/api/v1/nodes", headers=admin)).json()["data"]["nodes"]
        assert [(n["node_id"], n["host"]) for n in nodes] == [("textrank-predictor-a1", host)]

        # The same node again: one more server there.
        load = asyncio.create_task(
            api.post(f"/api/v1/models/textrank/load-on/{host}", headers=admin)
        )

        async def scaled() -> bool:
            model = await get(cp, ns, "inferencemodel", "textrank")
            return bool(model and model["spec"]["minReplicas"] == 2)

        await eventually(scaled, "minReplicas 2")
        await pod_from_isvc(cp, ns, "textrank", "textrank-predictor-a2")
        r = await asyncio.wait_for(load, 30)
        assert r.status_code == 200, r.text
        assert (r.json()["node_id"], r.json()["host"]) == ("textrank-predictor-a2", host)

        # A node the cluster does not have: the scheduler's reason, at once, and the model
        # goes back where it was.
        started = time.monotonic()
        load = asyncio.create_task(
            api.post("/api/v1/models/textrank/load-on/retired-node-7", headers=admin)
        )
        await isvc_selecting(cp, ns, "textrank", "retired-node-7")
        await pod_from_isvc(cp, ns, "textrank", "textrank-predictor-b1")
        reason = await unschedulable_pod(cp, ns, "textrank-predictor-b1")
        r = await asyncio.wait_for(load, 30)
        error = assert_error(r, 500, "MODEL_LOAD_FAILED")
        assert time.monotonic() - started < 20  # not the 30 s start timeout
        assert "cannot schedule textrank on node retired-node-7" in error["message"]
        assert reason in error["message"]
        assert "node affinity/selector" in error["message"]
        assert "the placement was undone" in error["message"]
        model = await get(cp, ns, "inferencemodel", "textrank")
        assert model is not None
        assert (model["spec"]["nodeSelector"], model["spec"]["minReplicas"]) == (
            {HOSTNAME: host},
            2,
        )
        await isvc_selecting(cp, ns, "textrank", host)
        status = (await api.get("/api/v1/models/textrank/status", headers=admin)).json()
        assert status["error"] == error["message"]

        # A model nobody loaded yet, on an unknown node: the InferenceModel made for it goes.
        load = asyncio.create_task(
            api.post("/api/v1/models/vader-snownlp/load-on/retired-node-7", headers=admin)
        )
        await isvc_selecting(cp, ns, "vader-snownlp", "retired-node-7")
        await pod_from_isvc(cp, ns, "vader-snownlp", "vader-snownlp-predictor-c1")
        r = await asyncio.wait_for(load, 30)
        assert_error(r, 500, "MODEL_LOAD_FAILED")

        async def deleted() -> bool:
            return await get(cp, ns, "inferencemodel", "vader-snownlp") is None

        await eventually(deleted, "the InferenceModel the failed load made to be deleted")

        r = await api.post("/api/v1/models/textrank/load-on/Not_A_Node", headers=admin)
        assert_error(r, 400, "VALIDATION_ERROR")


async def test_the_api_never_moves_a_platform_model(
    control_plane: ControlPlane,
    ns: str,
    api_settings: SettingsFactory,
    open_client: Callable[..., Any],
) -> None:
    cp = control_plane
    apply(cp, ns, inference_model("team-summaries", nodeSelector={"type": "kwok"}))
    settings = api_settings(ai_health_interval_seconds=0.3, ai_server_start_timeout_seconds=5)
    async with open_client(settings) as api:
        admin = (await api.make_admin())["headers"]
        r = await api.post(f"/api/v1/models/team-summaries/load-on/{FAKE_NODES[0]}", headers=admin)
        error = assert_error(r, 409, "RESOURCE_CONFLICT")
        assert "applied by the platform" in error["message"]
        assert "spec.nodeSelector" in error["message"]
        model = await get(cp, ns, "inferencemodel", "team-summaries")
        assert model is not None
        assert model["spec"]["nodeSelector"] == {"type": "kwok"}
        assert model["spec"]["minReplicas"] == 1


async def test_rebalance_releases_placement_the_cluster_cannot_satisfy(
    control_plane: ControlPlane,
    ns: str,
    api_settings: SettingsFactory,
    open_client: Callable[..., Any],
) -> None:
    cp = control_plane
    host = FAKE_NODES[0]
    settings = api_settings(ai_health_interval_seconds=0.3, ai_server_start_timeout_seconds=30)
    async with open_client(settings) as api:
        admin = (await api.make_admin())["headers"]
        # textrank pinned to a node that later left the cluster: its new pod cannot run.
        load = asyncio.create_task(
            api.post(f"/api/v1/models/textrank/load-on/{host}", headers=admin)
        )
        await isvc_selecting(cp, ns, "textrank", host)
        await pod_from_isvc(cp, ns, "textrank", "textrank-predictor-r1")
        assert (await asyncio.wait_for(load, 30)).status_code == 200
        gone = {"spec": {"nodeSelector": {HOSTNAME: "retired-node-7"}}}
        await asyncio.to_thread(
            cp.kubectl, "patch", "-n", ns, "inferencemodel", "textrank", "--type=merge",
            "-p", json.dumps(gone),
        )  # fmt: skip
        await isvc_selecting(cp, ns, "textrank", "retired-node-7")
        await pod_from_isvc(cp, ns, "textrank", "textrank-predictor-r2")
        await unschedulable_pod(cp, ns, "textrank-predictor-r2")

        # vader-snownlp, unpinned, wants two servers; the second fits no node.
        load = asyncio.create_task(api.post("/api/v1/models/vader-snownlp/load", headers=admin))
        await eventually(lambda: get(cp, ns, ISVC, "vader-snownlp"), "its InferenceService")
        await predictor_pod(cp, ns, "vader-snownlp", "vader-snownlp-predictor-r1", {})
        assert (await asyncio.wait_for(load, 30)).status_code == 200
        two = {"spec": {"minReplicas": 2, "maxReplicas": 2}}
        await asyncio.to_thread(
            cp.kubectl, "patch", "-n", ns, "inferencemodel", "vader-snownlp", "--type=merge",
            "-p", json.dumps(two),
        )  # fmt: skip
        await predictor_pod(
            cp, ns, "vader-snownlp", "vader-snownlp-predictor-r2", {"pool": "none-has-it"}
        )
        await unschedulable_pod(cp, ns, "vader-snownlp-predictor-r2")

        # A platform model with a pod that cannot run is left as the platform applied it.
        apply(cp, ns, inference_model("team-summaries", nodeSelector={HOSTNAME: "elsewhere"}))
        await isvc_selecting(cp, ns, "team-summaries", "elsewhere")
        await pod_from_isvc(cp, ns, "team-summaries", "team-summaries-predictor-r1")
        await unschedulable_pod(cp, ns, "team-summaries-predictor-r1")

        r = await api.post("/api/v1/models/rebalance", headers=admin)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["message"] == "Models rebalanced successfully"
        assert body["rebalanced_models"] == 2
        # Ready servers per cluster node: textrank's and vader's first pods.
        distribution = body["node_distribution"]
        assert sum(distribution.values()) == 2
        assert distribution.get(host, 0) >= 1
        assert set(distribution) <= set(FAKE_NODES)
        assert body["rebalance_time"] >= 0

        textrank = await get(cp, ns, "inferencemodel", "textrank")
        assert textrank is not None
        assert "nodeSelector" not in textrank["spec"] or not textrank["spec"]["nodeSelector"]
        await isvc_selecting(cp, ns, "textrank", None)  # the scheduler places it anywhere
        vader = await get(cp, ns, "inferencemodel", "vader-snownlp")
        assert vader is not None
        assert vader["spec"]["minReplicas"] == 1  # the replica no node fits is given up
        team = await get(cp, ns, "inferencemodel", "team-summaries")
        assert team is not None
        assert team["spec"]["nodeSelector"] == {HOSTNAME: "elsewhere"}

        # Nothing left to repair: a second rebalance changes nothing.
        r = await api.post("/api/v1/models/rebalance", headers=admin)
        assert r.json()["rebalanced_models"] == 0
