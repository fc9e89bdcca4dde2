"""FFmpeg operations as durable jobs: every operation on generated media with the output
probed, progress and cancellation, survival across an api restart, a worker killed
mid-job (a real ``konfer worker`` process), claims that never overlap, and bad input."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import update

from konfer.api.db.models import MediaJob
from konfer.api.media.worker import Worker
from konfer.api.services import jobs as job_service
from konfer.core.settings import Settings
from tests import media_samples as samples
from tests.conftest import ApiClient, SettingsFactory
from tests.helpers import assert_error
from tests.integration.media_helpers import (
    FFMPEG,
    MEDIA,
    download,
    job_row,
    probe_item,
    running_worker,
    stored_keys,
    uploaded,
    wait_job,
)

KONFER = str(Path(sys.executable).with_name("konfer"))


async def _video(client: ApiClient, user: dict[str, Any], **kw: Any) -> str:
    data = samples.media("mp4", **kw)
    return str((await uploaded(client, user, data, "clip.mp4"))["media_id"])


async def _run(
    client: ApiClient, user: dict[str, Any], path: str, body: dict[str, Any]
) -> dict[str, Any]:
    r = await client.post(f"{FFMPEG}/{path}", headers=user["headers"], json=body)
    assert r.status_code == 200, r.text
    accepted: dict[str, Any] = r.json()
    status = await wait_job(client, user, accepted["job_id"])
    assert status["status"] == "completed", status
    assert status["progress"] == 100
    assert status["output_media_id"] == accepted["output_media_id"]
    return accepted


# --- every operation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_body", "expect"),
    [
        (
            {
                "output_format": "webm",
                "video_codec": "vp9",
                "audio_codec": "opus",
                "resolution": "320x240",
                "bitrate": "300k",
                "frame_rate": 10,
                "preset": "ultrafast",
            },
            ("webm", "vp9", "opus", 320, 240, 10),
        ),
        (
            {
                "output_format": "mkv",
                "video_codec": "h265",
                "audio_codec": "mp3",
                "resolution": "240p",
                "preset": "ultrafast",
            },
            ("matroska", "h265", "mp3", 320, 240, 15),
        ),
        (
            {"output_format": "avi", "video_codec": "h264", "frame_rate": 12},
            ("avi", "h264", "mp3", 160, 120, 12),
        ),
        (
            {
                "output_format": "mp4",
                "video_codec": "vp9",
                "audio_codec": "opus",
                "resolution": "128x96",
                "preset": "fast",
            },
            ("mp4", "vp9", "opus", 128, 96, 15),
        ),
    ],
)
async def test_transcode_writes_the_requested_format(
    client: ApiClient, request_body: dict[str, Any], expect: tuple[Any, ...]
) -> None:
    user = await client.signup()
    source = await _video(client, user)
    async with running_worker(client):
        accepted = await _run(client, user, "transcode", {"input_media_id": source, **request_body})
    assert accepted["status"] == "queued"
    assert accepted["output_format"] == request_body["output_format"]
    assert accepted["estimated_time"] >= 1
    demuxer, vcodec, acodec, width, height, fps = expect
    info = await probe_item(client, user, accepted["output_media_id"])
    assert demuxer in info.demuxer.split(",")
    assert info.video is not None
    assert info.audio is not None
    assert (info.video.codec, info.audio.codec) == (vcodec, acodec)
    assert (info.video.width, info.video.height) == (width, height)
    assert info.video.frame_rate == fps
    assert info.duration is not None
    assert abs(info.duration - 1.0) < 0.25
    item = (
        await client.get(f"{MEDIA}/info/{accepted['output_media_id']}", headers=user["headers"])
    ).json()
    assert item["source"] == "job"
    assert item["uploaded_by"] == user["user_id"]
    assert item["resolution"] == f"{width}x{height}"
    thumb = await client.get(f"{MEDIA}/thumbnail/{item['media_id']}", headers=user["headers"])
    assert thumb.status_code == 200


@pytest.mark.parametrize(
    ("audio_format", "bitrate", "codec", "demuxer"),
    [
        ("mp3", "96k", "mp3", "mp3"),
        ("m4a", None, "aac", "mp4"),
        ("wav", None, "pcm", "wav"),
        ("ogg", None, "vorbis", "ogg"),
        ("flac", None, "flac", "flac"),
    ],
)
async def test_extract_audio(
    client: ApiClient, audio_format: str, bitrate: str | None, codec: str, demuxer: str
) -> None:
    user = await client.signup()
    source = await _video(client, user)
    body: dict[str, Any] = {"video_media_id": source, "audio_format": audio_format}
    if bitrate:
        body["audio_bitrate"] = bitrate
    async with running_worker(client):
        accepted = await _run(client, user, "extract-audio", body)
    info = await probe_item(client, user, accepted["output_media_id"])
    assert info.video is None
    assert info.audio is not None
    assert info.audio.codec == codec
    assert demuxer in info.demuxer.split(",")
    if bitrate:
        assert info.bitrate is not None
        assert 70_000 < info.bitrate < 130_000
    item = (
        await client.get(f"{MEDIA}/info/{accepted['output_media_id']}", headers=user["headers"])
    ).json()
    assert (item["file_type"], item["format"]) == ("audio", audio_format)


async def test_extract_video_copies_the_video_without_audio(client: ApiClient) -> None:
    user = await client.signup()
    source = await _video(client, user, width=176, height=144)
    async with running_worker(client):
        accepted = await _run(client, user, "extract-video", {"media_id": source})
    info = await probe_item(client, user, accepted["output_media_id"])
    assert info.audio is None
    assert info.video is not None
    assert (info.video.codec, info.video.width, info.video.height) == ("h264", 176, 144)


@pytest.mark.parametrize(
    ("transition", "expected"), [("none", 3.3), ("fade", 2.3), ("dissolve", 2.3)]
)
async def test_merge_with_transitions(client: ApiClient, transition: str, expected: float) -> None:
    user = await client.signup()
    first = await _video(client, user, seconds=1.2)
    second = (
        await uploaded(
            client,
            user,
            samples.media("webm", seconds=1.0, width=320, height=180, fps=25),
            "b.webm",
        )
    )["media_id"]
    third = await _video(client, user, seconds=1.1, audio=False)
    body = {
        "media_ids": [first, second, third],
        "output_format": "mp4",
        "transition": transition,
        "transition_duration": 0.5,
    }
    async with running_worker(client):
        accepted = await _run(client, user, "merge", body)
    info = await probe_item(client, user, accepted["output_media_id"])
    assert info.video is not None
    assert info.audio is not None
    assert (info.video.codec, info.video.width, info.video.height) == ("h264", 160, 120)
    assert info.duration is not None
    assert abs(info.duration - expected) < 0.2, info.duration


async def test_merge_audio_files(client: ApiClient) -> None:
    user = await client.signup()
    ids = [
        (await uploaded(client, user, samples.media(f, seconds=1.0), f"a.{f}"))["media_id"]
        for f in ("mp3", "ogg")
    ]
    async with running_worker(client):
        accepted = await _run(
            client,
            user,
            "merge",
            {
                "media_ids": ids,
                "output_format": "mp3",
                "transition": "fade",
                "transition_duration": 0.3,
            },
        )
    info = await probe_item(client, user, accepted["output_media_id"])
    assert info.video is None
    assert info.audio is not None
    assert info.audio.codec == "mp3"
    assert info.duration is not None
    assert abs(info.duration - 1.7) < 0.15


@pytest.mark.parametrize(("fmt", "pil"), [("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP")])
async def test_thumbnail_answers_with_the_picture(client: ApiClient, fmt: str, pil: str) -> None:
    user = await client.signup()
    source = await _video(client, user, seconds=1.5)
    async with running_worker(client):
        r = await client.post(
            f"{FFMPEG}/thumbnail",
            headers=user["headers"],
            json={"media_id": source, "timestamp": 0.8, "width": 96, "height": 64, "format": fmt},
        )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "completed"
    assert (body["width"], body["height"], body["format"]) == (96, 64, fmt)
    data = await download(client, user, body["thumbnail_id"])
    assert body["size"] == len(data)
    assert body["url"].endswith(f"/api/v1/media/download/{body['thumbnail_id']}")
    with Image.open(io.BytesIO(data)) as picture:
        assert (picture.format, picture.size) == (pil, (96, 64))


async def test_upload_preview_and_image_thumbnails(client: ApiClient) -> None:
    user = await client.signup()
    async with running_worker(client):
        video = await _video(client, user)
        r = await client.get(f"{MEDIA}/thumbnail/{video}", headers=user["headers"])
        assert r.status_code == 200
        assert r.headers["content-type"] == "image/jpeg"
        with Image.open(io.BytesIO(r.content)) as picture:
            assert picture.size == (320, 180)
        png = (await uploaded(client, user, samples.image("png"), "p.png"))["media_id"]
        r = await client.post(
            f"{FFMPEG}/thumbnail", headers=user["headers"], json={"media_id": png, "format": "png"}
        )
        assert r.json()["status"] == "completed"


async def test_process_runs_each_operation_into_its_own_item(client: ApiClient) -> None:
    user = await client.signup()
    source = await _video(client, user)
    ops = ["extract_audio", "generate_thumbnail", "compress", "convert_format", "extract_video"]
    async with running_worker(client):
        r = await client.post(
            f"{MEDIA}/process",
            headers=user["headers"],
            json={"media_id": source, "operations": ops, "output_format": "mkv", "quality": "low"},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["message"] == "Processing started"
        status = await wait_job(client, user, body["job_id"])
    assert status["status"] == "completed", status
    assert status["output_media_ids"] == body["output_media_ids"]
    kinds = []
    for media_id in body["output_media_ids"]:
        item = (await client.get(f"{MEDIA}/info/{media_id}", headers=user["headers"])).json()
        kinds.append((item["file_type"], item["format"]))
    assert kinds == [
        ("audio", "mp3"),
        ("image", "jpg"),
        ("video", "mkv"),
        ("video", "mkv"),
        ("video", "mp4"),
    ]


# --- job lifecycle ---------------------------------------------------------------------


async def _slow_job(client: ApiClient, user: dict[str, Any]) -> dict[str, Any]:
    """A transcode that takes a few seconds on this machine (VP9, slow preset)."""
    source = await _video(client, user, seconds=1.2, width=320, height=240, fps=15, noisy=True)
    r = await client.post(
        f"{FFMPEG}/transcode",
        headers=user["headers"],
        json={
            "input_media_id": source,
            "output_format": "webm",
            "video_codec": "vp9",
            "resolution": "640x480",
            "preset": "slow",
        },
    )
    assert r.status_code == 200, r.text
    accepted: dict[str, Any] = r.json()
    return accepted


async def _until_progress(client: ApiClient, user: dict[str, Any], job_id: str) -> dict[str, Any]:
    for _ in range(600):
        r = await client.get(f"{FFMPEG}/job/{job_id}/status", headers=user["headers"])
        status: dict[str, Any] = r.json()
        if status["status"] == "processing" and status["progress"] > 0:
            return status
        assert status["status"] in ("queued", "processing"), status
        await asyncio.sleep(0.05)
    raise AssertionError("the job never reported progress")


async def test_cancel_stops_a_running_job_and_leaves_nothing(client: ApiClient) -> None:
    user = await client.signup()
    accepted = await _slow_job(client, user)
    job_id, output = accepted["job_id"], accepted["output_media_id"]
    async with running_worker(client):
        running = await _until_progress(client, user, job_id)
        assert 0 < running["progress"] < 100
        r = await client.post(f"{FFMPEG}/job/{job_id}/cancel", headers=user["headers"])
        assert r.status_code == 200
        assert r.json()["status"] == "cancelled"
        await asyncio.sleep(1.5)  # the worker notices at its next progress write
    status = await wait_job(client, user, job_id)
    assert status["status"] == "cancelled"
    assert status["output_media_id"] is None
    assert_error(
        await client.get(f"{MEDIA}/info/{output}", headers=user["headers"]),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert await stored_keys(client, f"media/{output}/") == set()
    r = await client.post(f"{FFMPEG}/job/{job_id}/cancel", headers=user["headers"])
    assert_error(r, 409, "RESOURCE_CONFLICT")


async def test_jobs_survive_an_api_restart(
    make_settings: SettingsFactory, open_client: Any
) -> None:
    settings = make_settings("sqlite")
    async with open_client(settings) as client:
        user = await client.signup()
        source = await _video(client, user)
        r = await client.post(
            f"{FFMPEG}/extract-audio", headers=user["headers"], json={"video_media_id": source}
        )
        job_id = r.json()["job_id"]
    async with open_client(settings) as client:
        r = await client.get(f"{FFMPEG}/job/{job_id}/status", headers=user["headers"])
        assert r.json()["status"] == "queued"
        async with running_worker(client):
            assert (await wait_job(client, user, job_id))["status"] == "completed"


def _worker_env(settings: Settings) -> dict[str, str]:
    env = {
        **os.environ,
        "KONFER_DATA_DIR": str(settings.data_dir),
        "KONFER_JSON_LOGS": "false",
        "KONFER_WORKER_LEASE_SECONDS": "2",
        "KONFER_WORKER_POLL_INTERVAL_SECONDS": "0.1",
        "KONFER_WORKER_SCRATCH_DIR": str(settings.data_dir / "scratch"),
    }
    if settings.database_url:
        env["KONFER_DATABASE_URL"] = settings.database_url
    if settings.s3_endpoint:
        env.update(
            KONFER_S3_ENDPOINT=settings.s3_endpoint,
            KONFER_S3_ACCESS_KEY=settings.s3_access_key,
            KONFER_S3_SECRET_KEY=settings.s3_secret_key.get_secret_value(),
            KONFER_S3_BUCKET=settings.s3_bucket,
        )
    return env


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_killed_worker_s_job_completes_after_restart(
    make_settings: SettingsFactory, open_client: Any, backend: str
) -> None:
    settings = make_settings(backend)
    env = _worker_env(settings)
    async with open_client(settings) as client:
        user = await client.signup()
        accepted = await _slow_job(client, user)
        job_id = accepted["job_id"]
        # The upload's preview job goes first; let the worker finish it, then the slow one.
        first = subprocess.Popen([KONFER, "worker"], env=env, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
        try:
            running = await _until_progress(client, user, job_id)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        row = await job_row(client, job_id)
        assert row.status == "processing"
        assert row.attempts == 1
        assert running["progress"] < 100
        second = subprocess.Popen([KONFER, "worker"], env=env, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
        try:
            status = await wait_job(client, user, job_id, within=90)
        finally:
            second.terminate()
            second.wait(timeout=15)
        assert status["status"] == "completed", status
        assert status["attempts"] == 2
        info = await probe_item(client, user, accepted["output_media_id"])
        assert info.video is not None
        assert (info.video.codec, info.video.width, info.video.height) == ("vp9", 640, 480)
        # Exactly the output and its preview are stored: the killed attempt left nothing.
        assert len(await stored_keys(client, f"media/{accepted['output_media_id']}/")) == 2


async def test_claims_never_overlap(client: ApiClient) -> None:
    """Many workers claiming at once: each job goes to exactly one of them."""
    user = await client.signup()
    state = client.app.state.konfer
    source = await _video(client, user, seconds=0.5)
    # Drain the preview job first so only the jobs made here are queued.
    async with running_worker(client):
        await client.get(f"{MEDIA}/thumbnail/{source}", headers=user["headers"])
    job_ids = []
    for _ in range(4):
        r = await client.post(
            f"{FFMPEG}/extract-video", headers=user["headers"], json={"media_id": source}
        )
        job_ids.append(r.json()["job_id"])

    async def claim(n: int) -> str | None:
        async with state.sessionmaker() as session:
            job = await job_service.claim(session, f"racer-{n}", 30)
            return str(job.id) if job else None

    won = [c for c in await asyncio.gather(*(claim(n) for n in range(12))) if c]
    assert sorted(won) == sorted(set(won))
    assert set(won) <= set(job_ids)
    for job_id in won:
        row = await job_row(client, job_id)
        assert row.attempts == 1
        assert row.claimed_by is not None
        assert row.claimed_by.startswith("racer-")
    # Give them back (expire the leases) and let two real workers finish them all.
    async with state.sessionmaker() as session:
        await session.execute(
            update(MediaJob)
            .where(MediaJob.id.in_([uuid.UUID(j) for j in job_ids]))
            .values(status="queued", claimed_by=None, lease_expires_at=None, attempts=0)
        )
        await session.commit()
    workers = [Worker(state.settings, state.sessionmaker, state.storage) for _ in range(2)]
    for _ in range(len(job_ids)):  # both workers claim at the same time, round after round
        if not any(await asyncio.gather(*(w.run_once() for w in workers))):
            break
    for job_id in job_ids:
        row = await job_row(client, job_id)
        assert (row.status, row.attempts) == ("completed", 1)


# --- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("transcode", {"output_format": "gif"}, "output_format"),
        ("transcode", {"output_format": "webm", "video_codec": "h264"}, "video_codec"),
        ("transcode", {"output_format": "mp4", "audio_codec": "vorbis"}, "audio_codec"),
        ("transcode", {"output_format": "mp4", "resolution": "big"}, "resolution"),
        ("transcode", {"output_format": "mp4", "resolution": "321x240"}, "resolution"),
        ("transcode", {"output_format": "mp4", "bitrate": "fast"}, "bitrate"),
        ("transcode", {"output_format": "mp4", "frame_rate": 0}, "frame_rate"),
        ("transcode", {"output_format": "mp4", "preset": "ludicrous"}, "preset"),
        ("transcode", {"output_format": "mp3", "resolution": "720p"}, "resolution"),
        ("transcode", {"output_format": "mp4", "extra": 1}, "extra"),
        ("extract-audio", {"audio_format": "wma"}, "audio_format"),
        ("extract-audio", {"audio_bitrate": "loud"}, "audio_bitrate"),
        ("thumbnail", {"width": 0}, "width"),
        ("thumbnail", {"format": "gif"}, "format"),
        ("thumbnail", {"timestamp": -1}, "timestamp"),
        ("merge", {"media_ids": []}, "media_ids"),
        ("merge", {"transition": "wipe"}, "transition"),
        ("merge", {"transition_duration": 0}, "transition_duration"),
    ],
)
async def test_ffmpeg_routes_refuse_bad_input(
    client: ApiClient, path: str, body: dict[str, Any], field: str
) -> None:
    user = await client.signup()
    source = await _video(client, user)
    key = {"transcode": "input_media_id", "extract-audio": "video_media_id"}.get(path, "media_id")
    full: dict[str, Any] = {key: source}
    if path == "merge":
        full = {"media_ids": [source, source]}
    full.update(body)
    r = await client.post(f"{FFMPEG}/{path}", headers=user["headers"], json=full)
    assert field in assert_error(r, 400, "VALIDATION_ERROR")["details"]


async def test_operations_check_the_input(client: ApiClient) -> None:
    user, stranger = await client.signup(), await client.signup()
    silent = await _video(client, user, audio=False)
    song = (await uploaded(client, user, samples.media("mp3"), "s.mp3"))["media_id"]
    picture = (await uploaded(client, user, samples.image("png"), "p.png"))["media_id"]
    short = await _video(client, user, seconds=0.5)
    cases = [
        ("extract-audio", {"video_media_id": silent}, "video_media_id"),
        ("extract-video", {"media_id": song}, "media_id"),
        ("thumbnail", {"media_id": song}, "media_id"),
        ("transcode", {"input_media_id": picture, "output_format": "mp4"}, "input_media_id"),
        ("merge", {"media_ids": [song, silent]}, "media_ids"),
        ("merge", {"media_ids": [short, short], "transition": "fade"}, "transition_duration"),
    ]
    for path, body, field in cases:
        r = await client.post(f"{FFMPEG}/{path}", headers=user["headers"], json=body)
        assert field in assert_error(r, 400, "VALIDATION_ERROR")["details"], (path, r.text)
    r = await client.post(
        f"{MEDIA}/process",
        headers=user["headers"],
        json={"media_id": song, "operations": ["convert_format"]},
    )
    assert "output_format" in assert_error(r, 400, "VALIDATION_ERROR")["details"]
    r = await client.post(
        f"{MEDIA}/process", headers=user["headers"], json={"media_id": song, "operations": ["x"]}
    )
    assert_error(r, 400, "VALIDATION_ERROR")
    # Someone else's media is not found, whatever the operation.
    for path, body in (
        ("transcode", {"input_media_id": song, "output_format": "mp4"}),
        ("extract-video", {"media_id": silent}),
        ("merge", {"media_ids": [silent, silent]}),
    ):
        r = await client.post(f"{FFMPEG}/{path}", headers=stranger["headers"], json=body)
        assert_error(r, 404, "RESOURCE_NOT_FOUND")


async def test_job_status_is_private(client: ApiClient) -> None:
    user, stranger, admin = await client.signup(), await client.signup(), await client.make_admin()
    source = await _video(client, user)
    r = await client.post(
        f"{FFMPEG}/extract-video", headers=user["headers"], json={"media_id": source}
    )
    job_id = r.json()["job_id"]
    assert_error(
        await client.get(f"{FFMPEG}/job/{job_id}/status", headers=stranger["headers"]),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert (await client.get(f"{FFMPEG}/job/{job_id}/status", headers=admin["headers"])).json()[
        "status"
    ] in ("queued", "processing", "completed")
    assert_error(
        await client.get(f"{FFMPEG}/job/nope/status", headers=user["headers"]),
        400,
        "VALIDATION_ERROR",
    )
    assert_error(
        await client.get(f"{FFMPEG}/job/{uuid.uuid4()}/status", headers=user["headers"]),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert_error(await client.get(f"{FFMPEG}/job/{job_id}/status"), 401, "MISSING_TOKEN")
    r = await client.post(f"{FFMPEG}/job/{job_id}/cancel", headers=user["headers"])
    assert r.json()["status"] == "cancelled"
