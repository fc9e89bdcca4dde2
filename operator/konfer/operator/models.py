"""Typed views of the three custom resources (group konfer.io, version v1alpha1).

The CRD schemas in ``crds/`` validate and default every field before the operator sees an
object; these models read the same shapes so builders and status functions work on types,
not nested dicts. Called by ``handlers`` (parsing watched bodies) and the unit tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

GROUP = "konfer.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Labels and annotations: konfer.io/* name relations, operator.konfer.io/* is kopf's own.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "konfer-operator"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MEETING = "konfer.io/meeting"
LABEL_RECORDING = "konfer.io/recording"
LABEL_MODEL = "konfer.io/inference-model"
ANNOTATION_RECORDING_ID = "konfer.io/recording-id"
ANNOTATION_TOKEN_SECRET = "konfer.io/recorder-token-secret"
OPERATOR_PREFIX = "operator.konfer.io"
FINALIZER = f"{OPERATOR_PREFIX}/finalizer"


class _Spec(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class Resources(_Spec):
    requests: dict[str, str | int] = Field(default_factory=dict)
    limits: dict[str, str | int] = Field(default_factory=dict)


class Media(_Spec):
    mode: Literal["sfu", "mesh"] = "sfu"
    codecs: list[str] = Field(default_factory=lambda: ["opus", "VP8", "H264"])


class AutoRecording(_Spec):
    auto: bool = False
    format: Literal["webm", "mp4", "mkv"] = "webm"
    layout: Literal["grid", "speaker", "per-track"] = "per-track"


class Transcription(_Spec):
    enabled: bool = False
    model: str | None = None
    language: str | None = None


class SfuSpec(_Spec):
    resources: Resources | None = None


class MeetingSpec(_Spec):
    title: str
    meeting_id: str | None = Field(default=None, alias="meetingId")
    max_participants: int = Field(default=100, alias="maxParticipants")
    start_time: datetime | None = Field(default=None, alias="startTime")
    end_time: datetime | None = Field(default=None, alias="endTime")
    idle_timeout_seconds: int = Field(default=300, alias="idleTimeoutSeconds")
    media: Media = Field(default_factory=Media)
    recording: AutoRecording = Field(default_factory=AutoRecording)
    transcription: Transcription = Field(default_factory=Transcription)
    sfu: SfuSpec = Field(default_factory=SfuSpec)


class StorageSpec(_Spec):
    bucket: str | None = None
    prefix: str = "recordings/"


class RecordingSpec(_Spec):
    meeting_ref: str = Field(alias="meetingRef")
    format: Literal["webm", "mp4", "mkv"] = "webm"
    quality: Literal["low", "medium", "high"] = "high"
    layout: Literal["grid", "speaker", "per-track"] = "per-track"
    record_audio: bool = Field(default=True, alias="recordAudio")
    record_video: bool = Field(default=True, alias="recordVideo")
    record_screen: bool = Field(default=True, alias="recordScreen")
    storage: StorageSpec = Field(default_factory=StorageSpec)
    stop: bool = False
    max_duration_seconds: int = Field(default=14400, alias="maxDurationSeconds")


class InferenceModelSpec(_Spec):
    task: str
    runtime: Literal["faster-whisper", "onnx", "ctranslate2", "builtin"] = "builtin"
    storage_uri: str | None = Field(default=None, alias="storageUri")
    device: Literal["cpu", "gpu"] = "cpu"
    min_replicas: int = Field(default=1, alias="minReplicas")
    max_replicas: int = Field(default=1, alias="maxReplicas")
    resources: Resources | None = None
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    # core/v1 Tolerations, passed on as written (the CRD schema validates their shape).
    tolerations: list[dict[str, Any]] = Field(default_factory=list)


class ObjectRef(BaseModel):
    """Who a child belongs to: enough for its name, namespace and ownerReference."""

    model_config = ConfigDict(frozen=True)

    kind: str
    name: str
    namespace: str
    uid: str
    generation: int = 0
    annotations: Mapping[str, str] = Field(default_factory=dict)

    @classmethod
    def of(cls, kind: str, body: Mapping[str, Any]) -> ObjectRef:
        meta = body.get("metadata", {})
        return cls(
            kind=kind,
            name=meta["name"],
            namespace=meta.get("namespace", "default"),
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation", 0) or 0),
            annotations=dict(meta.get("annotations") or {}),
        )


def child_name(parent: str, suffix: str) -> str:
    """Deterministic child names: a retried or restarted reconcile finds what it made."""
    return f"{parent}-{suffix}"
