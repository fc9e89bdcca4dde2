"""Streams whose streamer Job ends without a report, on the control plane with the operator
reconciling and the api under its own RBAC (operator/rbac/api.yaml).

kwok runs no containers, so a streamer never reports here: its pod stays Running (the
``pod-complete`` delay of an hour, given through the recorder pod annotations the streamer
Job carries) until a test fails it as a kubelet would, through kwok's ``pod-fail`` stage
(exit code 1 with a termination message), or lets the real Job controller fail the Job at
its ``activeDeadlineSeconds``. The api's watcher of streamer Jobs must then fail the
stream with the reason, announce it once across replicas, leave finished streams alone,
and keep watching across watch restarts; a 410 Gone, which this control plane's watch
cache cannot be made to answer on demand, comes from a stand-in for those two requests.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from kubernetes_asyncio import client
from prometheus_client import CollectorRegistry

from konfer.api.runtime.streamer_watch import (
    STREAMER_SELECTOR,
    StreamerEnd,
    StreamerJobWatcher,
    StreamerWatchCollector,
)
from konfer.core.settings import Settings
from tests.conftest import SettingsFactory, service_env
from tests.k8s.cluster import ControlPlane
from tests.k8s.objects import get_object, scheduled_meeting
from tests.k8s.operator_proc import operator_fixture

pytestmark = pytest.mark.k8s

__all__ = ["operator_fixture"]

# A streamer pod stays Running until the test says otherwise.
RUNNING_POD = {"pod-complete.stage.kwok.x-k8s.io/delay": "1h"}
WAIT_SECONDS = 30.0


def _settings(api_settings: SettingsFactory, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "backend": "postgres",
        "operator_recorder_image": "registry.example/konfer/recorder:9.9.9",
        "operator_recorder_pod_annotations": RUNNING_POD,
        **extra,
    }
    return api_settings(**values)


async def _until(what: str, check: Callable[[], Any], seconds: float = WAIT_SECONDS) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out after {seconds:g}s waiting for {what}"
        await asyncio.sleep(0.2)


async def _stream_status(client: Any, user: dict[str, Any], stream_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/v1/streaming/status/{stream_id}", headers=user["headers"])
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


async def _until_status(
    client: Any, user: dict[str, Any], stream_id: str, status: str
) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        found = await _stream_status(client, user, stream_id)
        if found["status"] == status:
            return found
        assert time.monotonic() < deadline, f"stream {stream_id} stayed {found['status']}"
        await asyncio.sleep(0.2)


async def _meeting_with_stream(client: Any) -> tuple[dict[str, Any], str, str]:
    """A started meeting (its SFU ready through the operator) and a pending HLS stream."""
    user = await client.signup()
    meeting_id = await scheduled_meeting(client, user)
    r = await client.post(f"/api/v1/meetings/{meeting_id}/start", headers=user["headers"])
    assert r.status_code == 200, r.text
    stream_id = await _start_stream(client, user, meeting_id)
    return user, meeting_id, stream_id


async def _start_stream(client: Any, user: dict[str, Any], meeting_id: str) -> str:
    r = await client.post(
        "/api/v1/streaming/start",
        json={"meeting_id": meeting_id, "stream_type": "hls", "quality": "low"},
        headers=user["headers"],
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "pending"
    stream_id: str = r.json()["stream_id"]
    return stream_id


def _running_pod(cp: ControlPlane, ns: str, stream_id: str) -> dict[str, Any] | None:
    found = get_object(cp, ns, "pods", "-l", f"batch.kubernetes.io/job-name=stream-{stream_id}")
    for pod in (found or {}).get("items") or []:
        if (pod.get("status") or {}).get("phase") == "Running":
            result: dict[str, Any] = pod
            return result
    return None


def _job_failed(cp: ControlPlane, ns: str, stream_id: str) -> bool:
    job = get_object(cp, ns, "job", f"stream-{stream_id}") or {}
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Failed" and c["status"] == "True" for c in conditions)


def _expire_job(cp: ControlPlane, ns: str, stream_id: str) -> None:
    """The Job controller fails it for real: its deadline is now already past."""
    cp.kubectl(
        "patch", "-n", ns, "job", f"stream-{stream_id}", "--type=merge",
        "-p", json.dumps({"spec": {"activeDeadlineSeconds": 1}}),
    )  # fmt: skip


def _watcher(client: Any) -> StreamerJobWatcher:
    watcher = client.app.state.konfer.recorder_runtime.streamer_watcher
    assert isinstance(watcher, StreamerJobWatcher)
    return watcher


async def _stream_messages(pubsub: Any, stream_id: str, seconds: float) -> list[dict[str, Any]]:
    """The ``stream-status`` messages about one stream the room channel carries."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if msg is None:
            continue
        body = json.loads(msg["data"].decode().split("|", 3)[3])
        if body.get("type") == "stream-status" and body.get("stream_id") == stream_id:
            out.append(body)
    return out


