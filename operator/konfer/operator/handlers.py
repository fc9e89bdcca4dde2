"""kopf handlers: thin glue between the API server and the pure ``builders``/``status``.

How it is put together (and why):

* kopf's on.create/on.update/on.resume handlers make a resource's children (create, or
  merge-patch back to the desired shape when they exist: idempotent under retries and
  restarts, found again by deterministic names).
* kopf indexes keep the watched objects (Meetings, Recordings, InferenceModels, SFU and
  recorder pods, recorder Jobs, InferenceServices) in memory; every change to one marks
  its parent dirty.
* One engine task (:class:`Engine`) turns dirty parents into status: it feeds the indexed
  state and the clock to ``status`` and patches the status subresource only when it
  changed, guarded by resourceVersion. It also sweeps every Meeting each
  ``KONFER_OPERATOR_RESYNC_SECONDS`` for the clock (``endTime``, idle timeout, start
  timeout). No per-object timers or daemons: those would need a finalizer on every
  Meeting, and nothing outside the cluster needs cleaning when one goes.

Participants: the api patches ``status.participants`` of its Meetings (it knows who is
connected); the engine ends a Running Meeting whose ``Occupied`` condition has been False
for ``idleTimeoutSeconds``. Stopping a Recording (``spec.stop: true``) suspends its Job:
the Job controller deletes the pod, the recorder gets SIGTERM, finishes and uploads the
file within ``KONFER_OPERATOR_RECORDER_GRACE_SECONDS`` and leaves its summary in the
termination message.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from konfer.core.settings import Settings
from konfer.operator import builders, kube
from konfer.operator import status as st
from konfer.operator.metrics import OperatorMetrics
from konfer.operator.models import (
    API_VERSION,
    FINALIZER,
    GROUP,
    LABEL_COMPONENT,
    LABEL_MEETING,
    LABEL_MODEL,
    LABEL_RECORDING,
    OPERATOR_PREFIX,
    VERSION,
    InferenceModelSpec,
    MeetingSpec,
    ObjectRef,
    RecordingSpec,
    child_name,
)

log = logging.getLogger(__name__)

registry = kopf.OperatorRegistry()

MEETINGS, RECORDINGS, MODELS = "meetings", "recordings", "inferencemodels"
PLURAL = {"Meeting": MEETINGS, "Recording": RECORDINGS, "InferenceModel": MODELS}
KSERVE = ("serving.kserve.io", "v1beta1", "inferenceservices")
MERGE = "application/merge-patch+json"

Key = tuple[str, str, str]  # (kind, namespace, name)
Snapshot = dict[str, Any]


def now_utc() -> datetime:
    return datetime.now(UTC)


def operator_settings(settings: Settings) -> kopf.OperatorSettings:
    """kopf's own knobs: our finalizer and annotation prefix, quiet events, no peering
    (``main`` elects a leader with a Lease instead), no cluster-wide CRD scanning."""
    ks = kopf.OperatorSettings()
    ks.persistence.finalizer = FINALIZER
    ks.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=OPERATOR_PREFIX)
    ks.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=OPERATOR_PREFIX, key="last-handled-configuration"
    )
    ks.posting.level = logging.WARNING
    ks.peering.standalone = True
    ks.scanning.disabled = True
    ks.watching.server_timeout = 300
    ks.execution.max_workers = 4
    return ks


# --- the engine --------------------------------------------------------------------


@dataclass(eq=False)
class Engine:
    """Status writer and clock; one per operator process (kopf's memo carries it)."""

    settings: Settings
    api: client.ApiClient
    metrics: OperatorMetrics
    indexes: dict[str, Any] = field(default_factory=dict)
    dirty: set[Key] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    written: dict[Key, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    busy: set[Key] = field(default_factory=set)
    task: asyncio.Task[None] | None = None

    def touch(self, kind: str, namespace: str, name: str) -> None:
        self.dirty.add((kind, namespace, name))
        self.wake.set()

    def later(self, key: Key, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self.touch, *key)

    # -- indexed state ---------------------------------------------------------------

    def _first(self, index: str, key: tuple[str, str]) -> Any:
        store = self.indexes.get(index, {}).get(key)
        return next(iter(store), None) if store else None

    def _all(self, index: str, key: tuple[str, str]) -> list[Any]:
        store = self.indexes.get(index, {}).get(key)
        return list(store) if store else []

    def keys(self, kind: str) -> list[Key]:
        index = {"Meeting": "meeting_index", "Recording": "recording_index"}.get(
            kind, "model_index"
        )
        return [(kind, ns, name) for ns, name in list(self.indexes.get(index, {}))]

    # -- the loop --------------------------------------------------------------------

    async def run(self) -> None:
        resync = self.settings.operator_resync_seconds
        last_meetings = last_all = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=resync)
            self.wake.clear()
            keys, self.dirty = self.dirty, set()
            mono = time.monotonic()
            if mono - last_meetings >= resync:
                keys.update(self.keys("Meeting"))
                last_meetings = mono
            if mono - last_all >= 30 * resync:
                keys.update(self.keys("Recording") + self.keys("InferenceModel"))
                last_all = mono
                self._count_phases()
            jobs: list[Awaitable[None]] = []
            for key in keys:
                if key in self.busy:
                    self.dirty.add(key)  # again once the running sync is done
                    continue
                try:
                    work = self.plan(key)
                except Exception:  # a bug for one object must not stop the others
                    log.exception("planning %s/%s/%s failed", *key)
                    self.later(key, 5.0)
                    continue
                if work is not None:
                    jobs.append(self._guard(key, work))
            if jobs:
                for chunk in _chunks(jobs, 32):
                    await asyncio.gather(*chunk)

    async def _guard(self, key: Key, work: Awaitable[None]) -> None:
        kind = key[0]
        self.busy.add(key)
        started = time.perf_counter()
        try:
            await work
            self.metrics.reconciles.labels(kind, "ok").inc()
        except ApiException as exc:
            if exc.status == 409:
                self.metrics.conflicts.labels(kind).inc()
                self.later(key, 0.2)
            else:
                log.warning("sync of %s/%s/%s failed: %s %s", *key, exc.status, exc.reason)
                self.metrics.reconciles.labels(kind, "error").inc()
                self.later(key, 2.0)
        except Exception:
            log.exception("sync of %s/%s/%s crashed", *key)
            self.metrics.reconciles.labels(kind, "error").inc()
            self.later(key, 5.0)
        finally:
            self.busy.discard(key)
            self.metrics.reconcile_seconds.labels(kind).observe(time.perf_counter() - started)

    def _count_phases(self) -> None:
        for kind, index in (
            ("Meeting", "meeting_index"),
            ("Recording", "recording_index"),
            ("InferenceModel", "model_index"),
        ):
            counts: dict[str, int] = {}
            for store in list(self.indexes.get(index, {}).values()):
                for snap in store:
                    phase = (snap.get("status") or {}).get("phase") or "Pending"
                    counts[phase] = counts.get(phase, 0) + 1
            for phase, n in counts.items():
                self.metrics.objects.labels(kind, phase).set(n)

    def plan(self, key: Key) -> Awaitable[None] | None:
        """Pure work first (cheap for a thousand Meetings); I/O only when something moves."""
        kind, ns, name = key
        if kind == "Meeting":
            return self._plan_meeting(ns, name)
        if kind == "Recording":
            return self._plan_recording(ns, name)
        return self._plan_model(ns, name)

    # -- status writes ---------------------------------------------------------------

    async def write_status(self, key: Key, snap: Snapshot, new: dict[str, Any]) -> None:
        kind, ns, name = key
        rv = snap["metadata"]["resourceVersion"]
        body = {"metadata": {"resourceVersion": rv}, "status": _merge_patch(snap["status"], new)}
        await cast(Any, client.CustomObjectsApi(self.api)).patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, PLURAL[kind], name, body, _content_type=MERGE
        )
        self.written[key] = (rv, new)
        self.metrics.status_writes.labels(kind).inc()

    def _changed(self, key: Key, snap: Snapshot, new: dict[str, Any]) -> bool:
        if new == snap["status"]:
            self.written.pop(key, None)
            return False
        last = self.written.get(key)
        # Already written from this very version: wait for the watch to bring the write
        # back (it touches the object again). Writing now, even something newer, would be
        # refused: the object is no longer at this version.
        return not (last and last[0] == snap["metadata"]["resourceVersion"])

    # -- Meetings --------------------------------------------------------------------

    def _plan_meeting(self, ns: str, name: str) -> Awaitable[None] | None:
        key: Key = ("Meeting", ns, name)
        snap = self._first("meeting_index", (ns, name))
        if snap is None or snap["metadata"].get("deletionTimestamp"):
            self.written.pop(key, None)
            return None
        owner = _owner("Meeting", snap)
        try:
            spec = MeetingSpec.model_validate(snap["spec"])
        except ValidationError as exc:
            return self._invalid(key, snap, exc)
        decision = st.meeting_status(
            st.MeetingInput(
                spec=spec,
                status=snap["status"],
                generation=owner.generation,
                endpoint=builders.sfu_endpoint(name, ns, self.settings),
                host_network=self.settings.operator_sfu_host_network,
                pods=self._all("sfu_pod_index", (ns, name)),
            ),
            now_utc(),
            self.settings.operator_sfu_start_timeout_seconds,
        )
        new = {**decision.status, "observedGeneration": owner.generation}
        changed = self._changed(key, snap, new)
        wants_recording = decision.auto_record and not self._first(
            "recording_index", (ns, child_name(name, "auto"))
        )
        idle = decision.action is st.MeetingAction.none
        if not changed and idle and not wants_recording:
            return None
        return self._sync_meeting(key, snap, spec, owner, decision, new, changed, wants_recording)

    async def _sync_meeting(
        self,
        key: Key,
        snap: Snapshot,
        spec: MeetingSpec,
        owner: ObjectRef,
        decision: st.MeetingDecision,
        new: dict[str, Any],
        changed: bool,
        wants_recording: bool,
    ) -> None:
        if decision.action is st.MeetingAction.ensure:
            await ensure_meeting_children(self, spec, owner)
        elif decision.action is st.MeetingAction.end:
            await end_meeting(self, owner)
        if wants_recording:
            await create_child(self, builders.auto_recording(spec, owner), owner)
        if changed:
            await self.write_status(key, snap, new)
        for rec in self.keys("Recording"):  # their Meeting moved: look at them again
            rsnap = self._first("recording_index", (rec[1], rec[2]))
            if (
                rec[1] == owner.namespace
                and rsnap
                and rsnap["spec"].get("meetingRef") == owner.name
            ):
                self.touch(*rec)

    def _invalid(self, key: Key, snap: Snapshot, exc: ValidationError) -> Awaitable[None] | None:
        new = {
            **snap["status"],
            "phase": "Failed",
            "observedGeneration": snap["metadata"].get("generation", 0),
            "conditions": st.set_condition(
                snap["status"].get("conditions") or [],
                "Ready",
                False,
                "InvalidSpec",
                str(exc).replace("\n", " ")[:1000],
                now_utc(),
                int(snap["metadata"].get("generation", 0)),
            ),
        }
        return self.write_status(key, snap, new) if self._changed(key, snap, new) else None

    # -- Recordings ------------------------------------------------------------------

    def _plan_recording(self, ns: str, name: str) -> Awaitable[None] | None:
        key: Key = ("Recording", ns, name)
        snap = self._first("recording_index", (ns, name))
        if snap is None or snap["metadata"].get("deletionTimestamp"):
            return None
        owner = _owner("Recording", snap)
        try:
            spec = RecordingSpec.model_validate(snap["spec"])
        except ValidationError as exc:
            return self._invalid(key, snap, exc)
        meeting = None
        msnap = self._first("meeting_index", (ns, spec.meeting_ref))
        if msnap is not None:
            mspec = msnap["spec"]
            sfu = msnap["status"].get("sfu") or {}
            meeting = st.MeetingRef(
                phase=msnap["status"].get("phase"),
                endpoint=sfu.get("endpoint"),
                ready=bool(sfu.get("ready")),
                meeting_id=mspec.get("meetingId") or msnap["metadata"]["uid"],
            )
        job = self._first("job_index", (ns, name))
        decision = st.recording_status(
            spec,
            snap["status"],
            owner.generation,
            meeting,
            job,
            self._all("recorder_pod_index", (ns, name)),
            now_utc(),
        )
        new = {**decision.status, "observedGeneration": owner.generation}
        changed = self._changed(key, snap, new)
        if not changed and decision.action is st.RecordingAction.none:
            return None
        return self._sync_recording(key, snap, spec, owner, meeting, decision, new, changed)

    async def _sync_recording(
        self,
        key: Key,
        snap: Snapshot,
        spec: RecordingSpec,
        owner: ObjectRef,
        meeting: st.MeetingRef | None,
        decision: st.RecordingDecision,
        new: dict[str, Any],
        changed: bool,
    ) -> None:
        created = False
        if decision.action is st.RecordingAction.create_job and meeting and meeting.endpoint:
            job = builders.recorder_job(
                spec,
                owner,
                meeting_id=meeting.meeting_id,
                sfu_url=meeting.endpoint,
                settings=self.settings,
            )
            await create_child(self, job, owner)
            new = {**new, "jobName": job["metadata"]["name"]}
            created = True
        elif decision.action is st.RecordingAction.stop_job:
            with contextlib.suppress(_NotFound):
                batch: Any = client.BatchV1Api(self.api)
                await _call(
                    batch.patch_namespaced_job(
                        builders.recorder_job_name(owner.name),
                        owner.namespace,
                        {"spec": {"suspend": True}},
                        _content_type=MERGE,
                    )
                )
        if changed or created:
            await self.write_status(key, snap, new)

    # -- InferenceModels -------------------------------------------------------------

    def _plan_model(self, ns: str, name: str) -> Awaitable[None] | None:
        key: Key = ("InferenceModel", ns, name)
        snap = self._first("model_index", (ns, name))
        if snap is None or snap["metadata"].get("deletionTimestamp"):
            return None
        try:
            spec = InferenceModelSpec.model_validate(snap["spec"])
        except ValidationError as exc:
            return self._invalid(key, snap, exc)
        generation = int(snap["metadata"].get("generation", 0))
        ready = sum(1 for ok in self._all("model_pod_index", (ns, name)) if ok)
        new = {
            **st.model_status(
                spec,
                snap["status"],
                generation,
                self._first("isvc_index", (ns, name)),
                ready,
                now_utc(),
            ),
            "observedGeneration": generation,
        }
        return self.write_status(key, snap, new) if self._changed(key, snap, new) else None


