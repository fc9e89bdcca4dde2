"""Model, node, load-balancer, monitoring, failover and discovery routes.

They show and steer the real model servers of this replica's runtime (local processes;
InferenceModel pods in Kubernetes): listing and status for any signed-in user, loading,
unloading, rebalancing and health checks for administrators. Not rate limited (the REST
document lists them as admin operations).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from konfer.api.deps import AdminUser, CurrentPrincipal
from konfer.api.inference.runtime import Node
from konfer.api.inference.service import InferenceService
from konfer.api.routers.ai import InferenceDep
from konfer.core.errors import NotFound
from konfer.core.timeutil import isoformat, utcnow

router = APIRouter(prefix="/api/v1", tags=["models"])


def _envelope(data: dict[str, Any]) -> dict[str, Any]:
    return {"code": 200, "message": "success", "data": data, "timestamp": isoformat(utcnow())}


def _mb(value: float) -> str:
    return f"{round(value / (1024 * 1024))}MB"


def _model(inference: InferenceService, model_id: str) -> dict[str, Any]:
    spec = inference.spec(model_id)
    nodes = inference.nodes_of(model_id)
    ready = [n for n in nodes if n.ready]
    total = sum(n.total_requests for n in nodes)
    failed = sum(n.failed_requests for n in nodes)
    latency = sum(n.latency_total for n in nodes)
    loaded_at = min((n.loaded_at for n in ready if n.loaded_at), default=None)
    return {
        "model_id": spec.name,
        "name": spec.display_name or spec.name,
        "type": spec.task.type_name,
        "task": spec.task.value,
        "runtime": spec.runtime.value,
        "status": inference.model_status(model_id),
        "version": spec.version,
        "memory_usage": _mb(sum(n.memory_bytes for n in ready)),
        "node_id": ready[0].node_id if ready else None,
        "nodes": [n.node_id for n in ready],
        "load_time": isoformat(loaded_at) if loaded_at else None,
        "request_count": total,
        "avg_latency": round(latency / (total - failed), 4) if total - failed > 0 else 0.0,
        "error_rate": round(failed / total, 4) if total else 0.0,
        "baseline": spec.baseline,
        "storage_uri": spec.storage_uri,
        "error": inference.models[model_id].error,
    }


def _node(node: Node, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "node_id": node.node_id,
        "address": node.address,
        "status": node.status,
        "cpu_usage": round(node.cpu_usage, 2),
        "memory_usage": round(node.memory_usage, 2),
        "gpu_usage": node.gpu_usage,
        "loaded_models": 1 if node.ready else 0,
        "active_requests": node.active_requests,
        "total_requests": node.total_requests,
        "avg_latency": round(node.avg_latency, 4),
        "model_id": node.spec.name,
        "device": node.device,
        "host": node.host,
    }
    if full:
        uptime = (utcnow() - node.loaded_at).total_seconds() if node.loaded_at else 0
        total = node.total_requests
        out.update(
            {
                "uptime": round(uptime),
                "loaded_models": [node.spec.name] if node.ready else [],
                "success_rate": round(1 - node.failed_requests / total, 4) if total else 1.0,
                "last_heartbeat": isoformat(node.last_seen) if node.last_seen else None,
                "memory_bytes": int(node.memory_bytes),
                "pid": node.pid,
                "error": node.error,
            }
        )
    return out


def _find_node(inference: InferenceService, node_id: str) -> Node:
    node = inference.nodes.get(node_id)
    if node is None or node.status == "stopped":
        raise NotFound(f"Node '{node_id}' not found")
    return node


@router.get("/models", summary="List models")
async def list_models(principal: CurrentPrincipal, inference: InferenceDep) -> dict[str, Any]:
    models = [_model(inference, name) for name in inference.models]
    return _envelope({"count": len(models), "models": models})


@router.get("/models/{model_id}/status", summary="Model status")
async def model_status(
    model_id: str, principal: CurrentPrincipal, inference: InferenceDep
) -> dict[str, Any]:
    return _model(inference, model_id)


@router.post(
    "/models/rebalance",
    summary="Replace failed servers, restore minimum replicas",
    description=(
        "Locally: stops servers that are not ready and starts new ones up to each loaded "
        "model's minimum; `node_distribution` maps node ids to their models. In Kubernetes "
        "the cluster replaces failed pods itself: on the InferenceModels the api manages, a "
        "load-on pin whose pods cannot be scheduled is removed and replicas that cannot be "
        "scheduled are given up; `node_distribution` counts Ready servers per cluster node."
    ),
)
async def rebalance(admin: AdminUser, inference: InferenceDep) -> dict[str, Any]:
    started = time.perf_counter()
    touched, distribution = await inference.rebalance()
    return {
        "message": "Models rebalanced successfully",
        "rebalanced_models": touched,
        "node_distribution": distribution,
        "rebalance_time": round(time.perf_counter() - started, 3),
    }


@router.post("/models/{model_id}/load", summary="Load a model (start a server)")
async def load_model(model_id: str, admin: AdminUser, inference: InferenceDep) -> dict[str, Any]:
    started = time.perf_counter()
    node = await inference.load(model_id)
    return {
        "model_id": model_id,
        "status": "loaded",
        "load_time": round(time.perf_counter() - started, 3),
        "memory_usage": _mb(node.memory_bytes),
        "node_id": node.node_id,
        "model": model_id,
    }


@router.delete("/models/{model_id}/unload", summary="Unload a model (stop its servers)")
async def unload_model(model_id: str, admin: AdminUser, inference: InferenceDep) -> dict[str, Any]:
    stopped = await inference.unload(model_id)
    return {
        "model_id": model_id,
        "status": "unloaded",
        "freed_memory": _mb(sum(n.memory_bytes for n in stopped)),
        "nodes": [n.node_id for n in stopped],
    }


@router.post("/models/{model_id}/load-on/{node_id}", summary="Load a model on a node")
async def load_on(
    model_id: str, node_id: str, admin: AdminUser, inference: InferenceDep
) -> dict[str, Any]:
    """Locally ``node_id`` is the id the new server gets; in Kubernetes it is the name of
    the cluster node to run it on, and the answer's ``node_id`` is the new server's pod
    (the id ``/nodes`` lists) with ``host`` the cluster node."""
    started = time.perf_counter()
    node = await inference.load(model_id, node_id)
    return {
        "message": "Model loaded successfully",
        "model_id": model_id,
        "node_id": node.node_id,
        "host": node.host,
        "load_time": round(time.perf_counter() - started, 3),
    }


@router.delete("/models/{model_id}/unload-from/{node_id}", summary="Unload a model from a node")
async def unload_from(
    model_id: str, node_id: str, admin: AdminUser, inference: InferenceDep
) -> dict[str, Any]:
    await inference.unload(model_id, node_id)
    return {"message": "Model unloaded successfully", "model_id": model_id, "node_id": node_id}


@router.get("/nodes", summary="List inference nodes")
async def list_nodes(principal: CurrentPrincipal, inference: InferenceDep) -> dict[str, Any]:
    nodes = [_node(n) for n in inference.live_nodes()]
    return _envelope({"count": len(nodes), "nodes": nodes})


@router.get("/nodes/{node_id}/status", summary="Node status")
async def node_status(
    node_id: str, principal: CurrentPrincipal, inference: InferenceDep
) -> dict[str, Any]:
    return _node(_find_node(inference, node_id), full=True)


@router.post("/nodes/{node_id}/health-check", summary="Probe a node now")
async def node_health(node_id: str, admin: AdminUser, inference: InferenceDep) -> dict[str, Any]:
    return await inference.probe(_find_node(inference, node_id))


@router.get("/load-balancer/stats", summary="Requests per node")
async def lb_stats(principal: CurrentPrincipal, inference: InferenceDep) -> dict[str, Any]:
    nodes = [n for n in inference.nodes.values() if n.total_requests or n.status != "stopped"]
    if not nodes:
        return {"stats": {}}
    total = sum(n.total_requests for n in nodes)
    return {
        "stats": {
            "total_requests": total,
            "requests_per_node": {n.node_id: n.total_requests for n in nodes},
            "avg_latency_per_node": {n.node_id: round(n.avg_latency, 4) for n in nodes},
            "load_distribution": {
                n.node_id: round(n.total_requests / total, 4) if total else 0.0 for n in nodes
            },
            "active_requests_per_node": {n.node_id: n.active_requests for n in nodes},
            "algorithm": "round_robin",
        }
    }


@router.get("/monitoring/metrics", summary="Inference metrics")
async def monitoring_metrics(
    principal: CurrentPrincipal, inference: InferenceDep
) -> dict[str, Any]:
    nodes = inference.live_nodes()
    online = [n for n in nodes if n.ready]
    total = sum(n.total_requests for n in nodes)
    failed = sum(n.failed_requests for n in nodes)
    timeouts = sum(n.timeouts for n in nodes)
    done = total - failed
    uptime = max(time.monotonic() - inference.started_at, 1e-9)

    def avg(values: list[float]) -> float:
        return round(sum(values) / len(values), 2) if values else 0

    gpus = [n.gpu_usage for n in online if n.gpu_usage is not None]
    return {
        "metrics": {
            "total_nodes": len(nodes),
            "online_nodes": len(online),
            "offline_nodes": len(nodes) - len(online),
            "avg_cpu_usage": avg([n.cpu_usage for n in online]),
            "avg_memory_usage": avg([n.memory_usage for n in online]),
            "avg_gpu_usage": avg(gpus),
            "total_requests": total,
            "success_requests": done,
            "failed_requests": failed,
            "avg_response_time": round(sum(n.latency_total for n in nodes) / done, 4)
            if done
            else 0,
            "requests_per_sec": round(total / uptime, 4),
            "total_models": len(inference.models),
            "loaded_models": sum(1 for m in inference.models if inference.ready_nodes(m)),
            "active_models": len({n.spec.name for n in online if n.active_requests}),
            "error_rate": round(failed / total, 4) if total else 0,
            "timeout_rate": round(timeouts / total, 4) if total else 0,
            "timestamp": isoformat(utcnow()),
        }
    }


@router.get("/monitoring/alerts", summary="Active alerts")
async def monitoring_alerts(principal: CurrentPrincipal, inference: InferenceDep) -> dict[str, Any]:
    return {"alerts": inference.alerts()}


@router.get("/failover/events", summary="Failover events")
async def failover_events(principal: CurrentPrincipal, inference: InferenceDep) -> dict[str, Any]:
    return {"events": [e.public() for e in reversed(inference.events)]}


@router.get("/discovery/nodes", summary="Discovered nodes")
async def discovery_nodes(principal: CurrentPrincipal, inference: InferenceDep) -> dict[str, Any]:
    found = await inference.runtime.discover()
    known = {n.node_id: n for n in inference.live_nodes()}
    for node in found:
        known.setdefault(node.node_id, node)
    return {
        "nodes": [
            {
                "node_id": n.node_id,
                "address": n.address,
                "discovered_at": isoformat(n.discovered_at),
                "last_seen": isoformat(n.last_seen) if n.last_seen else None,
                "capabilities": [n.spec.task.type_name],
                "models": [n.spec.name],
                "status": "online" if n.ready else n.status,
            }
            for n in known.values()
        ]
    }
