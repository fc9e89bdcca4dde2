"""The Kubernetes model runtime (``KONFER_RUNTIME=kubernetes``): model servers are the pods
of InferenceModel objects (group konfer.io), which the operator turns into KServe
InferenceServices.

Built by ``inference.setup.attach_inference``; ``InferenceService`` calls it. Nothing here
belongs to one api replica: every replica lists the same InferenceModels and pods, so
``shared_nodes`` is set and the service adopts what ``discover`` finds on each round of
its probe loop (``InferenceService.sync``) and drops what has gone.

- ``specs``: the built-in models (names made DNS-1035 labels, ``whisper-tiny.en`` becomes
  ``whisper-tiny-en``: in a cluster a model's id is its InferenceModel's name) plus the
  namespace's InferenceModels, as last read by ``refresh`` (each ``discover`` refreshes).
- ``start``: creates the model's InferenceModel (labelled as the api's, ``minReplicas`` =
  the spec's, at least 1), or raises ``minReplicas`` by one when every wanted replica
  already has a pod (scale out); then waits, at most
  ``KONFER_AI_SERVER_START_TIMEOUT_SECONDS`` like a local server's start, for a pod of the
  InferenceService that was not Ready before to become Ready, and returns it as the node.
  On timeout the InferenceModel stays (a slow image pull still finishes and the pod joins
  through discovery) and the error carries the InferenceModel's phase and condition.
- ``stop``: lowers ``minReplicas`` by one (the ReplicaSet chooses which pod goes, not-Ready
  ones first); ``release`` (unloading a whole model) deletes an InferenceModel the api
  created and scales one the platform applied to zero, leaving the platform's object.
- ``discover``: one node per pod labelled ``serving.kserve.io/inferenceservice`` with an
  InferenceModel's name, addressed by pod IP and the predictor container's port (8080).
  A pod the cluster reports Ready is ``online`` (its readiness probe asked the server),
  still pending or unready ``starting``, failed ``offline``; a terminating pod is left out
  (scaled away, not failed).

- ``start_on`` (``load-on/{node}``): ``node`` is a Kubernetes node name. The api pins the
  InferenceModel it manages there (``spec.nodeSelector`` ``kubernetes.io/hostname``; the
  operator passes it to the predictor pods): created pinned, or pinned and, when already
  pinned there with every replica running, scaled out by one. A model's replicas share one
  placement, so pinning an unpinned or elsewhere-pinned model moves its servers (the
  Deployment rolls them out there). An InferenceModel the platform applied keeps its
  placement: ``load-on`` answers 409 unless it already selects that node. The api may not
  read cluster nodes, so an unknown or full node shows up as a pod the scheduler reports
  Unschedulable: the load fails at once with the scheduler's message (``MODEL_LOAD_FAILED``)
  and what this request changed is undone (the InferenceModel deleted when it made it, the
  former placement and replicas restored otherwise).
- ``rebalance``: the cluster already replaces failed pods (ReplicaSet) and restarts servers
  whose probes fail, and the api may not delete pods; what it repairs is placement the
  cluster cannot satisfy, on the InferenceModels it manages: a ``load-on`` pin whose pods
  are Unschedulable is removed (the scheduler places them anywhere), and replicas of an
  unpinned model that cannot be scheduled are given up (``minReplicas`` lowered to the pods
  that are placed, at least 1). Platform InferenceModels are left as applied. It answers
  the number of models changed and the Ready servers per Kubernetes node.

Node ids are pod names, so they survive api restarts and agree across replicas; a node's
``host`` is its pod's Kubernetes node.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from konfer.api.inference.errors import ModelLoadFailed
from konfer.api.inference.runtime import Node
from konfer.api.runtime.kubernetes import GROUP, MERGE, VERSION, _api_client
from konfer.core.errors import Conflict, ServiceUnavailable, ValidationFailed
from konfer.core.inference import BUILTIN_MODELS, Device, ModelSpec, Runtime, Task
from konfer.core.settings import Settings

log = logging.getLogger(__name__)

MODELS = "inferencemodels"
ISVC_LABEL = "serving.kserve.io/inferenceservice"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "konfer-api"
PREDICTOR_CONTAINER = "kserve-container"
PACKAGED = "packaged:"
HOSTNAME_LABEL = "kubernetes.io/hostname"
_POLL_SECONDS = 0.5
# Every call is bounded: a stalled API server must not hang the api's start or a probe round.
_TIMEOUT = {"_request_timeout": 10}


class ClusterUnavailable(ServiceUnavailable):
    """The Kubernetes API refused or failed a call about model servers."""

    default_message = "The cluster did not answer about model servers. Please try again shortly."


P = ParamSpec("P")
R = TypeVar("R")


def _reached(call: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """An API server that cannot be reached (or stalls) is a 503, never a bare 500."""

    @functools.wraps(call)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await call(*args, **kwargs)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.error("Kubernetes API unreachable", extra={"error": repr(exc)})
            raise ClusterUnavailable(
                f"The cluster's API server did not answer ({type(exc).__name__})"
            ) from exc

    return wrapper


def model_name(name: str) -> str:
    """A model's id as an InferenceModel name (a DNS-1035 label: no dots)."""
    return name.lower().replace(".", "-").replace("_", "-")