async def test_a_streamer_that_fails_before_reporting_fails_its_stream_once_across_replicas(
    control_plane: ControlPlane,
    ns: str,
    api_settings: SettingsFactory,
    open_client: Callable[..., Any],
) -> None:
    cp = control_plane
    first = _settings(api_settings)
    # A second replica: same database and bus, its own watcher of the same Jobs.
    second = _settings(api_settings, database_url=first.database_url, s3_bucket=first.s3_bucket)
    redis = aioredis.from_url(service_env("KONFER_TEST_REDIS_URL"))
    pubsub = redis.pubsub()
    try:
        async with open_client(first) as client, open_client(second) as replica:
            user, meeting_id, stream_id = await _meeting_with_stream(client)
            await pubsub.subscribe(f"konfer:room:{meeting_id}")
            pod = await _until("the streamer pod to run", lambda: _running_pod(cp, ns, stream_id))
            assert (await _stream_status(client, user, stream_id))["status"] == "pending"

            # The streamer dies before its first report, leaving its summary behind.
            summary = json.dumps({"phase": "failed", "reason": "SFU_UNAVAILABLE: refused"})
            cp.kubectl(
                "annotate", "-n", ns, "pod", pod["metadata"]["name"],
                f"pod-fail.stage.kwok.x-k8s.io/message={summary}",
            )  # fmt: skip
            started = time.monotonic()
            failed = await _until_status(client, user, stream_id, "failed")
            noticed = time.monotonic() - started
            assert failed["reason"] == (
                "STREAMER_FAILED: BackoffLimitExceeded: Job has reached the specified backoff "
                "limit; the streamer exited with code 1 (Error): SFU_UNAVAILABLE: refused"
            )
            assert failed["stopped_at"] is not None
            print(f"stream failed {noticed:.2f}s after the pod failed")

            # Both replicas saw the Job fail; one changed the stream and announced it.
            job = get_object(cp, ns, "job", f"stream-{stream_id}")
            assert job is not None
            uid = job["metadata"]["uid"]
            await _until("both watchers to handle the Job", lambda: all(
                uid in _watcher(c).handled for c in (client, replica)
            ))  # fmt: skip
            messages = await _stream_messages(pubsub, stream_id, 2.0)
            assert [(m["status"], m["reason"]) for m in messages] == [("failed", failed["reason"])]
            assert messages[0]["room_id"] == meeting_id

            # Its token can no longer move it: the stream has ended.
            secret = get_object(cp, ns, "secret", f"stream-{stream_id}-token")
            assert secret is not None
            token = base64.b64decode(secret["data"]["token"]).decode()
            r = await client.post(
                f"/api/v1/internal/streams/{stream_id}/report",
                json={"status": "streaming"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 200, r.text
            assert (await _stream_status(client, user, stream_id))["status"] == "failed"
    finally:
        await pubsub.aclose()
        await redis.aclose()


async def test_a_job_past_its_deadline_fails_its_stream_but_never_a_finished_one(
    control_plane: ControlPlane,
    ns: str,
    api_settings: SettingsFactory,
    open_client: Callable[..., Any],
) -> None:
    cp = control_plane
    async with open_client(_settings(api_settings)) as client:
        user, meeting_id, finished = await _meeting_with_stream(client)
        stuck = await _start_stream(client, user, meeting_id)

        # One stream ends as streams do: its streamer reports stopped.
        secret = get_object(cp, ns, "secret", f"stream-{finished}-token")
        assert secret is not None
        auth = {"Authorization": f"Bearer {base64.b64decode(secret['data']['token']).decode()}"}
        report = f"/api/v1/internal/streams/{finished}/report"
        for status in ("streaming", "stopped"):
            r = await client.post(report, json={"status": status}, headers=auth)
            assert r.status_code == 200, r.text
        before = await _stream_status(client, user, finished)
        assert (before["status"], before["reason"]) == ("stopped", None)

        # Its Job then fails; the watcher sees that before the second Job's failure.
        _expire_job(cp, ns, finished)
        await _until("the finished stream's Job to fail", lambda: _job_failed(cp, ns, finished))
        _expire_job(cp, ns, stuck)
        failed = await _until_status(client, user, stuck, "failed")
        assert failed["reason"].startswith(
            "STREAMER_FAILED: DeadlineExceeded: Job was active longer than specified deadline"
        )
        job = get_object(cp, ns, "job", f"stream-{finished}")
        assert job is not None
        assert job["metadata"]["uid"] in _watcher(client).handled
        after = await _stream_status(client, user, finished)
        assert (after["status"], after["reason"], after["stopped_at"]) == (
            "stopped",
            None,
            before["stopped_at"],
        )


async def test_a_streamer_stuck_pulling_its_image_fails_its_stream_and_its_job_is_suspended(
    control_plane: ControlPlane,
    ns: str,
    api_settings: SettingsFactory,
    open_client: Callable[..., Any],
) -> None:
    cp = control_plane
    settings = _settings(
        api_settings,
        # The pod stays Pending (kwok would make it Running at once) for the test to say why.
        operator_recorder_pod_annotations={"pod-ready.stage.kwok.x-k8s.io/delay": "1h"},
        kubernetes_streamer_start_timeout_seconds=3,
    )
    async with open_client(settings) as client:
        user, _meeting_id, stream_id = await _meeting_with_stream(client)
        selector = f"batch.kubernetes.io/job-name=stream-{stream_id}"
        pods = await _until(
            "the streamer pod", lambda: (get_object(cp, ns, "pods", "-l", selector) or {})["items"]
        )
        (pod,) = pods
        # What a kubelet reports while it cannot pull the image.
        message = 'Back-off pulling image "registry.example/konfer/recorder:9.9.9"'
        container = {
            "name": "streamer",
            "image": "registry.example/konfer/recorder:9.9.9",
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": message}},
        }
        cp.kubectl(
            "patch", "-n", ns, "pod", pod["metadata"]["name"], "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": {"containerStatuses": [container]}}),
        )  # fmt: skip
        assert (await _stream_status(client, user, stream_id))["status"] == "pending"
        failed = await _until_status(client, user, stream_id, "failed")
        assert failed["reason"] == f"STREAMER_FAILED: ImagePullBackOff: {message} (waited 3s)"

        def suspended() -> bool:
            job = get_object(cp, ns, "job", f"stream-{stream_id}") or {}
            return bool((job.get("spec") or {}).get("suspend"))

        await _until("the stuck streamer's Job to be suspended", suspended)


