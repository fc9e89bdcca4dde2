"""How media bytes move: the api without PyAV, probing in a child process, streamed puts
in small parts, reads that run ahead and stop with their reader, and presigned downloads.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import threading
import uuid
from typing import Any, BinaryIO, cast

import httpx
import pytest

from konfer.api.media import probe
from konfer.core.settings import Settings
from konfer.core.storage import CHUNK_SIZE, S3Storage
from tests import media_samples as samples
from tests.conftest import SettingsFactory, service_env
from tests.integration.media_helpers import MEDIA, stored_keys, upload, uploaded

MiB = 1024 * 1024


@pytest.fixture
async def minio_store() -> S3Storage:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        s3_endpoint=service_env("KONFER_TEST_S3_ENDPOINT"),
        s3_access_key=service_env("KONFER_TEST_S3_ACCESS_KEY"),
        s3_secret_key=service_env("KONFER_TEST_S3_SECRET_KEY"),
        s3_bucket=f"stream-{uuid.uuid4().hex[:8]}",
        s3_stream_part_mb=5,
    )
    store = S3Storage.from_settings(settings)
    await store.ensure_ready()
    return store


def _reader_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "konfer-storage-read")


def test_the_api_loads_neither_pyav_nor_pillow_nor_numpy() -> None:
    code = (
        "import sys, konfer.api.app\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'av', 'PIL', 'numpy'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("size", "parts"),
    [(12 * MiB + 123, 3), (10 * MiB, 2), (5 * MiB - 1, 0), (0, 0)],
)
async def test_streamed_put_of_unknown_length_goes_in_configured_parts(
    minio_store: S3Storage, size: int, parts: int
) -> None:
    assert minio_store.part_size == 5 * MiB
    data = os.urandom(size)
    info = await minio_store.put("s/obj.bin", io.BytesIO(data), -1, "audio/wav")
    assert (info.size, info.content_type) == (size, "audio/wav")
    stat = minio_store.client.stat_object(minio_store.bucket, "s/obj.bin")
    assert stat.etag is not None
    # A multipart upload's ETag ends in its part count; a single PUT has none.
    assert stat.etag.endswith(f"-{parts}") if parts else "-" not in stat.etag
    got = b"".join([c async for c in minio_store.read("s/obj.bin")])
    assert got == data


class _Failing(io.RawIOBase):
    """A body that breaks after some megabytes, like a client that goes away."""

    def __init__(self, good: int) -> None:
        super().__init__()
        self.left = good

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self.left <= 0:
            raise OSError("client went away")
        n = min(self.left, MiB if size is None or size < 0 else size)
        self.left -= n
        return os.urandom(n)


async def test_a_broken_stream_leaves_no_object_and_no_open_upload(
    minio_store: S3Storage,
) -> None:
    with pytest.raises(OSError, match="client went away"):
        await minio_store.put("s/broken.bin", cast(BinaryIO, _Failing(11 * MiB)), -1, "video/mp4")
    assert await minio_store.stat("s/broken.bin") is None
    uploads = minio_store.client._list_multipart_uploads(minio_store.bucket, prefix="s/")
    assert list(uploads.uploads) == []


async def test_a_read_stops_its_thread_when_the_reader_stops_early(
    minio_store: S3Storage,
) -> None:
    data = os.urandom(8 * CHUNK_SIZE)
    await minio_store.put("s/long.bin", io.BytesIO(data), len(data), "application/octet-stream")
    before = _reader_threads()
    stream = minio_store.read("s/long.bin")
    first = await anext(stream)
    assert first == data[: len(first)]
    await stream.aclose()  # a client that went away
    for _ in range(100):
        if _reader_threads() == before:
            break
        await asyncio.sleep(0.05)
    assert _reader_threads() == before
    # The connection went back to the pool in a usable state.
    assert b"".join([c async for c in minio_store.read("s/long.bin", 5, 10)]) == data[5:15]


async def test_a_probe_refusal_from_the_child_process_leaves_nothing_behind(
    make_settings: SettingsFactory, open_client: Any
) -> None:
    async with open_client(make_settings("postgres")) as client:
        user = await client.signup()
        fake = samples.media("mp4", seconds=0.5)[:4096] + os.urandom(20_000)  # header, no moov
        r = await upload(client, user, fake, "broken.mp4")
        assert r.status_code == 415, r.text
        assert r.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
        assert await stored_keys(client) == set()
        body = await uploaded(client, user, samples.media("webm", seconds=1.0), "ok.webm")
        assert body["resolution"] == "160x120"
        assert abs(body["duration"] - 1.0) < 0.2


async def test_downloads_redirect_to_a_presigned_url_when_configured(
    make_settings: SettingsFactory, open_client: Any
) -> None:
    settings = make_settings("postgres", media_download_redirect=True)
    async with open_client(settings) as client:
        user = await client.signup()
        data = samples.noise_wav(200_000)
        media_id = (await uploaded(client, user, data, "talk.wav"))["media_id"]
        url = f"{MEDIA}/download/{media_id}"
        r = await client.get(url, headers=user["headers"])
        assert r.status_code == 307
        location = r.headers["location"]
        assert location.startswith(f"http://{settings.s3_endpoint}/")
        async with httpx.AsyncClient() as direct:
            whole = await direct.get(location)
            assert whole.status_code == 200
            assert whole.content == data
            assert whole.headers["content-type"] == "audio/wav"
            assert whole.headers["content-disposition"].startswith('attachment; filename="talk')
            part = await direct.get(location, headers={"Range": "bytes=100-199"})
            assert part.status_code == 206
            assert part.content == data[100:200]
        bad = await client.get(url, headers={**user["headers"], "Range": "bytes=999999-"})
        assert bad.status_code == 416  # checked before redirecting


async def test_probe_children_are_reused_and_stopped_with_the_app(
    make_settings: SettingsFactory, open_client: Any
) -> None:
    loop = asyncio.get_running_loop()
    await probe.close_idle()  # children other tests left waiting
    async with open_client(make_settings("postgres")) as client:
        user = await client.signup()
        await uploaded(client, user, samples.media("mp3", seconds=0.5), "a.mp3")
        waiting = list(probe._idle.get(loop, []))
        assert len(waiting) == 1
        assert waiting[0].alive
        pid = waiting[0].proc.pid
        await uploaded(client, user, samples.image("png"), "b.png")
        after = probe._idle.get(loop, [])
        assert [c.proc.pid for c in after] == [pid]  # the same child answered again
    assert probe._idle.get(loop, []) == []
    assert waiting[0].proc.returncode is not None  # stopped at shutdown
