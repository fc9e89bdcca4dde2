"""What a model runtime provides, and the node record both runtimes fill in.

A *node* is one model server answering for one model: a ``konfer model-server`` process in
the local runtime, a pod of the model's KServe InferenceService in Kubernetes. Everything
above (balancing, failover, monitoring, the routes) works on nodes and never asks which
runtime made them.

The Kubernetes runtime (``kubernetes.KubernetesModelRuntime``) implements the same
protocol: ``specs`` lists built-ins plus the namespace's InferenceModel objects; ``start``
creates or scales up the InferenceModel (``minReplicas``); ``stop`` scales it down and
``release`` deletes it (or scales a platform's one to zero); ``discover`` lists the
InferenceService's pods (label ``serving.kserve.io/inferenceservice``) and returns one node
per pod, addressed by pod IP and port 8080, not Ready ones as ``starting``/``offline``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from konfer.core.inference import ModelSpec
from konfer.core.timeutil import utcnow


@dataclass(eq=False)
class Node:
    node_id: str
    spec: ModelSpec
    url: str
    pid: int | None = None
    status: str = "starting"  # starting, online, offline, busy, stopped
    discovered_at: dt.datetime = field(default_factory=utcnow)
    last_seen: dt.datetime | None = None
    loaded_at: dt.datetime | None = None
    load_seconds: float = 0.0
    languages: list[str] | None = None
    device: str = "cpu"
    # The machine it runs on when the runtime knows one (a pod's Kubernetes node).
    host: str | None = None
    # Counters kept by the api for requests it sent here.
    total_requests: int = 0
    failed_requests: int = 0
    timeouts: int = 0
    active_requests: int = 0
    latency_total: float = 0.0
    # Read from the server's /metrics on each probe.
    cpu_usage: float = 0.0
    memory_usage: float = 0.0
    memory_bytes: float = 0.0
    disk_free_ratio: float = 1.0
    gpu_usage: float | None = None
    error: str | None = None

    @property
    def address(self) -> str:
        return self.url.split("://", 1)[-1]

    @property
    def ready(self) -> bool:
        return self.status in ("online", "busy")

    @property
    def avg_latency(self) -> float:
        done = self.total_requests - self.failed_requests
        return self.latency_total / done if done > 0 else 0.0


class ModelRuntime(Protocol):
    """Starts and stops model servers; ``local`` and ``kubernetes`` implement it."""

    name: str
    # True when nodes exist outside this api replica (Kubernetes pods): the service then
    # adopts what ``discover`` finds and drops what it no longer finds, so every replica
    # sees the same nodes. False when this replica owns its nodes (local processes).
    shared_nodes: bool

    def specs(self) -> list[ModelSpec]:
        """Every model that can be loaded (built-ins and deployed ones)."""
        ...

    async def start(self, spec: ModelSpec, node_id: str) -> Node:
        """Bring up one server of ``spec`` as ``node_id``; returns once it is ready."""
        ...

    async def stop(self, node: Node) -> None: ...

    async def release(self, spec: ModelSpec) -> None:
        """Nothing of the model keeps running (unloading it whole, even with no node yet)."""
        ...

    async def discover(self) -> list[Node]:
        """Servers that exist now (the local runtime knows its children)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class PlacesOnHosts(Protocol):
    """A runtime whose ``load-on/{node}`` names a machine of the cluster (a Kubernetes node)
    rather than a node id the api makes up: it places a new server there."""

    async def start_on(self, spec: ModelSpec, host: str) -> Node:
        """Bring up one server of ``spec`` on ``host``; returns once it is ready there."""
        ...


@runtime_checkable
class Rebalances(Protocol):
    """A runtime whose cluster keeps replicas itself, so rebalancing means repairing what
    the cluster cannot (see ``KubernetesModelRuntime.rebalance``)."""

    async def rebalance(self) -> tuple[int, dict[str, int]]:
        """(models changed, ready servers per host)."""
        ...