async def test_a_stopped_stream_whose_streamer_never_confirms_ends_stopped(
    control_plane: ControlPlane,
    ns: str,
    api_settings: SettingsFactory,
    open_client: Callable[..., Any],
) -> None:
    cp = control_plane
    async with open_client(_settings(api_settings)) as client:
        user, _meeting_id, stream_id = await _meeting_with_stream(client)
        await _until("the streamer pod to run", lambda: _running_pod(cp, ns, stream_id))
        # The stop suspends the Job; its pod goes and no final report ever comes.
        r = await client.post(
            "/api/v1/streaming/stop", json={"stream_id": stream_id}, headers=user["headers"]
        )
        assert r.status_code == 200, r.text
        ended = await _until_status(client, user, stream_id, "stopped")
        assert ended["reason"].startswith("STOPPED_WITHOUT_REPORT"), ended
        assert ended["stopped_at"] is not None
        job = get_object(cp, ns, "job", f"stream-{stream_id}")
        assert job is not None
        assert job["spec"]["suspend"] is True
        assert _running_pod(cp, ns, stream_id) is None
        text = (await client.get("/metrics")).text
        assert 'konfer_api_streamer_watch_streams_ended_total{status="stopped"} 1.0' in text


async def test_the_watcher_keeps_watching_across_watch_restarts(
    control_plane: ControlPlane,
    ns: str,
    api_settings: SettingsFactory,
    open_client: Callable[..., Any],
) -> None:
    cp = control_plane
    # The API server ends each watch after a second: the watcher resumes it every time.
    async with open_client(_settings(api_settings, kubernetes_watch_timeout_seconds=1)) as client:
        watcher = _watcher(client)
        user, _meeting_id, stream_id = await _meeting_with_stream(client)
        await _until("three watch restarts", lambda: watcher.jobs.watches >= 4)
        assert (watcher.jobs.lists, watcher.jobs.expired) == (1, 0)  # resumed, never re-listed

        _expire_job(cp, ns, stream_id)
        failed = await _until_status(client, user, stream_id, "failed")
        assert failed["reason"].startswith("STREAMER_FAILED: DeadlineExceeded")
        assert watcher.jobs.lists == 1