def builtin_specs() -> list[ModelSpec]:
    return [m.model_copy(update={"name": model_name(m.name)}) for m in BUILTIN_MODELS]


def inference_model(
    spec: ModelSpec, replicas: int, settings: Settings, host: str | None = None
) -> dict[str, Any]:
    """The InferenceModel the api creates to load ``spec`` with ``replicas`` servers (on the
    Kubernetes node ``host`` when given)."""
    body: dict[str, Any] = {
        "task": spec.task.value,
        "runtime": spec.runtime.value,
        "device": "gpu" if settings.ai_device == "gpu" else spec.device.value,
        "minReplicas": replicas,
        "maxReplicas": max(spec.max_replicas, replicas),
    }
    if host is not None:
        body["nodeSelector"] = {HOSTNAME_LABEL: host}
    uri = spec.storage_uri
    if uri:
        if uri.startswith(PACKAGED):
            body["storageUri"] = uri.removeprefix(PACKAGED)
        elif uri.startswith("s3://"):
            body["storageUri"] = uri
        else:
            raise ValidationFailed(
                f"Model {spec.name} comes from {uri}; in Kubernetes a model is packaged in the "
                "image or stored at s3://bucket/prefix"
            )
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceModel",
        "metadata": {
            "name": model_name(spec.name),
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, "app.kubernetes.io/part-of": "konfer"},
        },
        "spec": body,
    }


def spec_of(obj: dict[str, Any]) -> ModelSpec:
    """An InferenceModel read back as a spec; a built-in's name keeps its description."""
    name = str(obj["metadata"]["name"])
    s = obj.get("spec") or {}
    known = next((m for m in builtin_specs() if m.name == name), None)
    uri = s.get("storageUri")
    if uri and "://" not in uri:
        uri = PACKAGED + uri
    return ModelSpec(
        name=name,
        task=Task(s["task"]),
        runtime=Runtime(s.get("runtime", "builtin")),
        storage_uri=uri,
        device=Device(s.get("device", "cpu")),
        min_replicas=min(int(s.get("minReplicas", 1)), 16),
        max_replicas=max(1, min(int(s.get("maxReplicas", 1)), 16)),
        version=str((obj["metadata"].get("annotations") or {}).get("konfer.io/version", "1.0")),
        display_name=known.display_name if known else None,
        languages=known.languages if known else None,
        baseline=known.baseline if known else False,
    )


def _condition(pod: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def _port(pod: dict[str, Any], default: int) -> int:
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") == PREDICTOR_CONTAINER:
            for port in container.get("ports") or []:
                return int(port["containerPort"])
    return default


def _time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, str) and value:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


def unschedulable(pod: dict[str, Any]) -> str | None:
    """The scheduler's message when it cannot place ``pod`` (condition PodScheduled False,
    reason Unschedulable), else None."""
    cond = _condition(pod, "PodScheduled")
    if cond and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
        return str(cond.get("message") or "no node fits the pod")
    return None


def pinned_host(pod_or_model: dict[str, Any]) -> str | None:
    """The Kubernetes node a pod's or InferenceModel's ``nodeSelector`` names, if any."""
    selector = (pod_or_model.get("spec") or {}).get("nodeSelector") or {}
    host = selector.get(HOSTNAME_LABEL)
    return str(host) if host else None


def _managed(obj: dict[str, Any]) -> bool:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY


