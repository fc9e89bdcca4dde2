"""The kubernetes runtime (``KONFER_RUNTIME=kubernetes``): a meeting's SFU is a Meeting
object (group konfer.io) that the operator turns into an SFU Deployment and Service, and
a recording is a Recording object the operator runs as a recorder Job.

Same interface as ``runtime.local.LocalSfuRuntime`` for ``signaling.sfu_router`` and the
meeting routes: ``endpoint(meeting_id)`` creates (or finds) the Meeting named
``mtg-<meeting id>`` in ``KONFER_KUBERNETES_NAMESPACE`` and waits until its
``status.sfu.ready`` (at most ``KONFER_KUBERNETES_SFU_READY_TIMEOUT_SECONDS``, then 503
``SERVICE_UNAVAILABLE``); ``stop`` deletes it (garbage collection takes the SFU down);
``peers_changed`` keeps ``status.participants`` current, which the operator's idle
timeout reads. ``KubernetesRecorderRuntime`` creates Recording ``rec-<recording id>``
(annotation ``konfer.io/recording-id``) with its recorder token in the Secret
``rec-<recording id>-recorder`` (owned by the Recording) and stops it with
``spec.stop``; the recorder reports to the api over HTTP as it does locally. A live
stream has no custom resource: ``start_streamer`` creates the Job ``stream-<stream id>``
itself (owned by the Meeting, so ending the meeting removes it) with its token in the
Secret ``stream-<stream id>-token`` (owned by the Job); ``stop("stream:<id>")`` suspends
that Job as a backstop to the ``stop`` the streamer hears in its report answer; a Job that
ends without its streamer reporting is noticed by ``runtime.streamer_watch`` (started by
``watch_streamers``). Called from ``app.attach_sfu``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from konfer.api.runtime.recorders import RecorderSpec, StreamerSpec
from konfer.api.runtime.streamer_watch import OnEnd, StreamerJobWatcher
from konfer.core.errors import ServiceUnavailable
from konfer.core.settings import Settings

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "konfer.io", "v1alpha1", "meetings"
RECORDINGS = "recordings"
MERGE = "application/merge-patch+json"
_POLL_SECONDS = 0.25


class SfuNotReady(ServiceUnavailable):
    """The Meeting's SFU did not become ready in time (or the cluster refused it)."""

    default_message = "The meeting's media server is not ready. Please try again shortly."


def meeting_name(meeting_id: str) -> str:
    """The Meeting object of an api meeting: a DNS label derived from its id."""
    return f"mtg-{meeting_id.lower()}"


class KubernetesDirectory:
    """Which SFU serves a meeting: the Meeting's status, read from the API server."""

    def __init__(self, runtime: KubernetesSfuRuntime) -> None:
        self.runtime = runtime

    async def lookup(self, meeting_id: str) -> str | None:
        obj = await self.runtime.read(meeting_id)
        sfu = ((obj or {}).get("status") or {}).get("sfu") or {}
        return str(sfu["endpoint"]) if sfu.get("ready") and sfu.get("endpoint") else None


async def _api_client(settings: Settings) -> client.ApiClient:
    cfg = client.Configuration()
    if settings.kubeconfig is not None:
        await config.load_kube_config(
            config_file=str(settings.kubeconfig), client_configuration=cfg, persist_config=False
        )
    else:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    return client.ApiClient(cfg)