def _chunks(items: list[Awaitable[None]], size: int) -> Iterable[list[Awaitable[None]]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch from old to new status (removed keys become null)."""
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for k, v in new.items():
        if old.get(k) != v:
            patch[k] = v
    return patch


def _owner(kind: str, snap: Snapshot) -> ObjectRef:
    return ObjectRef.of(kind, snap)


# --- children ----------------------------------------------------------------------


class _NotFound(Exception):
    pass


async def _call(awaitable: Awaitable[Any]) -> Any:
    try:
        return await awaitable
    except ApiException as exc:
        if exc.status == 404:
            raise _NotFound from exc
        raise


def _owner_uids(obj: Any) -> set[str]:
    if isinstance(obj, dict):
        refs = (obj.get("metadata") or {}).get("ownerReferences") or []
        return {str(r.get("uid")) for r in refs}
    refs = obj.metadata.owner_references or []
    return {str(r.uid) for r in refs}


def _api_for(
    engine: Engine, manifest: Mapping[str, Any]
) -> tuple[
    Callable[[], Awaitable[Any]],
    Callable[[], Awaitable[Any]],
    Callable[[Any], Awaitable[Any]] | None,
]:
    """(create, read, patch-to-desired given the existing object) for a child manifest;
    patch is None when the child's spec cannot change after creation (Jobs, Recordings)."""
    kind = manifest["kind"]
    ns = manifest["metadata"]["namespace"]
    name = manifest["metadata"]["name"]
    body: Any = dict(manifest)
    desired = {"metadata": {"labels": manifest["metadata"]["labels"]}, "spec": manifest["spec"]}
    if kind == "Deployment":
        apps: Any = client.AppsV1Api(engine.api)
        return (
            lambda: apps.create_namespaced_deployment(ns, body),
            lambda: apps.read_namespaced_deployment(name, ns),
            lambda _: apps.patch_namespaced_deployment(name, ns, desired, _content_type=MERGE),
        )
    if kind == "Service":
        core: Any = client.CoreV1Api(engine.api)
        return (
            lambda: core.create_namespaced_service(ns, body),
            lambda: core.read_namespaced_service(name, ns),
            lambda _: core.patch_namespaced_service(name, ns, desired, _content_type=MERGE),
        )
    if kind == "Job":
        batch = client.BatchV1Api(engine.api)
        return (
            lambda: batch.create_namespaced_job(ns, body),
            lambda: batch.read_namespaced_job(name, ns),
            None,
        )
    custom = cast(Any, client.CustomObjectsApi(engine.api))
    if kind == "InferenceService":
        group, version, plural = KSERVE
        return (
            lambda: custom.create_namespaced_custom_object(group, version, ns, plural, body),
            lambda: custom.get_namespaced_custom_object(group, version, ns, plural, name),
            # Node-selector keys the model dropped are nulled: the patch needs the object.
            lambda existing: custom.patch_namespaced_custom_object(
                group,
                version,
                ns,
                plural,
                name,
                builders.inference_service_patch(body, existing),
                _content_type=MERGE,
            ),
        )
    assert manifest["apiVersion"] == API_VERSION, manifest["apiVersion"]
    plural = PLURAL[kind]
    return (
        lambda: custom.create_namespaced_custom_object(GROUP, VERSION, ns, plural, body),
        lambda: custom.get_namespaced_custom_object(GROUP, VERSION, ns, plural, name),
        None,
    )


async def create_child(
    engine: Engine, manifest: Mapping[str, Any], owner: ObjectRef, *, update: bool = False
) -> None:
    """Create a child; when it exists (a retry, a restart), check it is ours and, when
    ``update``, bring it back to the desired spec. Never a second copy: names are fixed."""
    create, read, patch = _api_for(engine, manifest)
    kind = manifest["kind"]
    try:
        await create()
        engine.metrics.children_created.labels(kind).inc()
        return
    except ApiException as exc:
        if exc.status != 409:
            raise
    existing = await read()
    if owner.uid not in _owner_uids(existing):
        raise kopf.PermanentError(
            f"{kind} {manifest['metadata']['name']} exists and belongs to something else"
        )
    if update and patch is not None:
        await patch(existing)


async def ensure_meeting_children(engine: Engine, spec: MeetingSpec, owner: ObjectRef) -> None:
    if spec.media.mode == "mesh":
        return
    await create_child(
        engine, builders.sfu_deployment(spec, owner, engine.settings), owner, update=True
    )
    await create_child(engine, builders.sfu_service(owner, engine.settings), owner, update=True)


async def end_meeting(engine: Engine, owner: ObjectRef) -> None:
    """Take the SFU down (the Meeting stays as the record) and stop its auto-recording."""
    name, ns = builders.sfu_name(owner.name), owner.namespace
    with contextlib.suppress(_NotFound):
        await _call(
            client.AppsV1Api(engine.api).delete_namespaced_deployment(
                name, ns, propagation_policy="Background"
            )
        )
    with contextlib.suppress(_NotFound):
        await _call(client.CoreV1Api(engine.api).delete_namespaced_service(name, ns))
    auto = child_name(owner.name, "auto")
    if engine._first("recording_index", (ns, auto)) is not None:
        with contextlib.suppress(_NotFound):
            await _call(
                cast(Any, client.CustomObjectsApi(engine.api)).patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    ns,
                    RECORDINGS,
                    auto,
                    {"spec": {"stop": True}},
                    _content_type=MERGE,
                )
            )


