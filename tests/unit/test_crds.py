"""The CRDs in crds/ are the single source of the custom resources' schema (design §2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

CRDS = Path(__file__).resolve().parents[2] / "crds"


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((CRDS / f"{name}.yaml").read_text())
    return doc


def version(crd: dict[str, Any]) -> dict[str, Any]:
    (v,) = crd["spec"]["versions"]
    return dict(v)


def schema(crd: dict[str, Any], part: str) -> dict[str, Any]:
    props: dict[str, Any] = version(crd)["schema"]["openAPIV3Schema"]["properties"][part]
    return props


@pytest.mark.parametrize(
    ("name", "kind", "plural", "short"),
    [
        ("meeting", "Meeting", "meetings", "mtg"),
        ("recording", "Recording", "recordings", "rec"),
        ("inferencemodel", "InferenceModel", "inferencemodels", "im"),
    ],
)
def test_each_crd_is_a_namespaced_konfer_v1alpha1_resource_with_status_and_columns(
    name: str, kind: str, plural: str, short: str
) -> None:
    crd = load(name)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{plural}.konfer.io"
    spec = crd["spec"]
    assert spec["group"] == "konfer.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == kind
    assert spec["names"]["shortNames"] == [short]
    assert "konfer" in spec["names"]["categories"]
    v = version(crd)
    assert v["name"] == "v1alpha1"
    assert v["served"]
    assert v["storage"]
    assert v["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in v["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase"
    assert columns["Age"] == ".metadata.creationTimestamp"
    status = schema(crd, "status")["properties"]
    assert {"phase", "conditions", "observedGeneration"} <= set(status)
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def test_meeting_has_the_fields_of_the_design_with_defaults_and_rules() -> None:
    crd = load("meeting")
    spec = schema(crd, "spec")
    props = spec["properties"]
    assert set(props) == {
        "title",
        "meetingId",
        "maxParticipants",
        "startTime",
        "endTime",
        "idleTimeoutSeconds",
        "media",
        "recording",
        "transcription",
        "sfu",
    }
    assert props["meetingId"]["format"] == "uuid"
    assert props["startTime"]["format"] == props["endTime"]["format"] == "date-time"
    assert props["maxParticipants"]["default"] == 100
    assert props["media"]["properties"]["mode"]["enum"] == ["sfu", "mesh"]
    assert set(props["recording"]["properties"]) == {"auto", "format", "layout"}
    assert set(props["transcription"]["properties"]) == {"enabled", "model", "language"}
    assert "resources" in props["sfu"]["properties"]
    rules = " ".join(r["rule"] for r in spec["x-kubernetes-validations"])
    assert "timestamp(self.endTime) > timestamp(self.startTime)" in rules
    status = schema(crd, "status")["properties"]
    assert status["phase"]["enum"] == [
        "Pending",
        "Starting",
        "Running",
        "Ending",
        "Ended",
        "Failed",
    ]
    assert set(status["sfu"]["properties"]) == {
        "endpoint",
        "podName",
        "publicAddress",
        "udpPorts",
        "ready",
    }
    assert {"participants", "startedAt", "endedAt"} <= set(status)


def test_recording_has_the_fields_of_the_design() -> None:
    crd = load("recording")
    props = schema(crd, "spec")["properties"]
    assert set(props) == {
        "meetingRef",
        "format",
        "quality",
        "layout",
        "recordAudio",
        "recordVideo",
        "recordScreen",
        "storage",
        "stop",
        "maxDurationSeconds",
    }
    assert props["format"]["enum"] == ["webm", "mp4", "mkv"]
    assert props["layout"]["enum"] == ["grid", "speaker", "per-track"]
    assert props["stop"]["default"] is False
    assert set(props["storage"]["properties"]) == {"bucket", "prefix"}
    status = schema(crd, "status")["properties"]
    assert status["phase"]["enum"] == [
        "Pending",
        "Recording",
        "Finalizing",
        "Completed",
        "Failed",
        "Cancelled",
    ]
    assert {
        "jobName",
        "startedAt",
        "stoppedAt",
        "durationSeconds",
        "sizeBytes",
        "objectKey",
    } <= set(status)


def test_inference_model_has_the_fields_of_the_design_and_checks_replicas() -> None:
    crd = load("inferencemodel")
    spec = schema(crd, "spec")
    props = spec["properties"]
    assert set(props) == {
        "task",
        "runtime",
        "storageUri",
        "device",
        "minReplicas",
        "maxReplicas",
        "resources",
        "nodeSelector",
        "tolerations",
    }
    assert props["nodeSelector"]["additionalProperties"]["type"] == "string"
    assert props["tolerations"]["items"]["properties"]["effect"]["enum"] == [
        "NoSchedule",
        "PreferNoSchedule",
        "NoExecute",
    ]
    assert len(props["task"]["enum"]) == 8
    assert props["runtime"]["enum"] == ["faster-whisper", "onnx", "ctranslate2", "builtin"]
    assert props["device"]["enum"] == ["cpu", "gpu"]
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert "self.minReplicas <= self.maxReplicas" in rules
    status = schema(crd, "status")["properties"]
    assert status["phase"]["enum"] == ["Pending", "Loading", "Ready", "Failed", "Unloaded"]
    assert {"url", "inferenceService", "readyReplicas"} <= set(status)