class KubernetesSfuRuntime:
    def __init__(
        self,
        settings: Settings,
        count_participants: Callable[[str], Awaitable[int]] | None = None,
    ) -> None:
        self.settings = settings
        self.namespace = settings.kubernetes_namespace
        self.count_participants = count_participants
        self.directory = KubernetesDirectory(self)
        self._api: client.ApiClient | None = None
        self._lock = asyncio.Lock()
        self._reports: dict[str, asyncio.Task[None]] = {}

    async def _custom(self) -> Any:
        async with self._lock:
            if self._api is None:
                self._api = await _api_client(self.settings)
        return client.CustomObjectsApi(self._api)

    def manifest(self, meeting_id: str) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Meeting",
            "metadata": {
                "name": meeting_name(meeting_id),
                "labels": {"app.kubernetes.io/managed-by": "konfer-api"},
            },
            "spec": {
                "title": f"Meeting {meeting_id}",
                "meetingId": meeting_id,
                "maxParticipants": self.settings.meeting_max_participants,
                "idleTimeoutSeconds": max(1, int(self.settings.sfu_idle_timeout_seconds)),
            },
        }

    async def read(self, meeting_id: str) -> dict[str, Any] | None:
        custom = await self._custom()
        try:
            obj: dict[str, Any] = await custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, meeting_name(meeting_id)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _unavailable(exc) from exc
        return obj

    async def ensure(self, meeting_id: str) -> dict[str, Any]:
        """The meeting's live Meeting object, created when absent or over."""
        custom = await self._custom()
        for _ in range(3):
            obj = await self.read(meeting_id)
            phase = ((obj or {}).get("status") or {}).get("phase")
            if obj is not None and phase not in ("Ending", "Ended", "Failed"):
                return obj
            if obj is not None:  # a previous run of this meeting: start afresh
                await self.stop(meeting_id)
                await self._gone(meeting_id)
            try:
                created: dict[str, Any] = await custom.create_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, self.manifest(meeting_id)
                )
                log.info("created Meeting", extra={"meeting_id": meeting_id})
                return created
            except ApiException as exc:
                if exc.status != 409:  # 409: another replica made it just now
                    raise _unavailable(exc) from exc
        raise SfuNotReady("The meeting's media server could not be created")

    async def _gone(self, meeting_id: str) -> None:
        deadline = time.monotonic() + self.settings.kubernetes_sfu_ready_timeout_seconds
        while await self.read(meeting_id) is not None:
            if time.monotonic() > deadline:
                raise SfuNotReady("The meeting's previous media server is still shutting down")
            await asyncio.sleep(_POLL_SECONDS)

    async def endpoint(self, meeting_id: str) -> str:
        """The control URL of the meeting's SFU once the operator reports it ready."""
        obj = await self.ensure(meeting_id)
        timeout = self.settings.kubernetes_sfu_ready_timeout_seconds
        deadline = time.monotonic() + timeout
        while True:
            status = (obj or {}).get("status") or {}
            sfu = status.get("sfu") or {}
            if sfu.get("ready") and sfu.get("endpoint"):
                return str(sfu["endpoint"])
            if status.get("phase") == "Failed":
                raise SfuNotReady(
                    "The meeting's media server failed to start: " + _ready_message(status)
                )
            if time.monotonic() > deadline:
                raise SfuNotReady(
                    f"The meeting's media server was not ready within {timeout:g}s: "
                    + _ready_message(status)
                )
            await asyncio.sleep(_POLL_SECONDS)
            obj = await self.read(meeting_id) or await self.ensure(meeting_id)

    async def start(self, meeting_id: str) -> None:
        """A meeting starts: its SFU is made and ready before anyone joins."""
        await self.endpoint(meeting_id)

    def peers_changed(self, meeting_id: str) -> None:
        """Someone joined or left: report the count in the Meeting's status (coalesced)."""
        if self.count_participants is None:
            return
        task = self._reports.get(meeting_id)
        if task is not None and not task.done():
            return
        self._reports[meeting_id] = asyncio.create_task(self._report(meeting_id))

    async def _report(self, meeting_id: str) -> None:
        assert self.count_participants is not None
        await asyncio.sleep(0.2)  # a burst of joins is one write
        count = await self.count_participants(meeting_id)
        custom = await self._custom()
        with contextlib.suppress(ApiException):
            await custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                meeting_name(meeting_id),
                {"status": {"participants": count}},
                _content_type=MERGE,
            )

    async def stop(self, meeting_id: str) -> None:
        custom = await self._custom()
        try:
            await custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, meeting_name(meeting_id)
            )
        except ApiException as exc:
            if exc.status != 404:
                raise _unavailable(exc) from exc

    async def close(self) -> None:
        for task in self._reports.values():
            task.cancel()
        if self._api is not None:
            await self._api.close()
            self._api = None