# --- kopf wiring -------------------------------------------------------------------


def _ns(namespace: str | None) -> str:
    return namespace or ""


def _engine(memo: Any) -> Engine:
    engine: Engine = memo["engine"]
    return engine


def _snapshot(body: kopf.Body) -> Snapshot:
    meta = body["metadata"]
    return {
        "metadata": {
            k: copy.deepcopy(meta.get(k))
            for k in (
                "name",
                "namespace",
                "uid",
                "generation",
                "resourceVersion",
                "annotations",
                "deletionTimestamp",
            )
        },
        "spec": copy.deepcopy(dict(body.get("spec") or {})),
        "status": copy.deepcopy(dict(body.get("status") or {})),
    }


def _api_errors(exc: ApiException, what: str) -> kopf.TemporaryError | kopf.PermanentError:
    """Retry what time can fix (conflicts, throttling, a server restarting, RBAC being
    fixed); give up on what it cannot (the API server calls the child invalid)."""
    if exc.status in (400, 422):
        return kopf.PermanentError(f"{what} was refused: {exc.reason}: {exc.body!r}")
    delay = 30.0 if exc.status in (401, 403) else 2.0 if exc.status == 409 else 5.0
    return kopf.TemporaryError(f"{what}: {exc.status} {exc.reason}", delay=delay)


