"""Object storage for avatars, media, recordings and stream segments.

Two backends behind one interface: MinIO/S3 through the ``minio`` SDK (production, and
the tests against a real MinIO server) and a folder on local disk (``konfer up``). The SDK
is blocking, so its calls run in worker threads; bodies move in chunks so a large file is
never held in memory.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol

import urllib3
from minio import Minio
from minio.error import S3Error

from konfer.core.errors import ServiceUnavailable
from konfer.core.settings import Settings

CHUNK_SIZE = 1024 * 1024
_MULTIPART_PART_SIZE = 16 * 1024 * 1024
# Streams of unknown length: smaller parts bound the SDK's buffers (3 uploading + 1 filling).
STREAM_PART_SIZE = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str


class Storage(Protocol):
    async def ensure_ready(self) -> None: ...
    async def put(self, key: str, body: BinaryIO, length: int, content_type: str) -> ObjectInfo:
        """Store ``body`` under ``key``; ``length`` may be -1 when the size is unknown."""
        ...

    async def stat(self, key: str) -> ObjectInfo | None: ...
    def read(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]: ...
    async def delete(self, key: str) -> None: ...


def _check_key(key: str) -> PurePosixPath:
    path = PurePosixPath(key)
    if not key or path.is_absolute() or ".." in path.parts or key.endswith("/"):
        raise ValueError(f"invalid object key {key!r}")
    return path


class LocalStorage:
    """Objects as files under one folder, with a small JSON sidecar for the content type."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_check_key(key).parts)

    async def ensure_ready(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    async def put(self, key: str, body: BinaryIO, length: int, content_type: str) -> ObjectInfo:
        path = self._path(key)

        def write() -> int:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".part")
            try:
                with tmp.open("wb") as out:
                    shutil.copyfileobj(body, out, CHUNK_SIZE)
                    size = out.tell()
            except BaseException:
                tmp.unlink(missing_ok=True)  # a failed write leaves nothing behind
                raise
            path.with_name(path.name + ".meta").write_text(
                json.dumps({"content_type": content_type})
            )
            os.replace(tmp, path)
            return size

        size = await asyncio.to_thread(write)
        return ObjectInfo(key=key, size=size, content_type=content_type)

    async def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)

        def read_meta() -> ObjectInfo | None:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                return None
            try:
                meta = json.loads(path.with_name(path.name + ".meta").read_text())
                content_type = str(meta["content_type"])
            except (FileNotFoundError, ValueError, KeyError):
                content_type = "application/octet-stream"
            return ObjectInfo(key=key, size=size, content_type=content_type)

        return await asyncio.to_thread(read_meta)

    async def read(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        fh = await asyncio.to_thread(self._path(key).open, "rb")
        try:
            await asyncio.to_thread(fh.seek, offset)
            remaining = length
            while remaining is None or remaining > 0:
                n = CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining)
                chunk = await asyncio.to_thread(fh.read, n)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(fh.close)

    async def delete(self, key: str) -> None:
        path = self._path(key)

        def remove() -> None:
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".meta").unlink(missing_ok=True)

        await asyncio.to_thread(remove)


class S3Storage:
    """MinIO or any S3 endpoint, one bucket."""

    def __init__(self, client: Minio, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a blocking SDK call in a thread; an unreachable server becomes a 503."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ServiceUnavailable(f"object storage is unreachable: {exc}") from exc

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        assert settings.s3_endpoint is not None
        client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=settings.s3_secure,
            region=settings.s3_region,
        )
        return cls(client, settings.s3_bucket)

    async def ensure_ready(self) -> None:
        def make_bucket() -> None:
            if not self.client.bucket_exists(self.bucket):
                try:
                    self.client.make_bucket(self.bucket)
                except S3Error as exc:  # another replica won the race
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

        await self._run(make_bucket)

    async def put(self, key: str, body: BinaryIO, length: int, content_type: str) -> ObjectInfo:
        """Upload ``body``; ``length=-1`` streams a body of unknown size in parts. A failed
        multipart upload is aborted by the SDK, so nothing is left behind."""
        _check_key(key)
        result = await asyncio.to_thread(
            self.client.put_object,
            self.bucket,
            key,
            body,
            length,
            content_type=content_type,
            part_size=STREAM_PART_SIZE if length < 0 else _MULTIPART_PART_SIZE,
        )
        if length < 0:
            info = await self.stat(key)
            if info is None:  # pragma: no cover - the server just acknowledged it
                raise ServiceUnavailable(f"object {key} vanished after upload ({result.etag})")
            return info
        return ObjectInfo(key=key, size=length, content_type=content_type)

    async def stat(self, key: str) -> ObjectInfo | None:
        _check_key(key)
        try:
            st = await self._run(self.client.stat_object, self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return None
            raise
        return ObjectInfo(
            key=key,
            size=int(st.size or 0),
            content_type=st.content_type or "application/octet-stream",
        )

    async def read(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        _check_key(key)
        resp = await self._run(
            self.client.get_object, self.bucket, key, offset=offset, length=length or 0
        )
        try:
            while True:
                chunk = await asyncio.to_thread(resp.read, CHUNK_SIZE)
                if not chunk:
                    break
                yield chunk
        finally:
            resp.close()
            resp.release_conn()

    async def delete(self, key: str) -> None:
        _check_key(key)
        await self._run(self.client.remove_object, self.bucket, key)


def storage_from_settings(settings: Settings) -> Storage:
    if settings.s3_endpoint:
        return S3Storage.from_settings(settings)
    return LocalStorage(settings.data_dir / "storage")