def _ready_message(status: dict[str, Any]) -> str:
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            return f"{cond.get('reason')}: {cond.get('message')}"
    return f"phase {status.get('phase') or 'Pending'}"


def _unavailable(exc: ApiException) -> SfuNotReady:
    log.error("Kubernetes API error", extra={"status": exc.status, "reason": exc.reason})
    return SfuNotReady(
        f"The cluster refused the meeting's media server ({exc.status} {exc.reason})"
    )


def recording_name(recording_id: str) -> str:
    return f"rec-{recording_id.lower()}"


class KubernetesRecorderRuntime:
    """Recorders as Recording objects (same interface as ``LocalRecorderRuntime``)."""

    def __init__(self, settings: Settings, on_stream_end: OnEnd | None = None) -> None:
        self.settings = settings
        self.namespace = settings.kubernetes_namespace
        self._api: client.ApiClient | None = None
        self._lock = asyncio.Lock()
        self.streamer_watcher: StreamerJobWatcher | None = None
        if on_stream_end is not None:
            self.streamer_watcher = StreamerJobWatcher(
                self._client,
                self.namespace,
                on_stream_end,
                watch_timeout_seconds=settings.kubernetes_watch_timeout_seconds,
                start_timeout_seconds=settings.kubernetes_streamer_start_timeout_seconds,
            )

    def watch_streamers(self) -> None:
        """Start noticing streamer Jobs that end without a report (until ``close``)."""
        if self.streamer_watcher is not None:
            self.streamer_watcher.start()

    async def _client(self) -> client.ApiClient:
        async with self._lock:
            if self._api is None:
                self._api = await _api_client(self.settings)
        return self._api

    def manifest(self, spec: RecorderSpec) -> dict[str, Any]:
        sources = set(spec.sources)
        body: dict[str, Any] = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Recording",
            "metadata": {
                "name": recording_name(spec.recording_id),
                "labels": {"app.kubernetes.io/managed-by": "konfer-api"},
                "annotations": {"konfer.io/recording-id": spec.recording_id},
            },
            "spec": {
                "meetingRef": meeting_name(spec.meeting_id),
                "format": spec.format,
                "layout": spec.layout,
                "recordAudio": "microphone" in sources,
                "recordVideo": "camera" in sources,
                "recordScreen": "screen_share" in sources,
                "quality": spec.quality,
                # The api serves downloads from its own bucket, so the recorder writes there.
                "storage": {"bucket": self.settings.s3_bucket, "prefix": spec.storage_prefix},
            },
        }
        if spec.max_duration_seconds:
            body["spec"]["maxDurationSeconds"] = spec.max_duration_seconds
        return body

    async def start(self, spec: RecorderSpec) -> None:
        """The Recording, then its token Secret owned by it (the Job waits for both)."""
        api = await self._client()
        custom: Any = client.CustomObjectsApi(api)
        name = recording_name(spec.recording_id)
        try:
            rec: dict[str, Any] = await custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, RECORDINGS, self.manifest(spec)
            )
        except ApiException as exc:
            if exc.status != 409:  # 409: a retry of the same recording
                raise _unavailable(exc) from exc
            rec = await custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, RECORDINGS, name
            )
        owner = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Recording",
            "name": name,
            "uid": rec["metadata"]["uid"],
        }
        await self._token_secret(api, f"{name}-recorder", owner, spec.token)

    async def start_streamer(self, spec: StreamerSpec) -> None:
        """The streamer Job, owned by the meeting's Meeting, then its token Secret owned by
        the Job (the pod waits for it). A retry finds both by name and reuses them."""
        api = await self._client()
        custom: Any = client.CustomObjectsApi(api)
        try:
            meeting: dict[str, Any] = await custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, meeting_name(spec.meeting_id)
            )
        except ApiException as exc:
            raise _unavailable(exc) from exc
        batch: Any = client.BatchV1Api(api)
        name = streamer_job_name(spec.stream_id)
        try:
            job: dict[str, Any] = api.sanitize_for_serialization(
                await batch.create_namespaced_job(
                    self.namespace, streamer_job(spec, meeting, self.settings)
                )
            )
        except ApiException as exc:
            if exc.status != 409:  # 409: a retry of the same stream
                raise _unavailable(exc) from exc
            job = api.sanitize_for_serialization(
                await batch.read_namespaced_job(name, self.namespace)
            )
        owner = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": name,
            "uid": job["metadata"]["uid"],
        }
        labels = dict(job["metadata"].get("labels") or {})
        await self._token_secret(
            api, streamer_secret_name(spec.stream_id), owner, spec.token, labels
        )
        log.info("created streamer Job", extra={"stream_id": spec.stream_id, "job": name})

    async def _token_secret(
        self,
        api: client.ApiClient,
        name: str,
        owner: dict[str, Any],
        token: str,
        labels: dict[str, str] | None = None,
    ) -> None:
        """A media token in a Secret owned by its recorder's or streamer's object, so it
        goes with it; created only (a retry finds it made), never read back."""
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": labels or {}, "ownerReferences": [owner]},
            "type": "Opaque",
            "stringData": {"token": token},
        }
        core: Any = client.CoreV1Api(api)
        try:
            await core.create_namespaced_secret(self.namespace, secret)
        except ApiException as exc:
            if exc.status != 409:
                raise _unavailable(exc) from exc

    async def _suspend_streamer(self, stream_id: str) -> bool:
        """Backstop for ``stop("stream:<id>")``: suspend the Job, which deletes its pod
        (SIGTERM, then the grace period to finish the playlist and report). The streamer
        normally stops first, on the ``stop`` in the answer to its next report; the Job
        stays, suspended or complete, as the record of the run until the Meeting goes."""
        batch: Any = client.BatchV1Api(await self._client())
        try:
            await batch.patch_namespaced_job(
                streamer_job_name(stream_id),
                self.namespace,
                {"spec": {"suspend": True}},
                _content_type=MERGE,
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise _unavailable(exc) from exc
        return True

    async def stop(self, recording_id: str) -> bool:
        """``spec.stop``: the operator suspends the Job and the recorder finishes.
        ``stream:<id>`` keys are live streams: their Job is suspended here."""
        if recording_id.startswith("stream:"):
            return await self._suspend_streamer(recording_id.removeprefix("stream:"))
        custom: Any = client.CustomObjectsApi(await self._client())
        try:
            await custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                RECORDINGS,
                recording_name(recording_id),
                {"spec": {"stop": True}},
                _content_type=MERGE,
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise _unavailable(exc) from exc
        return True

    def running(self, recording_id: str) -> bool:
        return False  # nothing runs in this process

    async def wait_exit(self, recording_id: str, seconds: float) -> bool:
        return True

    async def close(self) -> None:
        if self.streamer_watcher is not None:
            await self.streamer_watcher.stop()
        if self._api is not None:
            await self._api.close()
            self._api = None


# --- live streams: `konfer streamer` as a Job the api makes itself -----------------------
#
# Streams have no custom resource (design §2 fixes the CRDs), so the api creates the Job,
# with the conventions of the operator's recorder Job (``konfer.operator.builders``):
# recorder image, app.kubernetes.io/* labels, restricted security context, scratch
# emptyDirs, restartPolicy Never, a termination message. The Meeting owns it, so ending
# the meeting (deleting the Meeting) garbage-collects the Job, its pod and its Secret.

STREAMER_COMPONENT = "streamer"
STREAMER_SCRATCH_DIR = "/var/lib/konfer"
STREAMER_TERMINATION_PATH = "/dev/termination-log"


def streamer_job_name(stream_id: str) -> str:
    return f"stream-{stream_id.lower()}"


def streamer_secret_name(stream_id: str) -> str:
    return f"{streamer_job_name(stream_id)}-token"


def _streamer_env(spec: StreamerSpec, settings: Settings) -> list[dict[str, Any]]:
    """What the streamer needs besides its arguments; credentials only by reference (the
    token Secret; S3 keys through ``KONFER_OPERATOR_ENV_SECRET``, as recorder pods)."""
    env: list[dict[str, Any]] = [
        {
            "name": "KONFER_RECORDER_TOKEN",
            "valueFrom": {
                "secretKeyRef": {"name": streamer_secret_name(spec.stream_id), "key": "token"}
            },
        },
        {
            "name": "KONFER_RECORDER_CALLBACK_URL",
            "value": settings.recorder_callback_url or settings.operator_api_url,
        },
        {"name": "KONFER_SERVICE_NAME", "value": "konfer-streamer"},
        {"name": "KONFER_DATA_DIR", "value": STREAMER_SCRATCH_DIR},
        # HLS/DASH files go where the api serves them from: its own bucket.
        {"name": "KONFER_S3_BUCKET", "value": settings.s3_bucket},
        {"name": "KONFER_S3_SECURE", "value": "true" if settings.s3_secure else "false"},
        {
            "name": "KONFER_RECORDING_HEARTBEAT_SECONDS",
            "value": str(settings.recording_heartbeat_seconds),
        },
        {
            "name": "KONFER_RECORDING_UPLOAD_ATTEMPTS",
            "value": str(settings.recording_upload_attempts),
        },
    ]
    if settings.s3_endpoint:
        env.append({"name": "KONFER_S3_ENDPOINT", "value": settings.s3_endpoint})
    if settings.s3_region:
        env.append({"name": "KONFER_S3_REGION", "value": settings.s3_region})
    return env


def streamer_job(spec: StreamerSpec, meeting: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The ``konfer streamer`` Job of one stream, owned by the meeting's Meeting object.

    ``backoffLimit`` 0: a streamer that crashed has already reported (or its exit is seen
    as the Job failing); restarting it would start a second, disjoint playlist.
    ``activeDeadlineSeconds``: the streamer's media token lifetime (``streaming.
    streamer_token``); past it the streamer can neither join nor report."""
    labels = {
        "app.kubernetes.io/name": f"konfer-{STREAMER_COMPONENT}",
        "app.kubernetes.io/component": STREAMER_COMPONENT,
        "app.kubernetes.io/part-of": "konfer",
        "app.kubernetes.io/managed-by": "konfer-api",
        "konfer.io/meeting": meeting["metadata"]["name"],
        "konfer.io/stream": spec.stream_id.lower(),
    }
    container: dict[str, Any] = {
        "name": STREAMER_COMPONENT,
        "image": settings.operator_recorder_image,
        "imagePullPolicy": settings.operator_image_pull_policy,
        "command": ["konfer"],
        "args": spec.args(),
        "env": _streamer_env(spec, settings),
        "envFrom": (
            [{"secretRef": {"name": settings.operator_env_secret, "optional": True}}]
            if settings.operator_env_secret
            else []
        ),
        "terminationMessagePath": STREAMER_TERMINATION_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        # RTMP of VP8 transcodes: more than a recorder's stream copy.
        "resources": {
            "requests": {"cpu": "500m", "memory": "256Mi"},
            "limits": {"cpu": "2", "memory": "1Gi"},
        },
        "volumeMounts": [
            {"name": "data", "mountPath": STREAMER_SCRATCH_DIR},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - the pod's own emptyDir
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": streamer_job_name(spec.stream_id),
            "namespace": meeting["metadata"].get("namespace"),
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "Meeting",
                    "name": meeting["metadata"]["name"],
                    "uid": meeting["metadata"]["uid"],
                }
            ],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": settings.recording_max_duration_seconds + 3600,
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": dict(settings.operator_recorder_pod_annotations),
                },
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": settings.operator_recorder_grace_seconds,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "containers": [container],
                    "volumes": [
                        {"name": "data", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {"medium": "Memory"}},
                    ],
                    "securityContext": {
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                },
            },
        },
    }
