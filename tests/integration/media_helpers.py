"""Helpers shared by the media and ffmpeg-job tests: uploads, job polling, an in-process
worker, and direct looks at the database and the object store."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy import func, select

from konfer.api.db.models import Media, MediaJob
from konfer.api.media import ops
from konfer.api.media.worker import Worker
from konfer.core.storage import LocalStorage, S3Storage
from tests.conftest import ApiClient

MEDIA = "/api/v1/media"
FFMPEG = "/api/v1/ffmpeg"
FINISHED = {"completed", "failed", "cancelled"}

MIME = {
    "mp4": "video/mp4",
    "webm": "video/webm",
    "mkv": "video/x-matroska",
    "avi": "video/x-msvideo",
    "mov": "video/quicktime",
    "flv": "video/x-flv",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "ogg": "audio/ogg",
    "flac": "audio/flac",
    "aac": "audio/aac",
    "m4a": "audio/mp4",
}


async def upload(
    client: ApiClient,
    user: dict[str, Any],
    data: bytes,
    filename: str = "clip.mp4",
    **fields: str,
) -> httpx.Response:
    return await client.post(
        f"{MEDIA}/upload",
        headers=user["headers"],
        files={"file": (filename, data, "application/octet-stream")},
        data=fields,
    )


async def uploaded(
    client: ApiClient, user: dict[str, Any], data: bytes, filename: str = "clip.mp4", **fields: str
) -> dict[str, Any]:
    r = await upload(client, user, data, filename, **fields)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def wait_job(
    client: ApiClient, user: dict[str, Any], job_id: str, within: float = 60
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        r = await client.get(f"{FFMPEG}/job/{job_id}/status", headers=user["headers"])
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["status"] in FINISHED:
            return body
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.05)


async def download(client: ApiClient, user: dict[str, Any], media_id: str) -> bytes:
    r = await client.get(f"{MEDIA}/download/{media_id}", headers=user["headers"])
    assert r.status_code == 200, r.text
    return r.content


async def probe_item(client: ApiClient, user: dict[str, Any], media_id: str) -> ops.MediaInfo:
    """The stored bytes of an item, probed with PyAV independently of the api's record."""
    data = await download(client, user, media_id)
    return await asyncio.to_thread(ops.probe, io.BytesIO(data))


@asynccontextmanager
async def running_worker(client: ApiClient, **overrides: Any) -> AsyncIterator[Worker]:
    """A worker on the app's own database and storage, polling fast, for one test."""
    state = client.app.state.konfer
    settings = state.settings.model_copy(
        update={"worker_poll_interval_seconds": 0.05, "worker_concurrency": 2, **overrides}
    )
    worker = Worker(settings, state.sessionmaker, state.storage)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await task


async def stored_keys(client: ApiClient, prefix: str = "media/") -> set[str]:
    """Every object under ``prefix``, on local disk or in MinIO (temporary files too)."""
    storage = client.app.state.konfer.storage

    def listing() -> set[str]:
        if isinstance(storage, LocalStorage):
            folder = storage.root / prefix
            if not folder.is_dir():
                return set()
            return {
                str(p.relative_to(storage.root))
                for p in folder.rglob("*")
                if p.is_file() and not p.name.endswith(".meta")
            }
        assert isinstance(storage, S3Storage)
        objects = storage.client.list_objects(storage.bucket, prefix=prefix, recursive=True)
        keys = {str(o.object_name) for o in objects}
        pending = storage.client._list_multipart_uploads(storage.bucket, prefix=prefix)
        keys |= {f"(incomplete) {u.object_name}" for u in pending.uploads}
        return keys

    return await asyncio.to_thread(listing)


async def media_rows(client: ApiClient, user_id: str) -> int:
    async with client.app.state.konfer.sessionmaker() as s:
        count = await s.execute(
            select(func.count()).select_from(Media).where(Media.owner_id == uuid.UUID(user_id))
        )
        return int(count.scalar_one())


async def job_row(client: ApiClient, job_id: str) -> MediaJob:
    async with client.app.state.konfer.sessionmaker() as s:
        job = await s.get(MediaJob, uuid.UUID(job_id))
        assert job is not None
        return job
