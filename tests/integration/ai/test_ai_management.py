"""Models, nodes, load balancing, monitoring, failover and discovery, backed by the real
model-server processes of the local runtime."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ApiClient
from tests.helpers import assert_error
from tests.integration.ai.conftest import espeak

LONG = " ".join(
    [
        "This recording is long enough that the server is still busy when it is stopped.",
        "The quarterly numbers look good and the team will ship the release next week.",
        "Please review the open questions before the next planning session on Monday.",
    ]
)


@pytest.fixture(scope="module")
def long_wav(speech_dir: Path) -> bytes:
    return espeak(LONG, speech_dir / "long.wav").read_bytes()


async def test_models_list_uses_the_documented_envelope_and_reflects_servers(
    api: ApiClient, ai: dict[str, Any]
) -> None:
    r = await api.get("/api/v1/models", headers=ai["user"]["headers"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["code"], body["message"]) == (200, "success")
    assert body["timestamp"].endswith("Z")
    models = {m["model_id"]: m for m in body["data"]["models"]}
    assert body["data"]["count"] == len(models)
    tiny = models["whisper-tiny.en"]
    assert tiny["status"] == "loaded"
    assert tiny["type"] == "speech_recognition"
    assert len(tiny["nodes"]) == 2
    assert models["prosody-lexicon-baseline"]["baseline"] is True
    status = await api.get("/api/v1/models/whisper-base/status", headers=ai["user"]["headers"])
    assert status.status_code == 200
    for field in (
        "model_id",
        "name",
        "type",
        "status",
        "version",
        "memory_usage",
        "node_id",
        "load_time",
        "request_count",
        "avg_latency",
        "error_rate",
    ):
        assert field in status.json()
    assert status.json()["memory_usage"].endswith("MB")
    missing = await api.get("/api/v1/models/gpt-17/status", headers=ai["user"]["headers"])
    assert_error(missing, 404, "RESOURCE_NOT_FOUND")


async def test_a_server_killed_mid_request_fails_over_to_another_and_is_replaced(
    api: ApiClient, ai: dict[str, Any], long_wav: bytes
) -> None:
    service = ai["service"]
    admin = ai["admin"]["headers"]
    tiny = service.ready_nodes("whisper-tiny.en")
    assert len(tiny) == 2
    request = asyncio.create_task(
        api.post(
            "/api/v1/ai/transcribe",
            headers=ai["user"]["headers"],
            files={"audio": ("long.wav", long_wav, "audio/wav")},
            data={"model": "whisper-tiny.en", "language": "en"},
        )
    )
    victim = None
    for _ in range(3000):
        busy = [n for n in tiny if n.active_requests]
        if busy:
            victim = busy[0]
            break
        await asyncio.sleep(0.01)
    assert victim is not None
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)  # mid-request: the server is transcribing
    r = await request
    assert r.status_code == 200, r.text
    survivor = r.json()["node_id"]
    assert survivor != victim.node_id
    assert "quarterly" in r.json()["transcription"].lower()

    events = (await api.get("/api/v1/failover/events", headers=admin)).json()["events"]
    event = next(e for e in events if e["failed_node"] == victim.node_id)
    assert event["type"] == "node_failure"
    assert event["backup_node"] == survivor
    assert event["affected_requests"] >= 1
    assert event["recovery_time"] is not None
    assert event["recovery_time"] > 0

    nodes = (await api.get("/api/v1/nodes", headers=admin)).json()["data"]["nodes"]
    assert {n["node_id"]: n["status"] for n in nodes}[victim.node_id] == "offline"
    alerts = (await api.get("/api/v1/monitoring/alerts", headers=admin)).json()["alerts"]
    assert any(
        a["type"] == "node_offline"
        and a["node_id"] == victim.node_id
        and a["severity"] == "critical"
        for a in alerts
    )
    check = await api.post(f"/api/v1/nodes/{victim.node_id}/health-check", headers=admin)
    assert check.json()["status"] == "unhealthy"
    assert check.json()["checks"]["connectivity"] == "fail"

    r = await api.post("/api/v1/models/rebalance", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["rebalanced_models"] >= 1
    ready = service.ready_nodes("whisper-tiny.en")
    assert victim.node_id not in {n.node_id for n in ready}
    assert len(ready) >= 1
    assert all(n.node_id in r.json()["node_distribution"] for n in ready)


async def test_load_balancer_spreads_requests_and_counts_them_per_node(
    api: ApiClient, ai: dict[str, Any]
) -> None:
    service = ai["service"]
    admin = ai["admin"]["headers"]
    r = await api.post("/api/v1/models/vader-snownlp/load-on/node-sentiment-b", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["node_id"] == "node-sentiment-b"
    nodes = {n.node_id for n in service.ready_nodes("vader-snownlp")}
    assert len(nodes) == 2
    before = (await api.get("/api/v1/load-balancer/stats", headers=admin)).json()["stats"]
    for _ in range(6):
        r = await api.post(
            "/api/v1/ai/analyze", headers=ai["user"]["headers"], json={"text": "Great work!"}
        )
        assert r.status_code == 200
    stats = (await api.get("/api/v1/load-balancer/stats", headers=admin)).json()["stats"]
    assert stats["algorithm"] == "round_robin"
    for node_id in nodes:
        grew = stats["requests_per_node"][node_id] - before["requests_per_node"].get(node_id, 0)
        assert grew == 3, stats
        assert stats["avg_latency_per_node"][node_id] > 0
    assert abs(sum(stats["load_distribution"].values()) - 1) < 0.01
    # One model per server: another model cannot be put on this node.
    r = await api.post("/api/v1/models/textrank/load-on/node-sentiment-b", headers=admin)
    assert_error(r, 409, "RESOURCE_CONFLICT")
    r = await api.delete("/api/v1/models/vader-snownlp/unload-from/node-sentiment-b", headers=admin)
    assert r.status_code == 200
    assert r.json()["message"] == "Model unloaded successfully"
    r = await api.delete("/api/v1/models/vader-snownlp/unload-from/node-sentiment-b", headers=admin)
    assert_error(r, 404, "RESOURCE_NOT_FOUND")
    assert len(service.ready_nodes("vader-snownlp")) == 1


async def test_unloading_a_model_makes_its_task_answer_model_not_ready(
    api: ApiClient, ai: dict[str, Any]
) -> None:
    admin, user = ai["admin"]["headers"], ai["user"]["headers"]
    assert_error(
        await api.delete("/api/v1/models/textrank/unload", headers=user),
        403,
        "INSUFFICIENT_PERMISSIONS",
    )
    r = await api.delete("/api/v1/models/textrank/unload", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "unloaded"
    status = (await api.get("/api/v1/models/textrank/status", headers=user)).json()
    assert status["status"] == "unloaded"
    r = await api.post("/api/v1/ai/summarize", headers=user, json={"text": "One. Two. Three."})
    err = assert_error(r, 503, "MODEL_NOT_READY")
    assert "/api/v1/models/{model_id}/load" in err["message"]
    r = await api.post("/api/v1/models/textrank/load", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "loaded"
    assert r.json()["load_time"] > 0
    r = await api.post(
        "/api/v1/ai/summarize", headers=user, json={"text": "One thing. Another thing."}
    )
    assert r.status_code == 200, r.text


async def test_nodes_health_monitoring_and_discovery_read_the_real_servers(
    api: ApiClient, ai: dict[str, Any]
) -> None:
    admin = ai["admin"]["headers"]
    service = ai["service"]
    node = service.ready_nodes("rnnoise")[0]
    r = await api.post(f"/api/v1/nodes/{node.node_id}/health-check", headers=admin)
    assert r.status_code == 200, r.text
    check = r.json()
    assert check["status"] == "healthy"
    assert check["checks"]["connectivity"] == "pass"
    assert 0 < check["response_time"] < 5
    assert_error(
        await api.post(f"/api/v1/nodes/{node.node_id}/health-check", headers=ai["user"]["headers"]),
        403,
        "INSUFFICIENT_PERMISSIONS",
    )
    status = (await api.get(f"/api/v1/nodes/{node.node_id}/status", headers=admin)).json()
    assert status["loaded_models"] == ["rnnoise"]
    assert status["address"].startswith("127.0.0.1:")
    assert status["memory_usage"] > 0  # read from the server's /metrics
    assert_error(
        await api.get("/api/v1/nodes/node-404/status", headers=admin), 404, "RESOURCE_NOT_FOUND"
    )
    listing = (await api.get("/api/v1/nodes", headers=admin)).json()
    assert listing["code"] == 200
    assert listing["data"]["count"] == len(listing["data"]["nodes"])
    metrics = (await api.get("/api/v1/monitoring/metrics", headers=admin)).json()["metrics"]
    assert metrics["online_nodes"] >= 8
    assert metrics["total_models"] >= 8
    assert metrics["avg_memory_usage"] > 0
    alerts = (await api.get("/api/v1/monitoring/alerts", headers=admin)).json()["alerts"]
    memory = [a for a in alerts if a["type"] == "high_memory_usage"]
    assert memory
    assert all(a["threshold"] == 0.01 and a["value"] > 0.01 for a in memory)
    found = (await api.get("/api/v1/discovery/nodes", headers=admin)).json()["nodes"]
    entry = next(n for n in found if n["node_id"] == node.node_id)
    assert entry["capabilities"] == ["audio_denoising"]
    assert entry["status"] == "online"
    # The server itself: kserve's readiness, V2 metadata and Konfer's metrics.
    async with httpx.AsyncClient(base_url=node.url) as direct:
        assert (await direct.get("/v2/health/ready")).status_code == 200
        assert (await direct.get("/v2/models/rnnoise")).json()["name"] == "rnnoise"
        text = (await direct.get("/metrics")).text
        assert "konfer_inference_requests_total" in text


async def test_model_servers_answer_v2_requests_directly(ai: dict[str, Any]) -> None:
    node = ai["service"].ready_nodes("vader-snownlp")[0]
    async with httpx.AsyncClient(base_url=node.url) as direct:
        r = await direct.post(
            "/v2/models/vader-snownlp/infer",
            json={
                "inputs": [
                    {
                        "name": "text",
                        "shape": [1],
                        "datatype": "BYTES",
                        "data": ["What a wonderful day"],
                    }
                ]
            },
        )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "vader-snownlp"
    import json

    result = json.loads(body["outputs"][0]["data"][0])
    assert result["sentiment"] == "positive"
    assert result["model"] == "vader-snownlp"