@kopf.on.login(registry=registry)
async def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    settings: Settings = memo["settings"]
    return await kube.connection_info(settings)


@kopf.on.startup(registry=registry)
async def start_engine(memo: kopf.Memo, **kwargs: Any) -> None:
    engine = _engine(memo)
    engine.indexes = {k: v for k, v in kwargs.items() if k.endswith("_index")}
    engine.task = asyncio.create_task(engine.run(), name="konfer-operator-engine")


@kopf.on.cleanup(registry=registry)
async def stop_engine(memo: kopf.Memo, **_: Any) -> None:
    engine = _engine(memo)
    if engine.task is not None:
        engine.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await engine.task


# Indexes: parents and the children that decide their status. All handlers are async:
# kopf runs sync ones in a thread pool, which a burst of pod events would queue behind.


@kopf.index(API_VERSION, MEETINGS, registry=registry)
async def meeting_index(
    *, namespace: str | None, name: str, body: kopf.Body, memo: Any, **_: Any
) -> dict[tuple[str, str], Snapshot]:
    _engine(memo).touch("Meeting", _ns(namespace), name)
    return {(_ns(namespace), name): _snapshot(body)}


@kopf.index(API_VERSION, RECORDINGS, registry=registry)
async def recording_index(
    *, namespace: str | None, name: str, body: kopf.Body, memo: Any, **_: Any
) -> dict[tuple[str, str], Snapshot]:
    _engine(memo).touch("Recording", _ns(namespace), name)
    return {(_ns(namespace), name): _snapshot(body)}


