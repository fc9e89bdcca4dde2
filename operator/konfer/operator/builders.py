"""Pure builders: a custom resource's spec in, the manifests of its children out.

No I/O and no clock: ``handlers`` create what these return (and find it again by the
deterministic names and labels set here); the unit tests check them without a cluster.
Every child carries a controller ownerReference to its parent, so deleting the parent
lets the garbage collector remove the children.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from konfer.core.settings import Settings
from konfer.operator.models import (
    ANNOTATION_RECORDING_ID,
    ANNOTATION_TOKEN_SECRET,
    API_VERSION,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_MEETING,
    LABEL_MODEL,
    LABEL_NAME,
    LABEL_PART_OF,
    LABEL_RECORDING,
    MANAGED_BY,
    InferenceModelSpec,
    MeetingSpec,
    ObjectRef,
    RecordingSpec,
    Resources,
    child_name,
)

Manifest = dict[str, Any]

SFU_PORT_NAME = "control"
UDP_PORT_MIN_ENV = "KONFER_SFU_UDP_PORT_MIN"
UDP_PORT_MAX_ENV = "KONFER_SFU_UDP_PORT_MAX"
RECORDER_TERMINATION_PATH = "/dev/termination-log"
KSERVE_API_VERSION = "serving.kserve.io/v1beta1"
GPU_RESOURCE = "nvidia.com/gpu"


def owner_reference(owner: ObjectRef) -> Manifest:
    return {
        "apiVersion": API_VERSION,
        "kind": owner.kind,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _labels(component: str, extra: dict[str, str]) -> dict[str, str]:
    return {
        LABEL_NAME: f"konfer-{component}",
        LABEL_COMPONENT: component,
        LABEL_PART_OF: "konfer",
        LABEL_MANAGED_BY: MANAGED_BY,
        **extra,
    }


def _metadata(name: str, owner: ObjectRef, labels: dict[str, str]) -> Manifest:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(owner)],
    }


def _resources(resources: Resources | None, default: Resources) -> Manifest:
    chosen = resources if resources is not None else default
    out: Manifest = {}
    if chosen.requests:
        out["requests"] = {k: str(v) for k, v in chosen.requests.items()}
    if chosen.limits:
        out["limits"] = {k: str(v) for k, v in chosen.limits.items()}
    return out


_RESTRICTED_CONTAINER: Manifest = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


# Root filesystems are read-only; what a process writes goes to pod-scoped scratch space.
SCRATCH_DIR = "/var/lib/konfer"
RECORDER_METRICS_PORT = 9102


def _scratch(container: Manifest) -> list[Manifest]:
    """Mount writable emptyDirs (data dir and /tmp) into ``container``; return the volumes."""
    container["volumeMounts"] = [
        {"name": "data", "mountPath": SCRATCH_DIR},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir of the pod's own
    ]
    container.setdefault("env", []).append({"name": "KONFER_DATA_DIR", "value": SCRATCH_DIR})
    return [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {"medium": "Memory"}}]


def _env_from(settings: Settings) -> list[Manifest]:
    if settings.operator_env_secret is None:
        return []
    return [{"secretRef": {"name": settings.operator_env_secret, "optional": True}}]


# --- Meeting → SFU Deployment + Service ----------------------------------------------


def meeting_id(spec: MeetingSpec, owner: ObjectRef) -> str:
    """The id media tokens name as their room: the api's id, else the object's uid."""
    return spec.meeting_id or owner.uid


def sfu_name(meeting: str) -> str:
    return child_name(meeting, "sfu")


def sfu_labels(meeting: str) -> dict[str, str]:
    """Exactly the labels the Service selects on (and the operator's pod watch keys on)."""
    return {LABEL_COMPONENT: "sfu", LABEL_MEETING: meeting}


def sfu_endpoint(meeting: str, namespace: str, settings: Settings) -> str:
    """Control API URL of the meeting's SFU, through its Service."""
    return f"http://{sfu_name(meeting)}.{namespace}.svc:{settings.operator_sfu_port}"


def sfu_default_resources(settings: Settings) -> Resources:
    return Resources(
        requests={"cpu": settings.operator_sfu_cpu, "memory": settings.operator_sfu_memory},
        limits={
            "cpu": settings.operator_sfu_cpu_limit,
            "memory": settings.operator_sfu_memory_limit,
        },
    )


# ICE ports beyond one per participant: recorders and streamers (hidden subscribers) and
# peers reconnecting while their old connection still holds its port.
SFU_UDP_SPARE_PORTS = 16


def sfu_udp_ports(spec: MeetingSpec, settings: Settings) -> tuple[int, int]:
    """The SFU's media port range (inclusive): one UDP port per peer connection (bundled,
    rtcp-mux), so the meeting's capacity plus spares, from the operator's first port."""
    low = settings.operator_sfu_udp_port_min
    return low, low + spec.max_participants + SFU_UDP_SPARE_PORTS - 1


def sfu_container(spec: MeetingSpec, owner: ObjectRef, settings: Settings) -> Manifest:
    port = settings.operator_sfu_port
    udp_low, udp_high = sfu_udp_ports(spec, settings)
    pod_ip = {"valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    probe = {"httpGet": {"path": "/healthz", "port": SFU_PORT_NAME}}
    return {
        "name": "sfu",
        "image": settings.operator_sfu_image,
        "imagePullPolicy": settings.operator_image_pull_policy,
        "command": ["konfer"],
        "args": [
            "sfu",
            "--meeting",
            meeting_id(spec, owner),
            "--host",
            "0.0.0.0",  # noqa: S104 - the pod's own address space; the Service fronts it
            "--port",
            str(port),
            "--jwks-url",
            f"{settings.operator_api_url.rstrip('/')}/.well-known/jwks.json",
        ],
        "ports": [{"name": SFU_PORT_NAME, "containerPort": port, "protocol": "TCP"}],
        "env": [
            # ICE gathers on the pod's address and announces it (the node's with hostNetwork).
            {"name": "KONFER_SFU_ICE_HOSTS", **pod_ip},
            {"name": "KONFER_SFU_ANNOUNCED_IP", **pod_ip},
            {"name": "KONFER_SERVICE_NAME", "value": "konfer-sfu"},
            {"name": "KONFER_MEETING_MAX_PARTICIPANTS", "value": str(spec.max_participants)},
            # A fixed media range (not ephemeral ports) that firewalls and the Meeting's
            # status.sfu.udpPorts can name; status reads it back from the pod.
            {"name": UDP_PORT_MIN_ENV, "value": str(udp_low)},
            {"name": UDP_PORT_MAX_ENV, "value": str(udp_high)},
        ],
        "envFrom": _env_from(settings),
        "resources": _resources(spec.sfu.resources, sfu_default_resources(settings)),
        "readinessProbe": {**probe, "periodSeconds": 2, "failureThreshold": 2},
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
        "startupProbe": {**probe, "periodSeconds": 1, "failureThreshold": 60},
        "securityContext": _RESTRICTED_CONTAINER,
    }


def sfu_deployment(spec: MeetingSpec, owner: ObjectRef, settings: Settings) -> Manifest:
    """One SFU replica per meeting; Recreate so two SFUs never split a meeting."""
    name = sfu_name(owner.name)
    selector = sfu_labels(owner.name)
    labels = _labels("sfu", selector)
    container = sfu_container(spec, owner, settings)
    pod_spec: Manifest = {
        "containers": [container],
        "volumes": _scratch(container),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    if settings.operator_sfu_host_network:
        pod_spec["hostNetwork"] = True
        pod_spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, owner, labels),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "Recreate"},
            "progressDeadlineSeconds": int(settings.operator_sfu_start_timeout_seconds),
            "revisionHistoryLimit": 1,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def sfu_service(owner: ObjectRef, settings: Settings) -> Manifest:
    """The control API's stable address (status.sfu.endpoint); media does not pass here."""
    selector = sfu_labels(owner.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(sfu_name(owner.name), owner, _labels("sfu", selector)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {
                    "name": SFU_PORT_NAME,
                    "port": settings.operator_sfu_port,
                    "targetPort": SFU_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def auto_recording(spec: MeetingSpec, owner: ObjectRef) -> Manifest:
    """The Recording a Meeting with ``recording.auto`` owns (one, by its fixed name)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Recording",
        "metadata": {
            **_metadata(
                child_name(owner.name, "auto"),
                owner,
                _labels("recording", {LABEL_MEETING: owner.name}),
            ),
            # The meeting's recorder token: the api (or whoever applied the Meeting) keeps it
            # in the Secret the Meeting names, else in "<meeting>-recorder".
            "annotations": {
                ANNOTATION_TOKEN_SECRET: owner.annotations.get(ANNOTATION_TOKEN_SECRET)
                or child_name(owner.name, "recorder")
            },
        },
        "spec": {
            "meetingRef": owner.name,
            "format": spec.recording.format,
            "layout": spec.recording.layout,
        },
    }


# --- Recording → Job running `konfer recorder` ---------------------------------------


def recorder_job_name(recording: str) -> str:
    return child_name(recording, "recorder")


def recorder_token_secret(owner: ObjectRef) -> str:
    """Secret holding the recorder's media token (key ``token``); see crds/recording.yaml."""
    return owner.annotations.get(ANNOTATION_TOKEN_SECRET) or child_name(owner.name, "recorder")


def recording_id(owner: ObjectRef) -> str:
    """The api's recording id (annotation), else the object's uid."""
    return owner.annotations.get(ANNOTATION_RECORDING_ID) or owner.uid


def recorder_sources(spec: RecordingSpec) -> list[str]:
    """recordAudio/Video/Screen as the recorder's track sources."""
    chosen = (
        ("camera", spec.record_video),
        ("microphone", spec.record_audio),
        ("screen_share", spec.record_screen),
    )
    return [source for source, wanted in chosen if wanted]


def recorder_job(
    spec: RecordingSpec,
    owner: ObjectRef,
    *,
    meeting_id: str,
    sfu_url: str,
    settings: Settings,
) -> Manifest:
    """The recorder as a Job: it exits 0 when the file is stored, non-zero when it failed,
    and leaves a one-line JSON summary in its termination message either way."""
    grace = settings.operator_recorder_grace_seconds
    labels = _labels("recorder", {LABEL_RECORDING: owner.name, LABEL_MEETING: spec.meeting_ref})
    env: list[Manifest] = [
        {
            "name": "KONFER_RECORDER_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": recorder_token_secret(owner), "key": "token"}},
        },
        {"name": "KONFER_RECORDER_CALLBACK_URL", "value": settings.operator_api_url},
        {"name": "KONFER_SERVICE_NAME", "value": "konfer-recorder"},
        # How long it stays paused, rejoining, when it loses the meeting's SFU.
        {
            "name": "KONFER_RECORDER_REJOIN_TIMEOUT_SECONDS",
            "value": str(settings.recorder_rejoin_timeout_seconds),
        },
    ]
    if spec.storage.bucket:
        env.append({"name": "KONFER_S3_BUCKET", "value": spec.storage.bucket})
    container: Manifest = {
        "name": "recorder",
        "image": settings.operator_recorder_image,
        "imagePullPolicy": settings.operator_image_pull_policy,
        "command": ["konfer"],
        "args": [
            "recorder",
            "--recording-id",
            recording_id(owner),
            "--meeting-id",
            meeting_id,
            "--sfu-url",
            sfu_url,
            "--format",
            spec.format,
            "--layout",
            spec.layout,
            "--max-duration-seconds",
            str(spec.max_duration_seconds),
            "--sources",
            ",".join(recorder_sources(spec)),
            "--quality",
            spec.quality,
            "--storage-prefix",
            spec.storage.prefix,
        ],
        "env": env,
        "envFrom": _env_from(settings),
        "terminationMessagePath": RECORDER_TERMINATION_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}},
        "ports": [{"name": "metrics", "containerPort": RECORDER_METRICS_PORT}],
        "securityContext": _RESTRICTED_CONTAINER,
    }
    # Files in progress (and files kept after failed uploads) live in the data dir.
    volumes = _scratch(container)
    container["env"].append(
        {"name": "KONFER_RECORDER_METRICS_PORT", "value": str(RECORDER_METRICS_PORT)}
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(recorder_job_name(owner.name), owner, labels),
        "spec": {
            "backoffLimit": settings.operator_recorder_backoff_limit,
            # The recorder stops itself at maxDurationSeconds; the deadline is the backstop.
            "activeDeadlineSeconds": spec.max_duration_seconds + grace,
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": dict(settings.operator_recorder_pod_annotations),
                },
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": grace,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "containers": [container],
                    "volumes": volumes,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                },
            },
        },
    }


