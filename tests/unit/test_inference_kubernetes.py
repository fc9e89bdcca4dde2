"""The Kubernetes model runtime's pure parts: the InferenceModels it writes, the specs it
reads back, and how a pod becomes a node."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from konfer.api.inference.kubernetes import (
    ISVC_LABEL,
    ClusterUnavailable,
    KubernetesModelRuntime,
    builtin_specs,
    inference_model,
    model_name,
    pinned_host,
    pod_node,
    spec_of,
    unschedulable,
)
from konfer.core.errors import ValidationFailed
from konfer.core.inference import ModelSpec, Runtime, Task
from konfer.core.settings import Settings

pytestmark = pytest.mark.unit

CRD = Path(__file__).parents[2] / "crds" / "inferencemodel.yaml"


def crd_spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return dict(schema["properties"]["spec"])


def test_every_builtin_model_id_is_a_valid_inference_model_name() -> None:
    for spec in builtin_specs():
        assert len(spec.name) <= 45, spec.name
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", spec.name), spec.name
    names = {s.name for s in builtin_specs()}
    assert "whisper-tiny-en" in names
    assert "whisper-tiny.en" not in names
    assert model_name("whisper-tiny.en") == "whisper-tiny-en"


def test_the_inference_model_carries_task_runtime_storage_and_replicas_within_the_crd() -> None:
    (tiny,) = [s for s in builtin_specs() if s.name == "whisper-tiny-en"]
    manifest = inference_model(tiny, 2, Settings())
    assert manifest["apiVersion"] == "konfer.io/v1alpha1"
    assert manifest["kind"] == "InferenceModel"
    assert manifest["metadata"]["name"] == "whisper-tiny-en"
    assert manifest["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "konfer-api"
    spec = manifest["spec"]
    assert spec == {
        "task": "speech-recognition",
        "runtime": "faster-whisper",
        "device": "cpu",
        "minReplicas": 2,
        "maxReplicas": 4,
        # A packaged model is named bare; the operator passes packaged:<name> on.
        "storageUri": "whisper-tiny.en",
    }
    schema = crd_spec_schema()
    props = schema["properties"]
    assert set(spec) <= set(props)
    assert spec["task"] in props["task"]["enum"]
    assert spec["runtime"] in props["runtime"]["enum"]
    assert re.fullmatch(props["storageUri"]["pattern"], spec["storageUri"])
    assert spec["minReplicas"] <= spec["maxReplicas"]


def test_a_gpu_api_asks_for_gpu_servers_and_s3_models_keep_their_uri() -> None:
    spec = ModelSpec(
        name="nllb", task=Task.translation, runtime=Runtime.ctranslate2,
        storage_uri="s3://models/nllb", max_replicas=1,
    )  # fmt: skip
    manifest = inference_model(spec, 3, Settings(ai_device="gpu"))
    assert manifest["spec"]["device"] == "gpu"
    assert manifest["spec"]["storageUri"] == "s3://models/nllb"
    assert (manifest["spec"]["minReplicas"], manifest["spec"]["maxReplicas"]) == (3, 3)


def test_a_model_from_a_local_folder_cannot_be_deployed_to_a_cluster() -> None:
    spec = ModelSpec(
        name="mine", task=Task.sentiment, runtime=Runtime.onnx, storage_uri="file:///models/x"
    )
    with pytest.raises(ValidationFailed) as refused:
        inference_model(spec, 1, Settings())
    assert "s3://bucket/prefix" in refused.value.message


def test_an_inference_model_reads_back_as_the_spec_it_was_made_from() -> None:
    (textrank,) = [s for s in builtin_specs() if s.name == "textrank"]
    obj = inference_model(textrank, 1, Settings())
    back = spec_of(obj)
    assert back.name == "textrank"
    assert back.task is Task.summarization
    assert back.storage_uri == "packaged:textrank"
    assert back.display_name == textrank.display_name  # a built-in keeps its description
    deployed = spec_of(
        {
            "metadata": {"name": "emotion-onnx"},
            "spec": {"task": "emotion-detection", "runtime": "onnx",
                     "storageUri": "s3://models/emotion", "minReplicas": 0, "maxReplicas": 50},
        }
    )  # fmt: skip
    assert (deployed.runtime, deployed.storage_uri) == (Runtime.onnx, "s3://models/emotion")
    assert (deployed.min_replicas, deployed.max_replicas) == (0, 16)
    assert deployed.baseline is False


def _pod(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "textrank-predictor-7d9f-abcde",
            "labels": {ISVC_LABEL: "textrank"},
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {"containers": [{"name": "kserve-container", "ports": [{"containerPort": 9090}]}]},
        "status": status,
    }


def test_a_ready_pod_is_an_online_node_at_its_ip_and_container_port() -> None:
    (spec,) = [s for s in builtin_specs() if s.name == "textrank"]
    ready = [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:05Z"}]
    node = pod_node(_pod(phase="Running", podIP="10.244.0.7", conditions=ready), spec, 8080)
    assert node.node_id == "textrank-predictor-7d9f-abcde"
    assert node.url == "http://10.244.0.7:9090"
    assert node.status == "online"
    assert node.loaded_at is not None
    assert node.loaded_at.second == 5


def test_an_unready_pod_is_starting_with_its_reason_and_never_ready() -> None:
    (spec,) = [s for s in builtin_specs() if s.name == "textrank"]
    waiting = [{"name": "kserve-container", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]
    node = pod_node(_pod(phase="Pending", containerStatuses=waiting), spec, 8080)
    assert node.status == "starting"
    assert not node.ready
    assert node.url == ""
    assert node.error == "pod Pending (ImagePullBackOff)"
    failed = pod_node(_pod(phase="Failed", podIP="10.244.0.8"), spec, 8080)
    assert (failed.status, failed.error) == ("offline", "pod failed")
    going = _pod(phase="Running", podIP="10.244.0.9")
    going["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    assert pod_node(going, spec, 8080).status == "stopped"  # scaled away: not a failure


def test_loading_on_a_node_pins_the_inference_model_to_that_hostname() -> None:
    (textrank,) = [s for s in builtin_specs() if s.name == "textrank"]
    manifest = inference_model(textrank, 1, Settings(), host="worker-2.example.internal")
    assert manifest["spec"]["nodeSelector"] == {
        "kubernetes.io/hostname": "worker-2.example.internal"
    }
    assert pinned_host(manifest) == "worker-2.example.internal"
    props = crd_spec_schema()["properties"]
    assert props["nodeSelector"]["additionalProperties"]["type"] == "string"
    assert "nodeSelector" not in inference_model(textrank, 1, Settings())["spec"]
    assert pinned_host(inference_model(textrank, 1, Settings())) is None


def test_a_pod_the_scheduler_cannot_place_says_why_and_a_placed_one_names_its_node() -> None:
    (spec,) = [s for s in builtin_specs() if s.name == "textrank"]
    message = "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    stuck = _pod(
        phase="Pending",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
            }
        ],
    )
    assert unschedulable(stuck) == message
    node = pod_node(stuck, spec, 8080)
    assert (node.status, node.host) == ("starting", None)
    assert node.error == f"pod Pending (Unschedulable: {message})"

    placed = _pod(
        phase="Running", podIP="10.244.0.7", conditions=[{"type": "Ready", "status": "True"}]
    )
    placed["spec"]["nodeName"] = "worker-2"
    assert unschedulable(placed) is None
    assert pod_node(placed, spec, 8080).host == "worker-2"


async def test_an_unreachable_api_server_is_a_503_not_a_crash(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "gone",
                        "cluster": {
                            "server": f"https://127.0.0.1:{port}",
                            "insecure-skip-tls-verify": True,
                        },
                    }
                ],
                "users": [{"name": "api", "user": {"token": "x"}}],
                "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "api"}}],
                "current-context": "gone",
            }
        )
    )
    runtime = KubernetesModelRuntime(Settings(runtime="kubernetes", kubeconfig=kubeconfig))
    try:
        with pytest.raises(ClusterUnavailable) as refused:
            await runtime.discover()
        assert refused.value.status_code == 503
        assert "did not answer" in refused.value.message
    finally:
        await runtime.close()
