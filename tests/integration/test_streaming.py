"""Live streaming end to end: real api, SFU and ``konfer streamer`` workers.

A host publishes H.264 (copied into HLS) and a guest VP8 (transcoded for RTMP, copied
into DASH), both with Opus, from aiortc peers on 127.0.0.1. HLS: the playlist served by
the api is valid and its segments decode; DASH: the manifest and WebM segments are
served; RTMP: pushed to a real nginx with the RTMP module on loopback, which records what
it receives, and the recording is probed.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from aiortc import RTCRtpSender

from tests.helpers import assert_error, free_port
from tests.integration.replicas import Cluster, cluster
from tests.integration.sfu_peers import PatternVideo, ToneAudio, gather_on_loopback, new_pc
from tests.integration.test_recording import RECORDING_ENV
from tests.integration.test_sfu_through_api import Client, enter, wait_until
from tests.integration.test_signaling import meeting, signup

NGINX = Path("/usr/sbin/nginx")
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")


@pytest.fixture(scope="module")
def stream_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    gather_on_loopback()
    workdir = tmp_path_factory.mktemp("streaming")
    with cluster(workdir, f"sqlite+aiosqlite:///{workdir / 'konfer.db'}", "", **RECORDING_ENV) as c:
        c.start()
        yield c


@pytest.fixture(scope="module")
def nginx_rtmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """nginx with the RTMP module on 127.0.0.1, recording every stream it receives."""
    if not (NGINX.exists() and RTMP_MODULE.exists()):
        pytest.skip("nginx with libnginx-mod-rtmp is missing: scripts/install-test-deps.sh")
    root = tmp_path_factory.mktemp("nginx")
    records = root / "records"
    records.mkdir()
    port = free_port()
    (root / "nginx.conf").write_text(
        f"load_module {RTMP_MODULE};\n"
        "daemon off;\nmaster_process off;\nworker_processes 1;\n"
        f"pid {root}/nginx.pid;\nerror_log {root}/error.log info;\n"
        "events { worker_connections 64; }\n"
        "rtmp { server {\n"
        f"  listen 127.0.0.1:{port};\n"
        "  application live { live on; record all; "
        f"record_path {records}; record_unique off; }}\n"
        "} }\n"
    )
    proc = subprocess.Popen(
        [str(NGINX), "-p", str(root), "-c", str(root / "nginx.conf"), "-e", str(root / "err.log")]
    )
    try:
        deadline = time.monotonic() + 10
        import socket

        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, (root / "err.log").read_text()
            assert time.monotonic() < deadline, "nginx did not listen"
            time.sleep(0.1)
        yield f"rtmp://127.0.0.1:{port}/live", records
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def api(stream_cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stream_cluster.replicas[0].http, timeout=60) as http:
        yield http


async def _publish(client: Client, codec: str) -> None:
    """Camera in ``codec`` and an Opus microphone on the client's publisher connection."""
    pc = client.publisher = new_pc()
    for track in (PatternVideo(size=(320, 240)), ToneAudio(loud=True)):
        transceiver = pc.addTransceiver(track, direction="sendonly")
        if track.kind == "video":
            caps = RTCRtpSender.getCapabilities("video").codecs
            transceiver.setCodecPreferences(
                [c for c in caps if c.mimeType.lower() in (f"video/{codec}", "video/rtx")]
            )
    await client.publish()


async def _stream_status(
    api: httpx.AsyncClient, user: dict[str, Any], sid: str, wanted: set[str], seconds: float
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        r = await api.get(f"/api/v1/streaming/{sid}/status", headers=user["headers"])
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["status"] in wanted or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.1)


async def _wait_file(api: httpx.AsyncClient, url: str, seconds: float) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while True:
        r = await api.get(url)
        if r.status_code == 200 or time.monotonic() > deadline:
            return r
        await asyncio.sleep(0.25)