# --- InferenceModel → KServe InferenceService ----------------------------------------


def inference_service(spec: InferenceModelSpec, owner: ObjectRef, settings: Settings) -> Manifest:
    """A RawDeployment InferenceService whose predictor runs ``konfer model-server``."""
    port = settings.operator_model_server_port
    args = ["model-server", "--name", owner.name, "--task", spec.task, "--runtime", spec.runtime]
    if spec.storage_uri:
        # A bare name is a model packaged in the image; s3:// is the platform's storage.
        uri = spec.storage_uri
        args += ["--storage-uri", uri if "://" in uri else f"packaged:{uri}"]
    args += ["--device", spec.device, "--http-port", str(port)]
    resources = _resources(
        spec.resources,
        Resources(requests={"cpu": "1", "memory": "2Gi"}, limits={"memory": "4Gi"}),
    )
    if spec.device == "gpu":
        limits = resources.setdefault("limits", {})
        limits.setdefault(GPU_RESOURCE, "1")
    labels = _labels("model-server", {LABEL_MODEL: owner.name})
    probe = {"httpGet": {"path": "/v2/health/ready", "port": port}}
    container: Manifest = {
        "name": "kserve-container",
        "image": settings.operator_model_server_image,
        "imagePullPolicy": settings.operator_image_pull_policy,
        "command": ["konfer"],
        "args": args,
        "ports": [{"containerPort": port, "protocol": "TCP"}],
        "env": [{"name": "KONFER_SERVICE_NAME", "value": "konfer-model-server"}],
        "envFrom": _env_from(settings),
        "resources": resources,
        "readinessProbe": {**probe, "periodSeconds": 5},
        "securityContext": _RESTRICTED_CONTAINER,
    }
    volumes = _scratch(container)  # the joined Whisper model is cached in the data dir
    predictor: Manifest = {
        "minReplicas": spec.min_replicas,
        "maxReplicas": spec.max_replicas,
        "labels": labels,
        "containers": [container],
        "volumes": volumes,
    }
    # Placement goes on the predictor's pod spec as given; without it the scheduler chooses.
    if spec.node_selector:
        predictor["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        predictor["tolerations"] = [dict(t) for t in spec.tolerations]
    return {
        "apiVersion": KSERVE_API_VERSION,
        "kind": "InferenceService",
        "metadata": {
            **_metadata(owner.name, owner, labels),
            "annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"},
        },
        "spec": {"predictor": predictor},
    }


def inference_service_patch(manifest: Manifest, existing: Mapping[str, Any]) -> Manifest:
    """The merge patch that brings ``existing`` to ``manifest``. A merge patch keeps the map
    keys it does not name, so node-selector keys the InferenceModel no longer has are set
    to null (removed); tolerations, a list, are replaced whole (emptied when gone)."""
    predictor = dict(manifest["spec"]["predictor"])
    current = (existing.get("spec") or {}).get("predictor") or {}
    wanted = predictor.get("nodeSelector") or {}
    selector: dict[str, str | None] = dict.fromkeys(current.get("nodeSelector") or {})
    selector.update(wanted)
    if selector:
        predictor["nodeSelector"] = selector
    if current.get("tolerations"):
        predictor.setdefault("tolerations", [])
    return {
        "metadata": {"labels": manifest["metadata"]["labels"]},
        "spec": {**manifest["spec"], "predictor": predictor},
    }
