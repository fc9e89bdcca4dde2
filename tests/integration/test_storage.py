"""The storage interface against a real MinIO server and against local disk."""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import pytest

from konfer.core.settings import Settings
from konfer.core.storage import LocalStorage, S3Storage, Storage
from tests.conftest import service_env


def minio_settings(**extra: object) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        s3_endpoint=service_env("KONFER_TEST_S3_ENDPOINT"),
        s3_access_key=service_env("KONFER_TEST_S3_ACCESS_KEY"),
        s3_secret_key=service_env("KONFER_TEST_S3_SECRET_KEY"),
        s3_bucket=f"store-{uuid.uuid4().hex[:8]}",
        **extra,
    )


@pytest.fixture(params=["minio", "minio-signed-payload", "local"])
async def storage(request: pytest.FixtureRequest, tmp_path: object) -> Storage:
    if request.param.startswith("minio"):
        signed = request.param == "minio-signed-payload"
        store: Storage = S3Storage.from_settings(minio_settings(s3_sign_payload=signed))
    else:
        store = LocalStorage(Path(str(tmp_path)) / "objects")
    await store.ensure_ready()
    await store.ensure_ready()  # idempotent: a second replica starting must not fail
    return store


async def read_all(store: Storage, key: str, offset: int = 0, length: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.read(key, offset, length)])


async def test_round_trip_stat_and_delete(storage: Storage) -> None:
    data = os.urandom(700_000)  # spans several read chunks
    info = await storage.put("a/b/object.bin", io.BytesIO(data), len(data), "video/mp4")
    assert info.size == len(data)
    stat = await storage.stat("a/b/object.bin")
    assert stat is not None
    assert (stat.size, stat.content_type) == (len(data), "video/mp4")
    assert await read_all(storage, "a/b/object.bin") == data
    assert await read_all(storage, "a/b/object.bin", 1000, 5000) == data[1000:6000]
    await storage.delete("a/b/object.bin")
    assert await storage.stat("a/b/object.bin") is None
    await storage.delete("a/b/object.bin")  # deleting twice is not an error


@pytest.mark.parametrize("signed", [False, True])
async def test_bodies_are_sent_unsigned_unless_payload_signing_is_asked_for(signed: bool) -> None:
    store = S3Storage.from_settings(minio_settings(s3_sign_payload=signed))
    await store.ensure_ready()
    trace = io.StringIO()
    store.client.trace_on(trace)
    data = os.urandom(1000)
    await store.put("signed/or-not.bin", io.BytesIO(data), len(data), "application/octet-stream")
    store.client.trace_off()
    sent = [
        line.split(":", 1)[1].strip()
        for line in trace.getvalue().splitlines()
        if line.lower().startswith("x-amz-content-sha256:")
    ]
    assert sent, trace.getvalue()
    if signed:
        assert all(len(v) == 64 and v != "UNSIGNED-PAYLOAD" for v in sent), sent
    else:
        assert set(sent) == {"UNSIGNED-PAYLOAD"}
    assert await read_all(store, "signed/or-not.bin") == data  # MinIO took it either way


async def test_missing_object_stats_as_none(storage: Storage) -> None:
    assert await storage.stat("never/written") is None


async def test_a_folder_is_deleted_with_everything_in_it_and_nothing_beside_it(
    storage: Storage,
) -> None:
    for key in ("streams/s1/playlist.m3u8", "streams/s1/seg-1.ts", "streams/s1/deep/seg-2.ts"):
        await storage.put(key, io.BytesIO(b"x"), 1, "application/octet-stream")
    await storage.put("streams/s10/seg-1.ts", io.BytesIO(b"y"), 1, "video/mp2t")
    assert await storage.delete_folder("streams/s1/") == 3
    assert await storage.stat("streams/s1/seg-1.ts") is None
    assert await storage.stat("streams/s1/deep/seg-2.ts") is None
    assert await storage.stat("streams/s10/seg-1.ts") is not None  # a prefix, not a folder
    assert await storage.delete_folder("streams/s1/") == 0  # gone already: not an error
    for bad in ("streams/s1", "../streams/", "/"):
        with pytest.raises(ValueError, match="invalid"):
            await storage.delete_folder(bad)


@pytest.mark.parametrize("key", ["../escape", "/abs/path", "", "dir/"])
async def test_unsafe_keys_are_refused(storage: Storage, key: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        await storage.put(key, io.BytesIO(b"x"), 1, "text/plain")


async def test_unreachable_minio_is_service_unavailable() -> None:
    import urllib3
    from minio import Minio

    from konfer.core.errors import ServiceUnavailable

    # Port 9 (discard) is closed on loopback; no retries so the test fails fast.
    client = Minio(
        "127.0.0.1:9",
        access_key="k",
        secret_key="s",
        secure=False,
        http_client=urllib3.PoolManager(retries=False),
    )
    store = S3Storage(client, "bucket")
    with pytest.raises(ServiceUnavailable):
        await store.ensure_ready()
    with pytest.raises(ServiceUnavailable):
        await store.stat("some/key")
