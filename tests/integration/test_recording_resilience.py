"""Recordings that survive their surroundings: a crashed SFU, a stopped MinIO, a deleted meeting.

Real api replicas, real ``konfer sfu`` and ``konfer recorder`` processes, aiortc
publishers gathering on 127.0.0.1 only. The MinIO tests run their own MinIO server (the
binary ``scripts/with-services.sh`` runs, from the same cache) so it can be stopped and
started again on the same port and data without disturbing the shared one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from tests.conftest import fresh_postgres_url, service_env
from tests.helpers import assert_error, free_port
from tests.integration.replicas import Cluster, Replica, cluster
from tests.integration.sfu_peers import PatternVideo, ToneAudio, gather_on_loopback
from tests.integration.test_recording import (
    RECORDING_ENV,
    _break,
    _publishing,
    _restore,
    _room,
    _size,
    _status_until,
)
from tests.integration.test_sfu_through_api import Client, rejoin, sfu_pid, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MINIO_USER, MINIO_SECRET = "konfer-test", "konfer-test-secret"
REJOIN_TIMEOUT = "60"


def _minio_binary() -> Path:
    """The MinIO server ``scripts/install-test-deps.sh`` built, found as with-services.sh does."""
    versions = dict(
        line.split("=", 1)
        for line in (ROOT / "scripts/versions.env").read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    cache = os.environ.get("KONFER_CACHE_DIR") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "konfer"
    )
    binary = Path(cache) / "bin" / f"minio-{versions['MINIO_VERSION'].strip()}" / "minio"
    if not binary.is_file():
        message = f"{binary} is missing: run scripts/install-test-deps.sh"
        if os.environ.get("KONFER_TEST_REQUIRE_SERVICES"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


@dataclass
class MinioServer:
    """A private MinIO on a fixed port: stopping and starting keeps port and data."""

    binary: Path
    data: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            **os.environ,
            "MINIO_ROOT_USER": MINIO_USER,
            "MINIO_ROOT_PASSWORD": MINIO_SECRET,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            "MINIO_CI_CD": "1",
        }
        args = [str(self.binary), "server", str(self.data), "--address", self.endpoint]
        args += ["--console-address", f"127.0.0.1:{free_port()}", "--quiet"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                url = f"http://{self.endpoint}/minio/health/live"
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"MinIO did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def objects(self, bucket: str, prefix: str) -> list[str]:
        from minio import Minio

        client = Minio(self.endpoint, MINIO_USER, MINIO_SECRET, secure=False)
        if not client.bucket_exists(bucket):
            return []
        listed = client.list_objects(bucket, prefix=prefix, recursive=True)
        return [str(o.object_name) for o in listed]


@dataclass
class Setup:
    """One api cluster and how to break, mend and inspect its storage."""

    backend: str  # "local" (SQLite + disk) or "minio" (PostgreSQL + Redis + MinIO)
    cluster: Cluster
    minio: MinioServer | None = None
    bucket: str = ""

    @property
    def replica(self) -> Replica:
        return self.cluster.replicas[0]

    @property
    def data_dir(self) -> Path:
        return self.cluster.workdir / f"data-{self.replica.port}"

    @property
    def storage(self) -> Path:
        return self.data_dir / "storage"

    def break_storage(self) -> None:
        if self.minio is not None:
            self.minio.stop()
        else:
            _break(self.storage, self.storage.with_name("storage-away"))

    def mend_storage(self) -> None:
        if self.minio is not None:
            if self.minio.proc is None:
                self.minio.start()
        else:
            _restore(self.storage, self.storage.with_name("storage-away"))

    def stored(self, prefix: str) -> list[str]:
        if self.minio is not None:
            return self.minio.objects(self.bucket, prefix)
        folder = self.storage / prefix
        return [str(p) for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def _rec_env(**extra: str) -> dict[str, str]:
    return {**RECORDING_ENV, "KONFER_RECORDER_REJOIN_TIMEOUT_SECONDS": REJOIN_TIMEOUT, **extra}


@pytest.fixture(scope="module")
def local_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    gather_on_loopback()
    workdir = tmp_path_factory.mktemp("resilience-local")
    db = f"sqlite+aiosqlite:///{workdir / 'konfer.db'}"
    with cluster(workdir, db, "", **_rec_env()) as c:
        c.start()
        yield Setup("local", c)


@pytest.fixture(scope="module")
def minio_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    gather_on_loopback()
    binary = _minio_binary()
    db, redis = fresh_postgres_url(), service_env("KONFER_TEST_REDIS_URL")
    workdir = tmp_path_factory.mktemp("resilience-minio")
    minio = MinioServer(binary, workdir / "minio", free_port(), workdir / "minio.log")
    minio.start()
    bucket = f"konfer-res-{uuid.uuid4().hex[:8]}"
    env = _rec_env(
        KONFER_S3_ENDPOINT=minio.endpoint,
        KONFER_S3_ACCESS_KEY=MINIO_USER,
        KONFER_S3_SECRET_KEY=MINIO_SECRET,
        KONFER_S3_BUCKET=bucket,
    )
    try:
        with cluster(workdir, db, redis, **env) as c:
            c.start()
            yield Setup("minio", c, minio, bucket)
    finally:
        minio.stop()


@pytest.fixture(params=["local", "minio"])
def setup(request: pytest.FixtureRequest) -> Setup:
    return request.getfixturevalue(f"{request.param}_setup")  # type: ignore[no-any-return]


@pytest.fixture
async def api_of() -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    clients: dict[str, httpx.AsyncClient] = {}
    yield clients
    for http in clients.values():
        await http.aclose()


def _api(clients: dict[str, httpx.AsyncClient], replica: Replica) -> httpx.AsyncClient:
    if replica.http not in clients:
        clients[replica.http] = httpx.AsyncClient(base_url=replica.http, timeout=60)
    return clients[replica.http]


def _kept(reason: str) -> Path:
    return Path(reason.split("kept at ", 1)[1].split(" and ", 1)[0])


async def _start(api: httpx.AsyncClient, host: dict[str, Any], mid: str, **body: Any) -> str:
    r = await api.post(
        "/api/v1/recording/start", json={"meeting_id": mid, **body}, headers=host["headers"]
    )
    assert r.status_code == 200, r.text
    rid: str = r.json()["recording_id"]
    assert (await _status_until(api, host, rid, {"recording"}, 20))["status"] == "recording"
    return rid


def _stream_spans(path: Path) -> dict[int, tuple[str, float, float]]:
    """Per stream: (kind, first, last) packet time in seconds, read by demuxing (no decode)."""
    spans: dict[int, tuple[str, float, float]] = {}
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.pts is None or packet.time_base is None:
                continue
            at = float(packet.pts * packet.time_base)
            index = packet.stream.index
            kind, first, last = spans.get(index, (packet.stream.type, at, at))
            spans[index] = (kind, min(first, at), max(last, at))
    return spans


def _recorder_log(replica: Replica) -> list[str]:
    """The recorder's warnings so far (it logs into the replica's output)."""
    lines = replica.log.read_text(errors="replace").splitlines()
    return [line for line in lines if "konfer.sfu.recorder" in line][-10:]


async def _media_back(clients: list[Client], mid: str) -> None:
    """What the web client does on ``media-reconnect``: rejoin, then publish again."""
    for c in clients:
        while (msg := await asyncio.wait_for(c.inbox.get(), 20))["type"] != "media-reconnect":
            pass
        assert msg["room_id"] == mid
    for c in clients:
        await rejoin(c, mid)
    await asyncio.sleep(0.5)
    for c in clients:
        await c.publish(PatternVideo(), ToneAudio(loud=True))
    for c in clients:
        others = [o.user["user_id"] for o in clients if o is not c]
        assert await wait_until(
            lambda c=c, others=others: all(c.frames_from(u, "video") >= 10 for u in others), 25
        )


async def test_sfu_crash_pauses_the_recording_which_resumes_and_keeps_both_sides_of_the_gap(
    local_setup: Setup, api_of: dict[str, httpx.AsyncClient], tmp_path: Path
) -> None:
    replica = local_setup.replica
    api = _api(api_of, replica)
    host, guest, mid = await _room(replica)
    clients = await _publishing(replica, [host, guest], mid)
    try:
        rid = await _start(api, host, mid, format="webm")
        before = await _status_until(api, host, rid, {"never"}, 1.5)
        assert before["status"] == "recording"
        assert before["reason"] is None
        old_sfu = sfu_pid(mid)
        os.kill(old_sfu, signal.SIGKILL)
        lost_at = time.monotonic()

        paused = await _status_until(api, host, rid, {"paused", "completed", "failed"}, 30)
        assert paused["status"] == "paused", paused
        assert paused["reason"].startswith("MEDIA_SERVER_LOST: media server lost")
        assert paused["reason"].endswith("rejoining")
        assert paused["download_url"] is None
        # Paused is still active: a second recording is refused, as while recording.
        r = await api.post(f"/api/v1/meetings/{mid}/recording/start", headers=host["headers"])
        assert_error(r, 409, "RECORDING_IN_PROGRESS")

        await _media_back(clients, mid)
        assert sfu_pid(mid) != old_sfu  # the runtime started a new SFU for the meeting
        resumed = await _status_until(api, host, rid, {"recording", "completed", "failed"}, 30)
        assert resumed["status"] == "recording", resumed
        assert resumed["reason"] is None
        gap = time.monotonic() - lost_at
        # Resumed means rejoined; each publisher's new tracks reach the recorder when their
        # media flows again, which on a loaded machine can take longer than the rejoin.
        deadline = time.monotonic() + 30
        while len(resumed["tracks"]) < 8 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            resumed = await _status_until(api, host, rid, {"recording"}, 0)
        # The new tracks are in; if not, whose are missing, the recorder's counters (frames
        # skipped while a video track waits for its keyframe, packets lost) and its warnings
        # (a silent track's receiver state) say why. A string: pytest shortens other objects.
        assert len(resumed["tracks"]) == 8, (
            f"written: {[(t['user_id'][:8], t['kind']) for t in resumed['tracks']]}; "
            f"quality: {resumed['quality_metrics']}; recorder log: {_recorder_log(replica)}"
        )
        await asyncio.sleep(1.5)  # then at least 1.5 s of the new tracks

        r = await api.post(
            "/api/v1/recording/stop", json={"recording_id": rid}, headers=host["headers"]
        )
        assert r.status_code == 200, r.text
        done = r.json()
        assert done["status"] == "completed", done
        assert done["reason"] is None
        metrics = done["quality_metrics"]
        assert metrics["interruptions"] == 1
        assert 0.5 < metrics["paused_seconds"] <= gap + 1.0, (metrics["paused_seconds"], gap)
        assert metrics["decoders_created"] == 0  # still a stream copy on both sides
        # Tracks before the gap and the new tracks after it, every one in the same file.
        assert len(done["tracks"]) == 8, done["tracks"]

        r = await api.get(f"/api/v1/recording/download/{rid}", headers=host["headers"])
        assert r.status_code == 200
        path = tmp_path / "gap.webm"
        path.write_bytes(r.content)
        spans = _stream_spans(path)
        videos = sorted((first, last) for kind, first, last in spans.values() if kind == "video")
        assert len(videos) == 4, spans
        early, late = videos[:2], videos[2:]
        gap_start = max(last for _first, last in early)
        assert all(first < 0.5 for first, _last in early)  # from the start of the recording
        assert all(last > 1.0 for _first, last in early)  # ... up to the crash
        assert all(first > gap_start for first, _last in late)  # after the gap only
        assert all(last - first > 1.0 for first, last in late)
        with av.open(str(path)) as container:
            assert container.duration is not None
            assert abs(container.duration / 1e6 - done["duration"]) < 0.5
            late_stream = next(
                s
                for s in container.streams.video
                if spans[s.index][1] == late[0][0] and spans[s.index][2] == late[0][1]
            )
            decoded = sum(1 for _ in container.decode(late_stream))  # after the gap plays
        assert decoded > 10
    finally:
        for c in clients:
            await c.close()


async def test_recorder_that_cannot_rejoin_stores_what_it_has_and_says_why(
    minio_setup: Setup, tmp_path: Path
) -> None:
    """The SFU never comes back: after the rejoin timeout the recording ends ``completed``
    with a reason saying so, and the file holds (and plays) what came before the loss.

    Participants are on the cluster's replica; the recording is started on a second one,
    whose recorder therefore asks it for the SFU, and it cannot start one (its SFU start
    timeout is too short for any process to come up) and gives up after 3 s.
    """
    a = minio_setup.replica
    b = minio_setup.cluster.start(
        KONFER_SFU_START_TIMEOUT_SECONDS="0.001", KONFER_RECORDER_REJOIN_TIMEOUT_SECONDS="3"
    )
    try:
        async with httpx.AsyncClient(base_url=b.http, timeout=60) as api:
            host, guest, mid = await _room(a)
            clients = await _publishing(a, [host, guest], mid)
            try:
                rid = await _start(api, host, mid, format="mkv")
                await asyncio.sleep(1.5)
                os.kill(sfu_pid(mid), signal.SIGKILL)
                paused = await _status_until(api, host, rid, {"paused", "completed"}, 30)
                assert paused["status"] == "paused", paused
                body = await _status_until(api, host, rid, {"completed", "failed"}, 40)
            finally:
                for client in clients:
                    await client.close()
            assert body["status"] == "completed", body
            assert body["reason"].startswith("ENDED_EARLY: the media server was lost"), body
            assert "could not be rejoined within 3 s" in body["reason"]
            assert body["quality_metrics"]["interruptions"] == 1
            assert 1.0 < body["duration"] < 4.0, body["duration"]
            r = await api.get(f"/api/v1/recording/download/{rid}", headers=host["headers"])
            assert r.status_code == 200
            path = tmp_path / "ended-early.mkv"
            path.write_bytes(r.content)
            with av.open(str(path)) as container:
                assert len(container.streams.video) == 2
                assert sum(1 for _ in container.decode(video=0)) > 10
    finally:
        minio_setup.cluster.replicas.remove(b)
        b.proc.terminate()
        b.proc.wait(timeout=30)


async def test_minio_stopped_before_the_upload_keeps_the_file_and_a_retry_completes(
    minio_setup: Setup, api_of: dict[str, httpx.AsyncClient], tmp_path: Path
) -> None:
    s = minio_setup
    api = _api(api_of, s.replica)
    host, guest, mid = await _room(s.replica)
    clients = await _publishing(s.replica, [host, guest], mid)
    try:
        rid = await _start(api, host, mid)
        await asyncio.sleep(1.5)
        s.break_storage()  # MinIO is down when the recorder stops and uploads
        r = await api.post(
            "/api/v1/recording/stop", json={"recording_id": rid}, headers=host["headers"]
        )
        assert r.status_code == 200, r.text
        failed = await _status_until(api, host, rid, {"failed", "completed"}, 60)
        assert failed["status"] == "failed", failed
        assert failed["upload_pending"] is True
        assert failed["reason"].startswith("UPLOAD_FAILED after 2 attempts")
        assert "can be retried" in failed["reason"]
        assert failed["download_url"] is None
        kept = _kept(failed["reason"])
        assert _size(kept) == failed["file_size"] > 0
        r = await api.get(f"/api/v1/recording/download/{rid}", headers=host["headers"])
        assert_error(r, 404, "RESOURCE_NOT_FOUND")

        s.mend_storage()
        r = await api.post(f"/api/v1/recording/{rid}/retry-upload", headers=host["headers"])
        assert r.status_code == 200, r.text
        done = await _status_until(api, host, rid, {"completed"}, 60)
        assert done["status"] == "completed", done
        assert done["upload_pending"] is False
        assert done["reason"] is None
        assert s.stored(f"recordings/{mid}/") == [done["file_path"]]
        r = await api.get(f"/api/v1/recording/download/{rid}", headers=host["headers"])
        assert r.status_code == 200
        assert len(r.content) == done["file_size"] == failed["file_size"]
        path = tmp_path / "retried.webm"
        path.write_bytes(r.content)
        with av.open(str(path)) as container:
            assert sorted(st.type for st in container.streams) == [
                "audio",
                "audio",
                "video",
                "video",
            ]
            assert sum(1 for _ in container.decode(video=0)) > 10
        assert _size(kept) == -1  # the kept copy is gone once stored
    finally:
        s.mend_storage()
        for c in clients:
            await c.close()


async def test_deleting_a_meeting_deletes_its_recordings_files_and_library_entries(
    setup: Setup, api_of: dict[str, httpx.AsyncClient]
) -> None:
    api = _api(api_of, setup.replica)
    host, guest, mid = await _room(setup.replica)
    clients = await _publishing(setup.replica, [host, guest], mid)
    spool = setup.data_dir / "recordings"
    try:
        # One recording completed and stored ...
        first = await _start(api, host, mid)
        await asyncio.sleep(1)
        r = await api.post(
            "/api/v1/recording/stop", json={"recording_id": first}, headers=host["headers"]
        )
        done = r.json()
        assert done["status"] == "completed", done
        assert setup.stored(f"recordings/{mid}/") != []
        # ... one whose upload failed, kept on local disk ...
        second = await _start(api, host, mid)
        await asyncio.sleep(1)
        setup.break_storage()
        try:
            await api.post(
                "/api/v1/recording/stop", json={"recording_id": second}, headers=host["headers"]
            )
            failed = await _status_until(api, host, second, {"failed", "completed"}, 60)
        finally:
            setup.mend_storage()
        assert failed["upload_pending"] is True, failed
        kept = _kept(failed["reason"])
        assert _size(kept) > 0
        # ... and one still running when the meeting is deleted, beside a live stream
        # whose segments are in storage.
        third = await _start(api, host, mid)
        r = await api.post(
            "/api/v1/streaming/start",
            json={"meeting_id": mid, "stream_type": "dash", "user_id": host["user_id"]},
            headers=host["headers"],
        )
        assert r.status_code == 200, r.text
        stream = r.json()["stream_id"]
        assert await wait_until(lambda: setup.stored(f"streams/{stream}/") != [], 30)

        r = await api.delete(f"/api/v1/meetings/{mid}", headers=host["headers"])
        assert r.status_code == 204, r.text

        for rid in (first, second, third):
            r = await api.get(f"/api/v1/recording/{rid}", headers=host["headers"])
            assert_error(r, 404, "RESOURCE_NOT_FOUND")
            assert not (spool / rid).exists()
        r = await api.get(f"/api/v1/media/info/{done['media_id']}", headers=host["headers"])
        assert_error(r, 404, "RESOURCE_NOT_FOUND")
        r = await api.get("/api/v1/media", headers=host["headers"])
        assert r.status_code == 200, r.text
        assert [m for m in r.json()["data"]["media_files"] if m["source"] == "recording"] == []
        assert _size(kept) == -1
        assert setup.stored(f"recordings/{mid}/") == []  # no orphaned objects
        r = await api.get(f"/api/v1/streaming/{stream}/status", headers=host["headers"])
        assert_error(r, 404, "RESOURCE_NOT_FOUND")
        assert setup.stored(f"streams/{stream}/") == []  # its public segments went too
    finally:
        setup.mend_storage()
        for c in clients:
            await c.close()
