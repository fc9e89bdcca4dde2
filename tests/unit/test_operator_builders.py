"""Child manifests of the operator, built without a cluster (konfer.operator.builders)."""

from __future__ import annotations

from typing import Any

import pytest

from konfer.core.settings import Settings
from konfer.operator import builders
from konfer.operator.models import (
    InferenceModelSpec,
    MeetingSpec,
    ObjectRef,
    RecordingSpec,
)

pytestmark = pytest.mark.unit

SETTINGS = Settings(
    operator_sfu_image="registry.example/konfer/sfu:1.2.3",
    operator_recorder_image="registry.example/konfer/recorder:1.2.3",
    operator_model_server_image="registry.example/konfer/model-server:1.2.3",
    operator_api_url="http://konfer-api.konfer.svc:8000",
    operator_env_secret="konfer-env",
)
MEETING = ObjectRef(kind="Meeting", name="standup", namespace="team", uid="uid-1", generation=3)


def owner_refs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    refs: list[dict[str, Any]] = manifest["metadata"]["ownerReferences"]
    return refs


def test_sfu_deployment_runs_one_konfer_sfu_for_the_meeting_owned_by_it() -> None:
    spec = MeetingSpec.model_validate(
        {"title": "Standup", "meetingId": "8a4f0a56-1111-4a4a-9c9c-000000000001"}
    )
    dep = builders.sfu_deployment(spec, MEETING, SETTINGS)
    assert dep["metadata"]["name"] == "standup-sfu"
    assert dep["metadata"]["namespace"] == "team"
    assert owner_refs(dep) == [
        {
            "apiVersion": "konfer.io/v1alpha1",
            "kind": "Meeting",
            "name": "standup",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    template = dep["spec"]["template"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    (c,) = template["spec"]["containers"]
    assert c["image"] == "registry.example/konfer/sfu:1.2.3"
    assert c["command"] == ["konfer"]
    assert c["args"] == [
        "sfu",
        "--meeting",
        "8a4f0a56-1111-4a4a-9c9c-000000000001",
        "--host",
        "0.0.0.0",  # noqa: S104 - the pod's own address
        "--port",
        "7880",
        "--jwks-url",
        "http://konfer-api.konfer.svc:8000/.well-known/jwks.json",
    ]
    assert c["ports"] == [{"name": "control", "containerPort": 7880, "protocol": "TCP"}]
    env = {e["name"]: e for e in c["env"]}
    for name in ("KONFER_SFU_ANNOUNCED_IP", "KONFER_SFU_ICE_HOSTS"):
        assert env[name]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert c["envFrom"] == [{"secretRef": {"name": "konfer-env", "optional": True}}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "control"}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"] == {
        "requests": {"cpu": "500m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    assert "hostNetwork" not in template["spec"]


def test_meeting_without_an_api_id_uses_its_uid_and_custom_resources() -> None:
    spec = MeetingSpec.model_validate(
        {"title": "x", "sfu": {"resources": {"requests": {"cpu": 2}, "limits": {"memory": "2Gi"}}}}
    )
    (c,) = builders.sfu_deployment(spec, MEETING, SETTINGS)["spec"]["template"]["spec"][
        "containers"
    ]
    assert c["args"][2] == "uid-1"
    assert c["resources"] == {"requests": {"cpu": "2"}, "limits": {"memory": "2Gi"}}


def test_host_network_option_puts_the_sfu_on_the_nodes_network() -> None:
    spec = MeetingSpec.model_validate({"title": "x"})
    settings = Settings(operator_sfu_host_network=True)
    pod = builders.sfu_deployment(spec, MEETING, settings)["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"


def test_sfu_service_selects_the_sfu_pod_on_the_control_port() -> None:
    svc = builders.sfu_service(MEETING, SETTINGS)
    assert svc["metadata"]["name"] == "standup-sfu"
    assert svc["spec"]["selector"] == {
        "app.kubernetes.io/component": "sfu",
        "konfer.io/meeting": "standup",
    }
    assert svc["spec"]["ports"][0]["port"] == 7880
    assert owner_refs(svc)[0]["uid"] == "uid-1"
    assert builders.sfu_endpoint("standup", "team", SETTINGS) == "http://standup-sfu.team.svc:7880"


def test_auto_recording_is_owned_by_the_meeting_and_names_its_token_secret() -> None:
    spec = MeetingSpec.model_validate(
        {"title": "x", "recording": {"auto": True, "format": "mkv", "layout": "grid"}}
    )
    rec = builders.auto_recording(spec, MEETING)
    assert rec["kind"] == "Recording"
    assert rec["metadata"]["name"] == "standup-auto"
    assert rec["spec"] == {"meetingRef": "standup", "format": "mkv", "layout": "grid"}
    assert rec["metadata"]["annotations"]["konfer.io/recorder-token-secret"] == "standup-recorder"
    assert owner_refs(rec)[0]["kind"] == "Meeting"


RECORDING = ObjectRef(
    kind="Recording",
    name="rec1",
    namespace="team",
    uid="uid-r",
    annotations={"konfer.io/recording-id": "11111111-2222-4333-8444-555555555555"},
)


def test_recorder_job_runs_konfer_recorder_with_deadline_and_termination_message() -> None:
    spec = RecordingSpec.model_validate(
        {
            "meetingRef": "standup",
            "format": "mp4",
            "layout": "speaker",
            "maxDurationSeconds": 600,
            "recordScreen": False,
            "storage": {"bucket": "media"},
        }
    )
    job = builders.recorder_job(
        spec,
        RECORDING,
        meeting_id="m-1",
        sfu_url="http://standup-sfu.team.svc:7880",
        settings=SETTINGS,
    )
    assert job["metadata"]["name"] == "rec1-recorder"
    assert owner_refs(job)[0] == {
        "apiVersion": "konfer.io/v1alpha1",
        "kind": "Recording",
        "name": "rec1",
        "uid": "uid-r",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert job["spec"]["backoffLimit"] == 1
    assert job["spec"]["activeDeadlineSeconds"] == 600 + SETTINGS.operator_recorder_grace_seconds
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (c,) = pod["containers"]
    assert c["image"] == "registry.example/konfer/recorder:1.2.3"
    assert c["args"] == [
        "recorder",
        "--recording-id",
        "11111111-2222-4333-8444-555555555555",
        "--meeting-id",
        "m-1",
        "--sfu-url",
        "http://standup-sfu.team.svc:7880",
        "--format",
        "mp4",
        "--layout",
        "speaker",
        "--max-duration-seconds",
        "600",
        "--sources",
        "camera,microphone",
        "--quality",
        "high",
        "--storage-prefix",
        "recordings/",
    ]
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert c["terminationMessagePath"] == "/dev/termination-log"
    env = {e["name"]: e for e in c["env"]}
    assert env["KONFER_RECORDER_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": "rec1-recorder", "key": "token"}
    }
    assert env["KONFER_RECORDER_CALLBACK_URL"]["value"] == "http://konfer-api.konfer.svc:8000"
    assert env["KONFER_RECORDER_REJOIN_TIMEOUT_SECONDS"]["value"] == "120.0"
    assert env["KONFER_S3_BUCKET"]["value"] == "media"


def test_recorder_token_secret_can_be_named_by_annotation_and_id_defaults_to_uid() -> None:
    owner = ObjectRef(
        kind="Recording",
        name="r",
        namespace="n",
        uid="u",
        annotations={"konfer.io/recorder-token-secret": "tokens"},
    )
    assert builders.recorder_token_secret(owner) == "tokens"
    assert builders.recording_id(owner) == "u"


def test_inference_service_is_raw_deployment_with_konfer_model_server_predictor() -> None:
    owner = ObjectRef(kind="InferenceModel", name="whisper", namespace="ai", uid="uid-m")
    spec = InferenceModelSpec.model_validate(
        {
            "task": "speech-recognition",
            "runtime": "faster-whisper",
            "storageUri": "whisper-base",
            "minReplicas": 1,
            "maxReplicas": 3,
        }
    )
    isvc = builders.inference_service(spec, owner, SETTINGS)
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    assert isvc["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": "RawDeployment"}
    assert owner_refs(isvc)[0]["kind"] == "InferenceModel"
    predictor = isvc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 3)
    (c,) = predictor["containers"]
    assert c["name"] == "kserve-container"
    assert c["image"] == "registry.example/konfer/model-server:1.2.3"
    assert c["args"] == [
        "model-server",
        "--name",
        "whisper",
        "--task",
        "speech-recognition",
        "--runtime",
        "faster-whisper",
        "--storage-uri",
        "packaged:whisper-base",
        "--device",
        "cpu",
        "--http-port",
        "8080",
    ]
    assert "nvidia.com/gpu" not in c["resources"].get("limits", {})


def test_gpu_models_ask_for_a_gpu() -> None:
    owner = ObjectRef(kind="InferenceModel", name="w", namespace="ai", uid="u")
    spec = InferenceModelSpec.model_validate(
        {"task": "speech-recognition", "device": "gpu", "storageUri": "s3://models/whisper"}
    )
    (c,) = builders.inference_service(spec, owner, SETTINGS)["spec"]["predictor"]["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "s3://models/whisper" in c["args"]


def test_node_selector_and_tolerations_go_to_the_predictor_pod_spec() -> None:
    owner = ObjectRef(kind="InferenceModel", name="w", namespace="ai", uid="u")
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    spec = InferenceModelSpec.model_validate(
        {
            "task": "speech-recognition",
            "nodeSelector": {"kubernetes.io/hostname": "gpu-1", "pool": "gpu"},
            "tolerations": [toleration],
        }
    )
    predictor = builders.inference_service(spec, owner, SETTINGS)["spec"]["predictor"]
    assert predictor["nodeSelector"] == {"kubernetes.io/hostname": "gpu-1", "pool": "gpu"}
    assert predictor["tolerations"] == [toleration]

    plain = InferenceModelSpec.model_validate({"task": "summarization"})
    predictor = builders.inference_service(plain, owner, SETTINGS)["spec"]["predictor"]
    assert "nodeSelector" not in predictor  # the scheduler chooses
    assert "tolerations" not in predictor


def test_an_update_removes_selector_keys_and_tolerations_the_model_dropped() -> None:
    owner = ObjectRef(kind="InferenceModel", name="w", namespace="ai", uid="u")
    existing = {
        "spec": {
            "predictor": {
                "nodeSelector": {"kubernetes.io/hostname": "node-a", "pool": "gpu"},
                "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            }
        }
    }
    moved = InferenceModelSpec.model_validate(
        {"task": "summarization", "nodeSelector": {"pool": "cpu"}}
    )
    patch = builders.inference_service_patch(
        builders.inference_service(moved, owner, SETTINGS), existing
    )
    predictor = patch["spec"]["predictor"]
    # A merge patch: null removes a key, a list replaces the old one.
    assert predictor["nodeSelector"] == {"kubernetes.io/hostname": None, "pool": "cpu"}
    assert predictor["tolerations"] == []
    assert predictor["minReplicas"] == 1
    assert patch["metadata"]["labels"]["konfer.io/inference-model"] == "w"

    fresh = builders.inference_service_patch(
        builders.inference_service(moved, owner, SETTINGS), {"spec": {"predictor": {}}}
    )
    assert fresh["spec"]["predictor"]["nodeSelector"] == {"pool": "cpu"}
    assert "tolerations" not in fresh["spec"]["predictor"]


def _pod_specs() -> list[dict[str, Any]]:
    meeting = MeetingSpec.model_validate({"title": "Standup"})
    recording = RecordingSpec.model_validate({"meetingRef": "standup"})
    model = InferenceModelSpec.model_validate(
        {"task": "speech-recognition", "runtime": "faster-whisper", "storageUri": "whisper-base"}
    )
    sfu = builders.sfu_deployment(meeting, MEETING, SETTINGS)["spec"]["template"]["spec"]
    job = builders.recorder_job(
        recording,
        RECORDING,
        meeting_id="m-1",
        sfu_url="http://standup-sfu.team.svc:7880",
        settings=SETTINGS,
    )["spec"]["template"]["spec"]
    owner = ObjectRef(kind="InferenceModel", name="whisper", namespace="ai", uid="uid-m")
    predictor = builders.inference_service(model, owner, SETTINGS)["spec"]["predictor"]
    return [sfu, job, predictor]


def test_every_pod_has_a_read_only_root_and_writable_scratch_for_its_data_dir() -> None:
    for pod in _pod_specs():
        (c,) = pod["containers"]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert mounts == {builders.SCRATCH_DIR: "data", "/tmp": "tmp"}
        assert {v["name"] for v in pod["volumes"] if "emptyDir" in v} == {"data", "tmp"}
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["KONFER_DATA_DIR"] == builders.SCRATCH_DIR


def test_recorder_pods_publish_a_metrics_port_for_the_pod_monitor() -> None:
    job = _pod_specs()[1]
    (c,) = job["containers"]
    assert {"name": "metrics", "containerPort": builders.RECORDER_METRICS_PORT} in c["ports"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KONFER_RECORDER_METRICS_PORT"] == str(builders.RECORDER_METRICS_PORT)
