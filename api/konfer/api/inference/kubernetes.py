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

Node ids are pod names, so they survive api restarts and agree across replicas. A node
name passed to ``load-on`` does not pin a pod to a Kubernetes node: the InferenceModel has
no node selector yet, so the scheduler places the new replica.
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
from konfer.core.errors import ServiceUnavailable, ValidationFailed
from konfer.core.inference import BUILTIN_MODELS, Device, ModelSpec, Runtime, Task
from konfer.core.settings import Settings

log = logging.getLogger(__name__)

MODELS = "inferencemodels"
ISVC_LABEL = "serving.kserve.io/inferenceservice"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "konfer-api"
PREDICTOR_CONTAINER = "kserve-container"
PACKAGED = "packaged:"
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


def inference_model(spec: ModelSpec, replicas: int, settings: Settings) -> dict[str, Any]:
    """The InferenceModel the api creates to load ``spec`` with ``replicas`` servers."""
    body: dict[str, Any] = {
        "task": spec.task.value,
        "runtime": spec.runtime.value,
        "device": "gpu" if settings.ai_device == "gpu" else spec.device.value,
        "minReplicas": replicas,
        "maxReplicas": max(spec.max_replicas, replicas),
    }
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

    @_reached
    async def start(self, spec: ModelSpec, node_id: str) -> Node:
        name = model_name(spec.name)
        before = [pod_node(p, spec, self._default_port) for p in await self._pods(name)]
        ready_before = {n.node_id for n in before if n.status == "online"}
        # Scale out when every wanted replica already has a pod; else wait for those.
        obj = await self._read(name)
        wanted = int(((obj or {}).get("spec") or {}).get("minReplicas", 0))
        live = [n for n in before if n.status != "offline"]
        await self.scale(spec, out=obj is not None and wanted > 0 and len(live) >= wanted)
        started = time.monotonic()
        deadline = started + self.settings.ai_server_start_timeout_seconds
        while True:
            for pod in await self._pods(name):
                node = pod_node(pod, spec, self._default_port)
                if node.status == "online" and node.node_id not in ready_before:
                    node.load_seconds = time.monotonic() - started
                    log.info("model server pod ready", extra={"node_id": node.node_id})
                    return node
            if time.monotonic() > deadline:
                raise ModelLoadFailed(
                    f"Failed to load model: no pod of InferenceModel {name} became ready within "
                    f"{self.settings.ai_server_start_timeout_seconds:g}s "
                    f"({_phase_message(await self._read(name))}); it stays deployed and its "
                    "pods join GET /api/v1/nodes when they are ready"
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


def _unavailable(exc: ApiException) -> ClusterUnavailable:
    log.error("Kubernetes API error", extra={"status": exc.status, "reason": exc.reason})
    return ClusterUnavailable(
        f"The cluster refused a model server request ({exc.status} {exc.reason})"
    )