async def test_hls_dash_and_rtmp_streams_of_a_meeting(
    stream_cluster: Cluster,
    api: httpx.AsyncClient,
    nginx_rtmp: tuple[str, Path],
    tmp_path: Path,
) -> None:
    replica = stream_cluster.replicas[0]
    host, guest = await signup(replica), await signup(replica)
    mid = await meeting(replica, host)
    a, b = await enter(replica, host, mid), await enter(replica, guest, mid)
    try:
        await _publish(a, "h264")
        await _publish(b, "vp8")
        assert await wait_until(
            lambda: (
                a.frames_from(guest["user_id"], "video") >= 10
                and b.frames_from(host["user_id"], "video") >= 10
            ),
            30,
        )
        rtmp_base, records = nginx_rtmp
        key = f"k{uuid.uuid4().hex[:8]}"
        starts = {
            "hls": {"stream_type": "hls", "user_id": host["user_id"]},
            "dash": {"stream_type": "dash", "user_id": guest["user_id"]},
            "rtmp": {
                "stream_type": "rtmp",
                "rtmp_url": f"{rtmp_base}/{key}",
                "user_id": guest["user_id"],
            },
        }
        ids: dict[str, str] = {}
        for kind, body in starts.items():
            r = await api.post(
                "/api/v1/streaming/start",
                json={"meeting_id": mid, "room_id": mid, **body},
                headers=host["headers"],
            )
            assert r.status_code == 200, r.text
            ids[kind] = r.json()["stream_id"]
        for kind, sid in ids.items():
            body = await _stream_status(api, host, sid, {"streaming", "failed"}, 30)
            assert body["status"] == "streaming", (kind, body["reason"])

        # HLS: a valid playlist whose segments decode (H.264 copied, AAC from Opus).
        hls = f"/api/v1/streaming/hls/{ids['hls']}"
        deadline = time.monotonic() + 30
        segments: list[str] = []
        while time.monotonic() < deadline and len(segments) < 2:
            r = await _wait_file(api, f"{hls}/playlist.m3u8", 30)
            assert r.status_code == 200, r.text
            playlist = r.text
            segments = [line for line in playlist.splitlines() if line.endswith(".ts")]
            await asyncio.sleep(0.5)
        assert playlist.startswith("#EXTM3U"), playlist
        assert "#EXT-X-TARGETDURATION" in playlist
        assert len(segments) >= 2, playlist
        assert r.headers["content-type"] == "application/vnd.apple.mpegurl"
        r = await api.get(f"{hls}/{segments[0]}")
        assert r.status_code == 200
        (tmp_path / "seg.ts").write_bytes(r.content)
        with av.open(str(tmp_path / "seg.ts")) as ts:
            names = sorted(s.codec_context.name for s in ts.streams)
            assert names == ["aac", "h264"]
            frames = samples = 0
            for frame in ts.decode(*ts.streams):
                if isinstance(frame, av.AudioFrame):
                    samples += frame.samples
                else:
                    frames += 1
        assert frames > 10
        assert samples > 48000 // 2

        # DASH: manifest and WebM segments (VP8 and Opus copied).
        dash = f"/api/v1/streaming/dash/{ids['dash']}"
        r = await _wait_file(api, f"{dash}/manifest.mpd", 30)
        assert r.status_code == 200, r.text
        assert "<MPD" in r.text
        assert 'mimeType="video/webm"' in r.text

        # Viewers are counted from playlist requests.
        status = await _stream_status(api, host, ids["hls"], {"streaming"}, 1)
        assert status["current_viewers"] >= 1
        assert status["hls_url"].endswith(f"/api/v1/streaming/hls/{ids['hls']}/playlist.m3u8")

        r = await api.get("/api/v1/streaming/list?status=streaming", headers=guest["headers"])
        assert r.status_code == 200, r.text
        listed = r.json()
        assert {s["stream_id"] for s in listed["streams"]} == set(ids.values())
        assert listed["message"] == "Streams retrieved successfully"

        await asyncio.sleep(2)
        for kind, sid in ids.items():
            r = await api.post(
                "/api/v1/streaming/stop", json={"stream_id": sid}, headers=host["headers"]
            )
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "stopped", (kind, r.json())
        r = await api.post(
            "/api/v1/streaming/stop", json={"stream_id": ids["hls"]}, headers=host["headers"]
        )
        assert_error(r, 409, "RESOURCE_CONFLICT")

        # RTMP: nginx received an FLV with H.264 (VP8 transcoded) and AAC.
        flv = records / f"{key}.flv"
        assert await wait_until(flv.exists, 10), list(records.iterdir())
        copy = tmp_path / "rtmp.flv"
        shutil.copy(flv, copy)
        with av.open(str(copy)) as got:
            names = sorted(s.codec_context.name for s in got.streams)
            assert names == ["aac", "h264"]
            assert sum(1 for _ in got.decode(video=0)) > 10
    finally:
        await a.close()
        await b.close()


async def test_bad_streaming_requests(stream_cluster: Cluster, api: httpx.AsyncClient) -> None:
    replica = stream_cluster.replicas[0]
    host, guest = await signup(replica), await signup(replica)
    mid = await meeting(replica, host)
    r = await api.post(f"/api/v1/meetings/{mid}/join", headers=guest["headers"])
    assert r.status_code == 200
    r = await api.post(
        "/api/v1/streaming/start",
        json={"meeting_id": mid, "stream_type": "rtmp"},
        headers=host["headers"],
    )
    assert_error(r, 400, "VALIDATION_ERROR")
    r = await api.post(
        "/api/v1/streaming/start",
        json={"meeting_id": mid, "stream_type": "rtmp", "rtmp_url": "http://x/y"},
        headers=host["headers"],
    )
    assert_error(r, 400, "VALIDATION_ERROR")
    r = await api.post(
        "/api/v1/streaming/start",
        json={"meeting_id": mid, "stream_type": "hls"},
        headers=guest["headers"],
    )
    assert_error(r, 403, "INSUFFICIENT_PERMISSIONS")
    unknown = str(uuid.uuid4())
    for url in (
        f"/api/v1/streaming/status/{unknown}",
        f"/api/v1/streaming/{unknown}/status",
        f"/api/v1/streaming/hls/{unknown}/playlist.m3u8",
    ):
        r = await api.get(url, headers=host["headers"])
        assert_error(r, 404, "RESOURCE_NOT_FOUND")
    r = await api.post(
        "/api/v1/streaming/stop", json={"stream_id": unknown}, headers=host["headers"]
    )
    assert_error(r, 404, "RESOURCE_NOT_FOUND")
