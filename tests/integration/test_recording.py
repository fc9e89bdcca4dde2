"""Recording a meeting end to end: real api, real SFU, real recorder processes.

Two aiortc participants (gathering on 127.0.0.1 only) publish camera and microphone in
a meeting; the host records it through the REST routes; the api's local runtime starts
``konfer recorder``, which joins the SFU as a hidden subscriber and stream-copies every
track. The stored file is downloaded and opened with PyAV. Runs on SQLite + local disk
and on PostgreSQL + Redis + MinIO.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from tests.conftest import fresh_postgres_url, service_env
from tests.helpers import assert_error
from tests.integration.replicas import Cluster, Replica, cluster
from tests.integration.sfu_peers import PatternVideo, ToneAudio, gather_on_loopback
from tests.integration.test_sfu_through_api import Client, enter, wait_until
from tests.integration.test_signaling import meeting, signup

RECORDING_ENV = {
    "KONFER_SFU_ENABLED": "true",
    "KONFER_RECORDING_HEARTBEAT_SECONDS": "0.5",
    "KONFER_RECORDING_UPLOAD_ATTEMPTS": "2",
    "KONFER_RECORDING_UPLOAD_BACKOFF_SECONDS": "0.2",
}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def rec_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Cluster]]:
    gather_on_loopback()
    workdir = tmp_path_factory.mktemp(f"recording-{request.param}")
    if request.param == "sqlite":
        db, redis = f"sqlite+aiosqlite:///{workdir / 'konfer.db'}", ""
        extra: dict[str, str] = {}
    else:
        db, redis = fresh_postgres_url(), service_env("KONFER_TEST_REDIS_URL")
        extra = {
            "KONFER_S3_ENDPOINT": service_env("KONFER_TEST_S3_ENDPOINT"),
            "KONFER_S3_ACCESS_KEY": service_env("KONFER_TEST_S3_ACCESS_KEY"),
            "KONFER_S3_SECRET_KEY": service_env("KONFER_TEST_S3_SECRET_KEY"),
            "KONFER_S3_BUCKET": f"konfer-rec-{uuid.uuid4().hex[:8]}",
        }
    with cluster(workdir, db, redis, **RECORDING_ENV, **extra) as c:
        c.start()
        yield request.param, c


@pytest.fixture
async def api(rec_cluster: tuple[str, Cluster]) -> AsyncIterator[httpx.AsyncClient]:
    replica = rec_cluster[1].replicas[0]
    async with httpx.AsyncClient(base_url=replica.http, timeout=60) as http:
        yield http


async def _room(replica: Replica, **settings: Any) -> tuple[dict[str, Any], dict[str, Any], str]:
    host, guest = await signup(replica), await signup(replica)
    extra = {"settings": settings} if settings else {}
    return host, guest, await meeting(replica, host, **extra)


async def _publishing(replica: Replica, users: list[dict[str, Any]], mid: str) -> list[Client]:
    clients = [await enter(replica, u, mid) for u in users]
    for c in clients:
        await c.publish(PatternVideo(), ToneAudio(loud=True))
    for c in clients:
        others = [o.user["user_id"] for o in clients if o is not c]
        assert await wait_until(
            lambda c=c, others=others: all(c.frames_from(u, "video") >= 10 for u in others), 25
        )
    return clients


async def _status_until(
    api: httpx.AsyncClient, user: dict[str, Any], rid: str, wanted: set[str], seconds: float
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        r = await api.get(f"/api/v1/recording/status/{rid}", headers=user["headers"])
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["status"] in wanted or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.05)


async def test_five_second_recording_is_stored_playable_and_stream_copied(
    rec_cluster: tuple[str, Cluster], api: httpx.AsyncClient, tmp_path: Path
) -> None:
    replica = rec_cluster[1].replicas[0]
    host, guest, mid = await _room(replica)
    clients = await _publishing(replica, [host, guest], mid)
    try:
        r = await api.post(
            "/api/v1/recording/start",
            json={"meeting_id": mid, "room_id": mid, "format": "webm", "quality": "high"},
            headers=host["headers"],
        )
        assert r.status_code == 200, r.text
        started = r.json()
        rid = started["recording_id"]
        assert started["status"] in ("pending", "recording")
        assert started["meeting_id"] == mid
        body = await _status_until(api, host, rid, {"recording"}, 20)
        assert body["status"] == "recording", body
        # The reference is when the recording's first frame was sent (started_at), not when
        # this test saw the status change: polling and the first report would count as error.
        assert body["started_at"] is not None, body
        began = datetime.fromisoformat(body["started_at"]).timestamp()
        # The recorder is hidden: participants do not see it.
        peers = (await api.get(f"/api/v1/webrtc/room/{mid}/peers", headers=host["headers"])).json()[
            "peers"
        ]
        assert {p["user_id"] for p in peers} == {host["user_id"], guest["user_id"]}
        await asyncio.sleep(max(0.0, 5 - (time.time() - began)))
        ended = time.time()
        r = await api.post(
            "/api/v1/recording/stop", json={"recording_id": rid}, headers=host["headers"]
        )
        assert r.status_code == 200, r.text
        done = r.json()
        assert done["status"] == "completed", done
        assert done["format"] == "webm"
        assert done["participants"] == 2
        assert done["download_url"].endswith(f"/api/v1/recording/download/{rid}")
        metrics = done["quality_metrics"]
        assert metrics["decoders_created"] == 0  # per-track recording never decodes
        assert metrics["transcoded"] is False
        assert metrics["video_frames"] > 100
        assert metrics["audio_frames"] > 300

        r = await api.get(f"/api/v1/recording/download/{rid}", headers=host["headers"])
        assert r.status_code == 200
        assert r.headers["content-type"] == "video/webm"
        assert "attachment" in r.headers["content-disposition"]
        assert int(r.headers["content-length"]) == done["file_size"] == len(r.content)
        path = tmp_path / "recording.webm"
        path.write_bytes(r.content)
        with av.open(str(path)) as container:
            kinds = sorted((s.type, s.codec_context.name) for s in container.streams)
            assert kinds == [
                ("audio", "opus"),
                ("audio", "opus"),
                ("video", "vp8"),
                ("video", "vp8"),
            ]
            assert container.duration is not None
            duration = container.duration / 1_000_000
            frames = sum(1 for _ in container.decode(video=0))  # the file plays
        # The file covers the recording's own window, from the first frame sent to the stop
        # request (the recorder cuts there, however late it heard of the stop), and that
        # window holds the 5 s this test let pass between seeing media and asking to stop.
        window = (
            datetime.fromisoformat(done["stopped_at"]).timestamp()
            - datetime.fromisoformat(done["started_at"]).timestamp()
        )
        assert abs(duration - window) < 0.5, (duration, window)
        assert duration > ended - began - 0.5, (duration, ended - began)
        assert abs(done["duration"] - duration) < 0.2
        assert frames > 100

        r = await api.get(
            f"/api/v1/recording/download/{rid}",
            headers={**host["headers"], "Range": "bytes=0-99"},
        )
        assert r.status_code == 206
        assert r.headers["content-range"] == f"bytes 0-99/{done['file_size']}"
        assert r.content == path.read_bytes()[:100]

        # Stopping a finished recording is refused; it is listed and in the media library.
        r = await api.post(
            "/api/v1/recording/stop", json={"recording_id": rid}, headers=host["headers"]
        )
        assert_error(r, 409, "RECORDING_FINISHED")
        for url in (
            f"/api/v1/recording/list?meeting_id={mid}&status=completed",
            f"/api/v1/meetings/{mid}/recordings",
        ):
            r = await api.get(url, headers=guest["headers"])
            assert r.status_code == 200, r.text
            listed = r.json()
            assert [x["recording_id"] for x in listed["recordings"]] == [rid]
            assert listed["pagination"]["total"] == 1
        r = await api.get(f"/api/v1/media/info/{done['media_id']}", headers=guest["headers"])
        assert r.status_code == 200, r.text
        assert r.json()["source"] == "recording"
        assert r.json()["size"] == done["file_size"]

        r = await api.delete(f"/api/v1/recording/{rid}", headers=guest["headers"])
        assert_error(r, 403, "INSUFFICIENT_PERMISSIONS")
        r = await api.delete(f"/api/v1/recording/{rid}", headers=host["headers"])
        assert r.status_code == 200, r.text
        assert r.json() == {"message": "Recording deleted successfully", "recording_id": rid}
        r = await api.get(f"/api/v1/recording/{rid}", headers=host["headers"])
        assert_error(r, 404, "RESOURCE_NOT_FOUND")
    finally:
        for c in clients:
            await c.close()


async def test_bad_recording_requests_get_clear_errors(
    rec_cluster: tuple[str, Cluster], api: httpx.AsyncClient
) -> None:
    replica = rec_cluster[1].replicas[0]
    host, guest, mid = await _room(replica)
    r = await api.post(f"/api/v1/meetings/{mid}/join", headers=guest["headers"])
    assert r.status_code == 200, r.text
    unknown = str(uuid.uuid4())
    for method, url, body in (
        ("GET", f"/api/v1/recording/status/{unknown}", None),
        ("GET", f"/api/v1/recording/{unknown}", None),
        ("GET", f"/api/v1/recording/download/{unknown}", None),
        ("DELETE", f"/api/v1/recording/{unknown}", None),
        ("POST", "/api/v1/recording/stop", {"recording_id": unknown}),
        ("POST", "/api/v1/recording/start", {"meeting_id": unknown, "room_id": unknown}),
    ):
        r = await api.request(method, url, json=body, headers=host["headers"])
        assert_error(r, 404, "RESOURCE_NOT_FOUND")
    r = await api.post(
        "/api/v1/recording/start", json={"meeting_id": mid}, headers=guest["headers"]
    )
    assert_error(r, 403, "INSUFFICIENT_PERMISSIONS")
    r = await api.post(f"/api/v1/meetings/{mid}/recording/start", headers=guest["headers"])
    assert_error(r, 403, "INSUFFICIENT_PERMISSIONS")
    r = await api.post(
        "/api/v1/recording/start",
        json={"meeting_id": mid, "format": "avi"},
        headers=host["headers"],
    )
    assert_error(r, 400, "VALIDATION_ERROR")
    r = await api.post(f"/api/v1/meetings/{mid}/recording/stop", headers=host["headers"])
    assert_error(r, 404, "RESOURCE_NOT_FOUND")

    _h, _g, quiet = await _room(replica, enable_recording=False)
    r = await api.post(f"/api/v1/meetings/{quiet}/recording/start", headers=_h["headers"])
    err = assert_error(r, 403, "RECORDING_DISABLED")
    assert "enable_recording" in err["message"]

    r = await api.post(f"/api/v1/meetings/{mid}/end", headers=host["headers"])
    assert r.status_code == 200, r.text
    r = await api.post("/api/v1/recording/start", json={"meeting_id": mid}, headers=host["headers"])
    assert_error(r, 409, "MEETING_ENDED")

    # A recorder's report needs that recording's recorder token, not a user's token.
    r = await api.post(
        f"/api/v1/internal/recordings/{unknown}/report",
        json={"phase": "completed"},
        headers=host["headers"],
    )
    assert_error(r, 404, "RESOURCE_NOT_FOUND")
    r = await api.get("/api/v1/recording/list?status=nonsense", headers=host["headers"])
    assert_error(r, 400, "VALIDATION_ERROR")


async def test_ending_the_meeting_finalizes_its_recording(
    rec_cluster: tuple[str, Cluster], api: httpx.AsyncClient
) -> None:
    replica = rec_cluster[1].replicas[0]
    host, guest, mid = await _room(replica)
    clients = await _publishing(replica, [host, guest], mid)
    try:
        r = await api.post(
            f"/api/v1/meetings/{mid}/recording/start",
            json={"format": "mkv", "record_audio": False},
            headers=host["headers"],
        )
        assert r.status_code == 200, r.text
        rid = r.json()["recording_id"]
        r = await api.post(f"/api/v1/meetings/{mid}/recording/start", headers=host["headers"])
        assert_error(r, 409, "RECORDING_IN_PROGRESS")
        assert (await _status_until(api, host, rid, {"recording"}, 20))["status"] == "recording"
        await asyncio.sleep(1.5)
        r = await api.post(f"/api/v1/meetings/{mid}/end", headers=host["headers"])
        assert r.status_code == 200, r.text
        body = await _status_until(api, host, rid, {"completed", "failed"}, 30)
        assert body["status"] == "completed", body
        assert body["format"] == "mkv"
        assert [t["kind"] for t in body["tracks"]] == ["video", "video"]  # no audio asked
        assert body["duration"] > 1.0
        assert body["quality_metrics"]["decoders_created"] == 0  # left-out tracks neither
    finally:
        for c in clients:
            await c.close()


def _break(storage: Path, moved: Path) -> None:
    """Make local storage unusable: its folder is replaced by a file."""
    os.rename(storage, moved)
    storage.write_text("not a folder")


def _restore(storage: Path, moved: Path) -> None:
    if storage.is_file():
        storage.unlink()
    if moved.exists():
        os.rename(moved, storage)


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else -1


async def test_upload_failure_keeps_the_file_and_a_retry_completes_it(
    rec_cluster: tuple[str, Cluster], api: httpx.AsyncClient, tmp_path: Path
) -> None:
    backend, c = rec_cluster
    if backend != "sqlite":
        pytest.skip("storage is broken on local disk here; the MinIO path shares the code")
    replica = c.replicas[0]
    storage = Path(c.workdir / f"data-{replica.port}" / "storage")
    host, guest, mid = await _room(replica)
    clients = await _publishing(replica, [host, guest], mid)
    moved = storage.with_name("storage-away")
    try:
        r = await api.post(
            "/api/v1/recording/start", json={"meeting_id": mid}, headers=host["headers"]
        )
        assert r.status_code == 200, r.text
        rid = r.json()["recording_id"]
        assert (await _status_until(api, host, rid, {"recording"}, 20))["status"] == "recording"
        await asyncio.sleep(1.5)
        _break(storage, moved)
        r = await api.post(
            "/api/v1/recording/stop", json={"recording_id": rid}, headers=host["headers"]
        )
        assert r.status_code == 200, r.text
        failed = await _status_until(api, host, rid, {"failed", "completed"}, 30)
        assert failed["status"] == "failed", failed
        assert failed["upload_pending"] is True
        assert failed["reason"].startswith("UPLOAD_FAILED after 2 attempts")
        assert "kept at" in failed["reason"]
        assert failed["download_url"] is None
        kept = Path(failed["reason"].split("kept at ", 1)[1].split(" and ", 1)[0])
        assert _size(kept) > 0
        r = await api.get(f"/api/v1/recording/download/{rid}", headers=host["headers"])
        assert_error(r, 404, "RESOURCE_NOT_FOUND")

        # Storage is back; a retry uploads the kept file and the recording completes.
        _restore(storage, moved)
        r = await api.post(f"/api/v1/recording/{rid}/retry-upload", headers=host["headers"])
        assert r.status_code == 200, r.text
        done = await _status_until(api, host, rid, {"completed"}, 30)
        assert done["status"] == "completed", done
        assert done["upload_pending"] is False
        assert done["reason"] is None
        r = await api.get(f"/api/v1/recording/download/{rid}", headers=host["headers"])
        assert r.status_code == 200
        assert len(r.content) == done["file_size"] > 0
        assert _size(kept) == -1  # the kept copy is gone once stored
        r = await api.post(f"/api/v1/recording/{rid}/retry-upload", headers=host["headers"])
        assert_error(r, 409, "RESOURCE_CONFLICT")
    finally:
        _restore(storage, moved)
        for client in clients:
            await client.close()


async def test_grid_layout_stores_a_composed_file_beside_the_per_track_one(
    rec_cluster: tuple[str, Cluster], api: httpx.AsyncClient, tmp_path: Path
) -> None:
    if rec_cluster[0] != "sqlite":
        pytest.skip("the composition is the same code on either backend")
    replica = rec_cluster[1].replicas[0]
    host, guest, mid = await _room(replica)
    clients = await _publishing(replica, [host, guest], mid)
    try:
        r = await api.post(
            f"/api/v1/meetings/{mid}/recording/start",
            json={"format": "webm", "layout": "grid"},
            headers=host["headers"],
        )
        assert r.status_code == 200, r.text
        rid = r.json()["recording_id"]
        assert (await _status_until(api, host, rid, {"recording"}, 20))["status"] == "recording"
        await asyncio.sleep(2)
        r = await api.post(f"/api/v1/meetings/{mid}/recording/stop", headers=host["headers"])
        assert r.status_code == 200, r.text
        done = r.json()
        assert done["status"] == "completed", done
        assert done["layout"] == "grid"
        assert done["tracks_file_path"].endswith("-tracks.webm")
        metrics = done["quality_metrics"]
        assert metrics["transcoded"] is True
        assert metrics["decoders_created"] == 4  # composing decodes every track
        assert metrics["compose_cpu_seconds"] > 0
        r = await api.get(f"/api/v1/recording/download/{rid}", headers=host["headers"])
        assert r.status_code == 200
        path = tmp_path / "grid.webm"
        path.write_bytes(r.content)
        with av.open(str(path)) as container:
            video = container.streams.video[0]
            assert (video.codec_context.width, video.codec_context.height) == (1280, 720)
            assert [s.type for s in container.streams] == ["video", "audio"]
            assert container.duration is not None
            assert abs(container.duration / 1e6 - done["duration"]) < 0.5
    finally:
        for c in clients:
            await c.close()