@kopf.index(API_VERSION, MODELS, registry=registry)
async def model_index(
    *, namespace: str | None, name: str, body: kopf.Body, memo: Any, **_: Any
) -> dict[tuple[str, str], Snapshot]:
    _engine(memo).touch("InferenceModel", _ns(namespace), name)
    return {(_ns(namespace), name): _snapshot(body)}


@kopf.index(
    "v1", "pods", labels={LABEL_COMPONENT: "sfu", LABEL_MEETING: kopf.PRESENT}, registry=registry
)
async def sfu_pod_index(
    *, namespace: str | None, labels: kopf.Labels, body: kopf.Body, memo: Any, **_: Any
) -> dict[tuple[str, str], st.PodView]:
    meeting = labels[LABEL_MEETING]
    _engine(memo).touch("Meeting", _ns(namespace), meeting)
    return {(_ns(namespace), meeting): st.pod_view(body)}


@kopf.index(
    "v1",
    "pods",
    labels={LABEL_COMPONENT: "recorder", LABEL_RECORDING: kopf.PRESENT},
    registry=registry,
)
async def recorder_pod_index(
    *, namespace: str | None, labels: kopf.Labels, body: kopf.Body, memo: Any, **_: Any
) -> dict[tuple[str, str], st.PodView]:
    recording = labels[LABEL_RECORDING]
    _engine(memo).touch("Recording", _ns(namespace), recording)
    return {(_ns(namespace), recording): st.pod_view(body)}