def pod_node(pod: dict[str, Any], spec: ModelSpec, default_port: int) -> Node:
    """One pod as a node; its status says what the cluster knows (the api's probes then
    take a Ready pod out of rotation when it does not answer the api)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    ip = status.get("podIP")
    node = Node(
        node_id=str(meta["name"]),
        spec=spec,
        url=f"http://{ip}:{_port(pod, default_port)}" if ip else "",
        device=spec.device.value,
    )
    node.host = (pod.get("spec") or {}).get("nodeName") or None
    node.discovered_at = _time(meta.get("creationTimestamp")) or node.discovered_at
    ready = _condition(pod, "Ready")
    phase = status.get("phase", "Pending")
    if meta.get("deletionTimestamp"):
        node.status = "stopped"  # scaled away or replaced: leaves rotation, no failure
        node.error = "pod terminating"
    elif phase in ("Failed", "Succeeded"):
        node.status = "offline"
        node.error = f"pod {phase.lower()}"
    elif ready is not None and ready.get("status") == "True" and ip:
        node.status = "online"
        node.loaded_at = node.last_seen = _time(ready.get("lastTransitionTime"))
    else:
        node.status = "starting"
        waiting = [
            (c.get("state") or {}).get("waiting") or {}
            for c in status.get("containerStatuses") or []
        ]
        reasons = [str(w["reason"]) for w in waiting if w.get("reason")]
        blocked = unschedulable(pod)
        if blocked:
            reasons.append(f"Unschedulable: {blocked}")
        node.error = f"pod {phase}" + (f" ({', '.join(reasons)})" if reasons else "")
    return node


def _phase_message(obj: dict[str, Any] | None) -> str:
    status = (obj or {}).get("status") or {}
    phase = f"phase {status.get('phase') or 'Pending'}"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            return f"{phase}, {cond.get('reason')}: {cond.get('message')}"
    return phase


class KubernetesModelRuntime:
    name = "kubernetes"
    shared_nodes = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.namespace = settings.kubernetes_namespace
        self._deployed: dict[str, ModelSpec] = {}
        self._objects: dict[str, dict[str, Any]] = {}
        self._api: client.ApiClient | None = None
        self._lock = asyncio.Lock()

    async def _client(self) -> client.ApiClient:
        async with self._lock:
            if self._api is None:
                self._api = await _api_client(self.settings)
        return self._api

    async def _custom(self) -> Any:
        return client.CustomObjectsApi(await self._client())

    # --- models -------------------------------------------------------------------------

    def specs(self) -> list[ModelSpec]:
        return [m for m in builtin_specs() if m.name not in self._deployed] + list(
            self._deployed.values()
        )

    @_reached
    async def refresh(self) -> None:
        """Reads the namespace's InferenceModels (the deployed models)."""
        custom = await self._custom()
        try:
            listed = await custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, MODELS, **_TIMEOUT
            )
        except ApiException as exc:
            raise _unavailable(exc) from exc
        deployed: dict[str, ModelSpec] = {}
        objects: dict[str, dict[str, Any]] = {}
        for obj in listed.get("items") or []:
            try:
                spec = spec_of(obj)
            except (KeyError, ValueError) as exc:
                log.warning(
                    "InferenceModel skipped",
                    extra={"name": obj.get("metadata", {}).get("name"), "error": str(exc)},
                )
                continue
            deployed[spec.name] = spec
            objects[spec.name] = obj
        self._deployed, self._objects = deployed, objects

    async def _read(self, name: str) -> dict[str, Any] | None:
        custom = await self._custom()
        try:
            obj: dict[str, Any] = await custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, MODELS, name, **_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _unavailable(exc) from exc
        return obj

    async def _pods(self, model: str | None = None) -> list[dict[str, Any]]:
        core: Any = client.CoreV1Api(await self._client())
        selector = f"{ISVC_LABEL}={model}" if model else ISVC_LABEL
        try:
            # Plain dicts: the typed models would cost a conversion per pod and field.
            response = await core.list_namespaced_pod(
                self.namespace, label_selector=selector, _preload_content=False, **_TIMEOUT
            )
            body = await response.json()
        except ApiException as exc:
            raise _unavailable(exc) from exc
        return list(body.get("items") or [])

    async def scale(self, spec: ModelSpec, *, out: bool) -> int:
        """Creates the InferenceModel, or raises ``minReplicas`` (by one when ``out``, else
        to at least 1); returns the replicas now wanted. Conflicting writers (two replicas
        loading at once) retry on the object's newest version."""
        name = model_name(spec.name)
        custom = await self._custom()
        for _ in range(5):
            obj = await self._read(name)
            if obj is None:
                replicas = max(spec.min_replicas, 1)
                try:
                    await custom.create_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, MODELS,
                        inference_model(spec, replicas, self.settings), **_TIMEOUT,
                    )  # fmt: skip
                except ApiException as exc:
                    if exc.status == 409:
                        continue
                    raise _unavailable(exc) from exc
                log.info("created InferenceModel", extra={"model": name, "replicas": replicas})
                return replicas
            current = int((obj.get("spec") or {}).get("minReplicas", 1))
            wanted = current + 1 if out and current > 0 else max(current, 1)
            if wanted == current:
                return current
            patch = {
                "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                "spec": {
                    "minReplicas": wanted,
                    "maxReplicas": max(int(obj["spec"].get("maxReplicas", 1)), wanted),
                },
            }
            try:
                await custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    MODELS,
                    name,
                    patch,
                    _content_type=MERGE,
                    **_TIMEOUT,
                )
            except ApiException as exc:
                if exc.status in (404, 409):
                    continue
                raise _unavailable(exc) from exc
            log.info("scaled InferenceModel", extra={"model": name, "replicas": wanted})
            return wanted
        raise ClusterUnavailable(f"InferenceModel {name} kept changing; try again")

    async def _servers(self, spec: ModelSpec) -> tuple[list[Node], set[str]]:
        """The model's servers now, and which of them are online (a start waits for a new one)."""
        before = [
            pod_node(p, spec, self._default_port) for p in await self._pods(model_name(spec.name))
        ]
        return before, {n.node_id for n in before if n.status == "online"}

    @_reached
    async def start(self, spec: ModelSpec, node_id: str) -> Node:
        name = model_name(spec.name)
        before, ready_before = await self._servers(spec)
        # Scale out when every wanted replica already has a pod; else wait for those.
        obj = await self._read(name)
        wanted = int(((obj or {}).get("spec") or {}).get("minReplicas", 0))
        live = [n for n in before if n.status != "offline"]
        await self.scale(spec, out=obj is not None and wanted > 0 and len(live) >= wanted)
        return await self._ready(spec, ready_before)

    @_reached
    async def start_on(self, spec: ModelSpec, host: str) -> Node:
        """A server of ``spec`` on the Kubernetes node ``host`` (see the module's notes)."""
        name = model_name(spec.name)
        before, ready_before = await self._servers(spec)
        undo = await self._pin(spec, host, before)
        try:
            return await self._ready(
                spec, ready_before, host=host, known={n.node_id for n in before}
            )
        except _Unplaceable as exc:
            outcome = "the placement was undone"
            try:
                await undo()
            except (ApiException, aiohttp.ClientError, TimeoutError) as undo_exc:
                outcome = "undoing the placement failed; unload the model to clear it"
                log.error(
                    "could not undo a failed placement",
                    extra={"model": name, "host": host, "error": repr(undo_exc)},
                )
            raise ModelLoadFailed(
                f"Failed to load model: Kubernetes cannot schedule {name} on node {host} "
                f"(pod {exc.pod}: {exc.reason}); {outcome}"
            ) from exc

    async def _pin(
        self, spec: ModelSpec, host: str, before: list[Node]
    ) -> Callable[[], Coroutine[Any, Any, None]]:
        """Pins the model's InferenceModel to ``host`` (creating it so) and returns how to
        undo that. Conflicting writers retry on the object's newest version."""
        name = model_name(spec.name)
        custom = await self._custom()
        for _ in range(5):
            obj = await self._read(name)
            if obj is None:
                replicas = max(spec.min_replicas, 1)
                manifest = inference_model(spec, replicas, self.settings, host=host)
                try:
                    await custom.create_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, MODELS, manifest, **_TIMEOUT
                    )
                except ApiException as exc:
                    if exc.status == 409:
                        continue
                    raise _unavailable(exc) from exc
                log.info("created pinned InferenceModel", extra={"model": name, "host": host})

                async def delete() -> None:
                    await custom.delete_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, MODELS, name, **_TIMEOUT
                    )

                return delete
            pinned = pinned_host(obj)
            if not _managed(obj):
                if pinned != host:
                    where = f"node {pinned}" if pinned else "the nodes its spec selects"
                    raise Conflict(
                        f"InferenceModel {name} was applied by the platform and runs on {where}; "
                        "the api does not change its placement. Load it with "
                        f"POST /api/v1/models/{name}/load, or set spec.nodeSelector in the object"
                    )
                # The platform's own pin is this node: loading here is scaling out.
                replicas = int(obj["spec"].get("minReplicas", 1))
                await self.scale(spec, out=True)
                return self._restore(name, replicas)
            current = int((obj.get("spec") or {}).get("minReplicas", 1))
            here = [n for n in before if n.status != "offline" and n.host == host]
            if pinned == host:
                wanted = current + 1 if current > 0 and len(here) >= current else max(current, 1)
            else:
                wanted = max(current, 1)  # the rollout moves the replicas to ``host``
            patch: dict[str, Any] = {
                "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                "spec": {
                    "nodeSelector": {HOSTNAME_LABEL: host},
                    "minReplicas": wanted,
                    "maxReplicas": max(int(obj["spec"].get("maxReplicas", 1)), wanted),
                },
            }
            try:
                await self._patch(name, patch)
            except ApiException as exc:
                if exc.status in (404, 409):
                    continue
                raise _unavailable(exc) from exc
            log.info(
                "pinned InferenceModel",
                extra={"model": name, "host": host, "replicas": wanted, "was": pinned},
            )
            return self._restore(name, current, placed=True, host=pinned)
        raise ClusterUnavailable(f"InferenceModel {name} kept changing; try again")

    def _restore(
        self, name: str, replicas: int, *, placed: bool = False, host: str | None = None
    ) -> Callable[[], Coroutine[Any, Any, None]]:
        """Undo for a load-on: the former replica count and, when the api ``placed`` the
        model (never a platform's object), its former node (``host``; None: no pin)."""

        async def restore() -> None:
            spec: dict[str, Any] = {"minReplicas": replicas}
            if placed:
                spec["nodeSelector"] = {HOSTNAME_LABEL: host}
            await self._patch(name, {"spec": spec})

        return restore

    async def _patch(self, name: str, patch: dict[str, Any]) -> None:
        custom = await self._custom()
        await custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, MODELS, name, patch, _content_type=MERGE, **_TIMEOUT
        )

    async def _ready(
        self,
        spec: ModelSpec,
        ready_before: set[str],
        *,
        host: str | None = None,
        known: set[str] | None = None,
    ) -> Node:
        """Waits for a pod that was not Ready before to be Ready (on ``host`` when given).

        With ``host``, a new pod the scheduler cannot place there ends the wait at once
        (``_Unplaceable``): one node named by hand does not free up by waiting. Without it
        the wait goes on (an autoscaler may be adding a node) and a timeout names the
        scheduler's message."""
        name = model_name(spec.name)
        started = time.monotonic()
        deadline = started + self.settings.ai_server_start_timeout_seconds
        while True:
            pods = await self._pods(name)
            for pod in pods:
                node = pod_node(pod, spec, self._default_port)
                if (
                    node.status == "online"
                    and node.node_id not in ready_before
                    and (host is None or node.host == host)
                ):
                    node.load_seconds = time.monotonic() - started
                    log.info(
                        "model server pod ready", extra={"node_id": node.node_id, "host": node.host}
                    )
                    return node
            blocked = [
                (str(p["metadata"]["name"]), reason)
                for p in pods
                if not (p.get("metadata") or {}).get("deletionTimestamp")
                and (reason := unschedulable(p))
            ]
            if host is not None:
                mine = [
                    (pod, reason)
                    for pod, reason in blocked
                    if pod not in (known or set())
                    and any(p["metadata"]["name"] == pod and pinned_host(p) == host for p in pods)
                ]
                if mine:
                    raise _Unplaceable(*mine[0])
            if time.monotonic() > deadline:
                why = (
                    f"pod {blocked[0][0]} is Unschedulable: {blocked[0][1]}"
                    if blocked
                    else _phase_message(await self._read(name))
                )
                raise ModelLoadFailed(
                    f"Failed to load model: no pod of InferenceModel {name} became ready "
                    + (f"on node {host} " if host else "")
                    + f"within {self.settings.ai_server_start_timeout_seconds:g}s ({why}); "
                    "it stays deployed and its pods join GET /api/v1/nodes when they are ready"
                )
            await asyncio.sleep(_POLL_SECONDS)

    @property
    def _default_port(self) -> int:
        return self.settings.operator_model_server_port

    @_reached
    async def stop(self, node: Node) -> None:
        """One replica fewer (the ReplicaSet picks the pod; not-Ready ones go first)."""
        node.status = "stopped"
        name = model_name(node.spec.name)
        custom = await self._custom()
        for _ in range(5):
            obj = await self._read(name)
            if obj is None:
                return
            current = int((obj.get("spec") or {}).get("minReplicas", 1))
            if current <= 0:
                return
            patch = {
                "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                "spec": {"minReplicas": current - 1},
            }
            try:
                await custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    MODELS,
                    name,
                    patch,
                    _content_type=MERGE,
                    **_TIMEOUT,
                )
                return
            except ApiException as exc:
                if exc.status == 404:
                    return
                if exc.status != 409:
                    raise _unavailable(exc) from exc
        raise ClusterUnavailable(f"InferenceModel {name} kept changing; try again")

    @_reached
    async def release(self, spec: ModelSpec) -> None:
        """Unload a whole model: delete the api's InferenceModel; scale a platform's one to
        zero (its object, storage and settings stay as the platform applied them)."""
        name = model_name(spec.name)
        obj = await self._read(name)
        if obj is None:
            return
        custom = await self._custom()
        labels = obj["metadata"].get("labels") or {}
        try:
            if labels.get(MANAGED_BY_LABEL) == MANAGED_BY:
                await custom.delete_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, MODELS, name, **_TIMEOUT
                )
                log.info("deleted InferenceModel", extra={"model": name})
            else:
                await custom.patch_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, MODELS, name,
                    {"spec": {"minReplicas": 0}}, _content_type=MERGE, **_TIMEOUT,
                )  # fmt: skip
                log.info("scaled InferenceModel to zero", extra={"model": name})
        except ApiException as exc:
            if exc.status != 404:
                raise _unavailable(exc) from exc

    @_reached
    async def rebalance(self) -> tuple[int, dict[str, int]]:
        """Repairs placement the cluster cannot satisfy on the api's InferenceModels (see
        the module's notes); returns (models changed, Ready servers per Kubernetes node)."""
        await self.refresh()
        pods = [p for p in await self._pods() if not p["metadata"].get("deletionTimestamp")]
        by_model: dict[str, list[dict[str, Any]]] = {}
        for pod in pods:
            model = str((pod["metadata"].get("labels") or {}).get(ISVC_LABEL))
            by_model.setdefault(model, []).append(pod)
        touched = 0
        for name, obj in self._objects.items():
            mine = by_model.get(name, [])
            stuck = [p for p in mine if unschedulable(p)]
            if not stuck or not _managed(obj):
                continue
            change: dict[str, Any] = {}
            if pinned_host(obj):
                change["nodeSelector"] = {HOSTNAME_LABEL: None}
            else:
                current = int(obj["spec"].get("minReplicas", 1))
                placed = len(mine) - len(stuck)
                wanted = max(1, min(current, placed))
                if wanted < current:
                    change["minReplicas"] = wanted
            if not change:
                continue
            patch = {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}}
            try:
                await self._patch(name, {**patch, "spec": change})
            except ApiException as exc:
                if exc.status in (404, 409):  # changed meanwhile: the next rebalance sees it
                    continue
                raise _unavailable(exc) from exc
            log.info(
                "rebalanced InferenceModel",
                extra={"model": name, "change": change, "unschedulable": len(stuck)},
            )
            touched += 1
        distribution: dict[str, int] = {}
        for pod in pods:
            model = str((pod["metadata"].get("labels") or {}).get(ISVC_LABEL))
            spec = self._deployed.get(model)
            if spec is None:
                continue
            node = pod_node(pod, spec, self._default_port)
            if node.status == "online" and node.host:
                distribution[node.host] = distribution.get(node.host, 0) + 1
        return touched, distribution

    # --- nodes ----------------------------------------------------------------------------

    @_reached
    async def discover(self) -> list[Node]:
        await self.refresh()
        specs = {s.name: s for s in self.specs()}
        nodes = []
        for pod in await self._pods():
            model = ((pod.get("metadata") or {}).get("labels") or {}).get(ISVC_LABEL)
            spec = specs.get(str(model))
            if spec is not None and model in self._deployed:
                node = pod_node(pod, spec, self._default_port)
                if node.status != "stopped":
                    nodes.append(node)
        return nodes

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None


class _Unplaceable(Exception):
    """The scheduler cannot place the pod on the node ``load-on`` named."""

    def __init__(self, pod: str, reason: str) -> None:
        super().__init__(f"pod {pod}: {reason}")
        self.pod, self.reason = pod, reason


def _unavailable(exc: ApiException) -> ClusterUnavailable:
    log.error("Kubernetes API error", extra={"status": exc.status, "reason": exc.reason})
    return ClusterUnavailable(
        f"The cluster refused a model server request ({exc.status} {exc.reason})"
    )