class _ExpiringApiServer:
    """The two Job requests of a kube-apiserver, on loopback, whose first watch answers
    410 Gone: the one fault the real control plane cannot be made to give on demand (its
    watch cache still holds every version a short test can ask for)."""

    def __init__(self, failed_job: dict[str, Any]) -> None:
        self.failed_job = failed_job
        self.lists = 0
        self.watched_versions: list[str | None] = []

    async def jobs(self, request: web.Request) -> web.StreamResponse:
        assert request.query["labelSelector"] == STREAMER_SELECTOR
        if request.query.get("watch") not in ("true", "True", "1"):
            self.lists += 1
            items = [] if self.lists == 1 else [self.failed_job]
            version = "10" if self.lists == 1 else "20"
            return web.json_response({"metadata": {"resourceVersion": version}, "items": items})
        self.watched_versions.append(request.query.get("resourceVersion"))
        response = web.StreamResponse()
        await response.prepare(request)
        if request.query.get("resourceVersion") == "10":
            gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
            await response.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
        else:
            await asyncio.sleep(float(request.query.get("timeoutSeconds", "1")))
        return response

    async def pods(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") not in ("true", "True", "1"):
            return web.json_response({"metadata": {"resourceVersion": "5"}, "items": []})
        response = web.StreamResponse()
        await response.prepare(request)
        await asyncio.sleep(float(request.query.get("timeoutSeconds", "1")))
        return response


async def test_a_watch_answered_410_gone_lists_again_and_resumes_from_the_new_version() -> None:
    job = {
        "metadata": {
            "name": "stream-s1",
            "uid": "uid-1",
            "resourceVersion": "19",
            "labels": {"konfer.io/stream": "00000000-0000-4000-8000-000000000001"},
        },
        "status": {
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "DeadlineExceeded",
                    "message": "Job was active longer than specified deadline",
                }
            ]
        },
    }
    server = _ExpiringApiServer(job)
    app = web.Application()
    app.router.add_get("/apis/batch/v1/namespaces/ns/jobs", server.jobs)
    app.router.add_get("/api/v1/namespaces/ns/pods", server.pods)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    api = client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{port}"))
    ended: list[tuple[str, StreamerEnd]] = []

    async def on_end(stream_id: str, end: StreamerEnd) -> bool:
        ended.append((stream_id, end))
        return True

    async def factory() -> client.ApiClient:
        return api

    watcher = StreamerJobWatcher(factory, "ns", on_end, watch_timeout_seconds=1)
    watcher.start()
    try:
        await _until("the failed Job to be handled", lambda: ended, 10)
        await _until("a watch from the new version", lambda: "20" in server.watched_versions, 10)
    finally:
        await watcher.stop()
        await api.close()
        await runner.cleanup()
    assert ended == [
        (
            "00000000-0000-4000-8000-000000000001",
            StreamerEnd(
                "failed",
                "STREAMER_FAILED: DeadlineExceeded: Job was active longer than specified deadline",
            ),
        )
    ]
    assert (watcher.jobs.expired, watcher.jobs.lists) == (1, 2)
    assert server.watched_versions[:2] == ["10", "20"]
    registry = CollectorRegistry()
    registry.register(StreamerWatchCollector(watcher))
    sample = registry.get_sample_value
    assert sample("konfer_api_streamer_watch_expired_total", {"resource": "jobs"}) == 1
    assert sample("konfer_api_streamer_watch_lists_total", {"resource": "jobs"}) == 2
    assert sample("konfer_api_streamer_watch_streams_ended_total", {"status": "failed"}) == 1
    assert sample("konfer_api_streamer_watch_streams_ended_total", {"status": "stopped"}) == 0