@kopf.index(
    "batch/v1",
    "jobs",
    labels={LABEL_COMPONENT: "recorder", LABEL_RECORDING: kopf.PRESENT},
    registry=registry,
)
async def job_index(
    *, namespace: str | None, labels: kopf.Labels, body: kopf.Body, memo: Any, **_: Any
) -> dict[tuple[str, str], st.JobView]:
    recording = labels[LABEL_RECORDING]
    _engine(memo).touch("Recording", _ns(namespace), recording)
    return {(_ns(namespace), recording): st.job_view(body)}


@kopf.index(
    f"{KSERVE[0]}/{KSERVE[1]}", KSERVE[2], labels={LABEL_MODEL: kopf.PRESENT}, registry=registry
)
async def isvc_index(
    *, namespace: str | None, labels: kopf.Labels, body: kopf.Body, memo: Any, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    model = labels[LABEL_MODEL]
    _engine(memo).touch("InferenceModel", _ns(namespace), model)
    return {(_ns(namespace), model): copy.deepcopy(dict(body))}


@kopf.index("v1", "pods", labels={LABEL_MODEL: kopf.PRESENT}, registry=registry)
async def model_pod_index(
    *, namespace: str | None, labels: kopf.Labels, body: kopf.Body, memo: Any, **_: Any
) -> dict[tuple[str, str], bool]:
    model = labels[LABEL_MODEL]
    _engine(memo).touch("InferenceModel", _ns(namespace), model)
    view = st.pod_view(body)
    return {(_ns(namespace), model): view.ready and not view.deleting}


# Spec handlers: make the children, then let the engine write the status.


@kopf.on.resume(API_VERSION, MEETINGS, registry=registry)
@kopf.on.create(API_VERSION, MEETINGS, registry=registry)
@kopf.on.update(API_VERSION, MEETINGS, field="spec", registry=registry)
async def reconcile_meeting(
    *, spec: kopf.Spec, body: kopf.Body, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    engine = _engine(memo)
    owner = ObjectRef.of("Meeting", body)
    phase = (body.get("status") or {}).get("phase")
    try:
        parsed = MeetingSpec.model_validate(dict(spec))
    except ValidationError as exc:
        engine.touch("Meeting", _ns(namespace), name)  # the engine reports it as Failed
        raise kopf.PermanentError(f"invalid Meeting spec: {exc}") from exc
    now = now_utc()
    due = parsed.start_time is None or parsed.start_time <= now
    over = phase in ("Ending", "Ended") or (parsed.end_time is not None and parsed.end_time <= now)
    if due and not over:
        await _reconcile(engine, "Meeting", ensure_meeting_children(engine, parsed, owner))
    engine.touch("Meeting", _ns(namespace), name)


@kopf.on.resume(API_VERSION, RECORDINGS, registry=registry)
@kopf.on.create(API_VERSION, RECORDINGS, registry=registry)
@kopf.on.update(API_VERSION, RECORDINGS, field="spec", registry=registry)
async def reconcile_recording(*, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    # The Job waits for the Meeting's SFU: the engine creates it when that is ready.
    _engine(memo).touch("Recording", _ns(namespace), name)


@kopf.on.resume(API_VERSION, MODELS, registry=registry)
@kopf.on.create(API_VERSION, MODELS, registry=registry)
@kopf.on.update(API_VERSION, MODELS, field="spec", registry=registry)
async def reconcile_model(
    *, spec: kopf.Spec, body: kopf.Body, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    engine = _engine(memo)
    owner = ObjectRef.of("InferenceModel", body)
    try:
        parsed = InferenceModelSpec.model_validate(dict(spec))
    except ValidationError as exc:
        engine.touch("InferenceModel", _ns(namespace), name)
        raise kopf.PermanentError(f"invalid InferenceModel spec: {exc}") from exc
    manifest = builders.inference_service(parsed, owner, engine.settings)
    await _reconcile(engine, "InferenceModel", create_child(engine, manifest, owner, update=True))
    engine.touch("InferenceModel", _ns(namespace), name)


async def _reconcile(engine: Engine, kind: str, work: Awaitable[None]) -> None:
    started = time.perf_counter()
    try:
        await work
    except ApiException as exc:
        engine.metrics.reconciles.labels(kind, "error").inc()
        raise _api_errors(exc, f"{kind} children") from exc
    finally:
        engine.metrics.reconcile_seconds.labels(kind).observe(time.perf_counter() - started)
    engine.metrics.reconciles.labels(kind, "ok").inc()


@kopf.on.probe(id="engine", registry=registry)
async def engine_alive(memo: Any, **_: Any) -> bool:
    """Liveness: kopf's /healthz answers 500 when the engine task has died."""
    engine = _engine(memo)
    if engine.task is None or engine.task.done():
        raise RuntimeError("the status engine has stopped")
    return True
