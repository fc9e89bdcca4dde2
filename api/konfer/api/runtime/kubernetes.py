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
``spec.stop``; the recorder reports to the api over HTTP as it does locally. Called from
``app.attach_sfu``.
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

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.namespace = settings.kubernetes_namespace
        self._api: client.ApiClient | None = None
        self._lock = asyncio.Lock()

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
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": f"{name}-recorder",
                "ownerReferences": [
                    {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": "Recording",
                        "name": name,
                        "uid": rec["metadata"]["uid"],
                    }
                ],
            },
            "type": "Opaque",
            "stringData": {"token": spec.token},
        }
        core: Any = client.CoreV1Api(api)
        try:
            await core.create_namespaced_secret(self.namespace, secret)
        except ApiException as exc:
            if exc.status != 409:
                raise _unavailable(exc) from exc

    async def start_streamer(self, spec: StreamerSpec) -> None:
        raise ServiceUnavailable("Live streaming runs only in the local runtime for now")

    async def stop(self, recording_id: str) -> bool:
        """``spec.stop``: the operator suspends the Job and the recorder finishes."""
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
        if self._api is not None:
            await self._api.close()
            self._api = None
