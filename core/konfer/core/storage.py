"""Object storage for avatars, media, recordings and stream segments.

Two backends behind one interface: MinIO/S3 through the ``minio`` SDK (production, and
the tests against a real MinIO server) and a folder on local disk (``konfer up``). The SDK
is blocking, so its calls run in worker threads; bodies move in chunks so a large file is
never held in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import threading
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol

import urllib3
from minio import Minio
from minio.datatypes import Part
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from konfer.core.errors import ServiceUnavailable
from konfer.core.settings import Settings

CHUNK_SIZE = 1024 * 1024
_MULTIPART_PART_SIZE = 16 * 1024 * 1024
# Streams of unknown length: parts uploading at once while the caller fills the next.
STREAM_PART_SIZE = 8 * 1024 * 1024
STREAM_PARTS_IN_FLIGHT = 2
# Reads: chunks fetched ahead of the consumer, so the server and the consumer overlap.
READ_AHEAD = 2


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str


class Storage(Protocol):
    part_size: int
    """How much a streamed ``put`` takes from its body at a time; a writer feeding it
    through a pipe needs room for one such part."""

    async def ensure_ready(self) -> None: ...
    async def put(self, key: str, body: BinaryIO, length: int, content_type: str) -> ObjectInfo:
        """Store ``body`` under ``key``; ``length`` may be -1 when the size is unknown."""
        ...

    async def stat(self, key: str) -> ObjectInfo | None: ...
    def read(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]: ...
    async def delete(self, key: str) -> None: ...
    async def delete_folder(self, folder: str) -> int:
        """Delete every object whose key starts with ``folder`` (which ends with ``/``);
        how many there were."""
        ...

    async def presigned_url(
        self, key: str, expires_seconds: int, response_headers: dict[str, str]
    ) -> str | None:
        """A time-limited URL the object can be fetched from without the api, with these
        response headers (S3's ``response-content-*`` overrides); None when the backend
        has none (local disk)."""
        ...


class UnsignedPayloadMinio(Minio):
    """The MinIO SDK, sending request bodies as ``UNSIGNED-PAYLOAD``.

    Why: over plain HTTP the SDK hashes every body (SHA-256) into the request signature,
    and with TLS it computes a Content-MD5 instead; for uploads streamed through the api
    that hash was its largest CPU cost (profiled: about 40 % of the api's CPU during an
    upload). S3 and MinIO accept unsigned payloads over either transport; the headers,
    the path and the payload's declared length stay signed, and TLS is what protects a
    body in transit. ``s3_sign_payload`` restores the SDK's behaviour.
    """

    def _build_headers(
        self,
        host: str,
        headers: dict[str, Any] | None = None,
        body: bytes | None = None,
        creds: Any = None,
    ) -> tuple[dict[str, Any], Any]:
        built, date = super()._build_headers(host, headers, None, creds)  # hashes nothing
        if body:
            built["Content-Length"] = str(len(body))
        if creds:
            built["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
        return built, date


def _check_key(key: str) -> PurePosixPath:
    path = PurePosixPath(key)
    if not key or path.is_absolute() or ".." in path.parts or key.endswith("/"):
        raise ValueError(f"invalid object key {key!r}")
    return path


def _check_folder(folder: str) -> PurePosixPath:
    """A folder is a key prefix ending in ``/``, so ``streams/a/`` never matches ``streams/ab``."""
    if not folder.endswith("/"):
        raise ValueError(f"invalid folder {folder!r}: it must end with '/'")
    return _check_key(folder.rstrip("/"))


def live_stream_folder(stream_id: str) -> str:
    """Where a live stream's playlist, manifest and segments are stored (streamer and api)."""
    return f"streams/{stream_id}/"


class LocalStorage:
    """Objects as files under one folder, with a small JSON sidecar for the content type."""

    part_size = CHUNK_SIZE

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

    async def delete_folder(self, folder: str) -> int:
        path = self.root.joinpath(*_check_folder(folder).parts)

        def remove() -> int:
            if not path.is_dir():
                return 0
            count = sum(1 for p in path.rglob("*") if p.is_file() and p.suffix != ".meta")
            shutil.rmtree(path, ignore_errors=True)
            return count

        return await asyncio.to_thread(remove)

    async def presigned_url(
        self, key: str, expires_seconds: int, response_headers: dict[str, str]
    ) -> str | None:
        return None


class S3Storage:
    """MinIO or any S3 endpoint, one bucket."""

    def __init__(self, client: Minio, bucket: str, part_size: int = STREAM_PART_SIZE) -> None:
        self.client = client
        self.bucket = bucket
        self.part_size = part_size

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a blocking SDK call in a thread; an unreachable server becomes a 503."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ServiceUnavailable(f"object storage is unreachable: {exc}") from exc

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        assert settings.s3_endpoint is not None
        client = (Minio if settings.s3_sign_payload else UnsignedPayloadMinio)(
            settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=settings.s3_secure,
            region=settings.s3_region,
        )
        return cls(client, settings.s3_bucket, settings.s3_stream_part_mb * 1024 * 1024)

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
        """Upload ``body``; ``length=-1`` streams a body of unknown size in parts
        (``_put_stream``). A failed multipart upload is aborted, so nothing is left behind."""
        _check_key(key)
        if length < 0:
            await asyncio.to_thread(self._put_stream, key, body, content_type)
        else:
            await asyncio.to_thread(
                self.client.put_object,
                self.bucket,
                key,
                body,
                length,
                content_type=content_type,
                part_size=_MULTIPART_PART_SIZE,
            )
        if length < 0:
            info = await self.stat(key)
            if info is None:  # pragma: no cover - the server just acknowledged it
                raise ServiceUnavailable(f"object {key} vanished after upload")
            return info
        return ObjectInfo(key=key, size=length, content_type=content_type)

    def _put_stream(self, key: str, body: BinaryIO, content_type: str) -> None:
        """A body of unknown length as a multipart upload of ``part_size`` parts.

        ``STREAM_PARTS_IN_FLIGHT`` parts upload at once (so MinIO writing one part overlaps
        sending the next) while the caller fills the next one (an upload's pipe): memory
        stays at three parts whatever the size. The SDK's ``put_object`` would make two
        more copies of every byte (it reads a byte past each part to find the end), CPU
        the api needs for receiving; so this drives the SDK's own multipart calls
        (``_create_multipart_upload`` and friends, stable across minio 7.x, which
        ``pyproject.toml`` pins) and passes each part on uncopied.
        """
        client, bucket = self.client, self.bucket
        part = _read_part(body, self.part_size)
        if len(part) < self.part_size:  # fits one request
            client.put_object(bucket, key, io.BytesIO(part), len(part), content_type=content_type)
            return
        upload_id = client._create_multipart_upload(bucket, key, {"Content-Type": content_type})
        try:
            parts: list[Part] = []
            pending: deque[tuple[int, Future[str]]] = deque()
            with ThreadPoolExecutor(STREAM_PARTS_IN_FLIGHT, "konfer-s3-part") as pool:
                number = 0
                while part:
                    number += 1
                    pending.append(
                        (
                            number,
                            pool.submit(
                                client._upload_part, bucket, key, part, None, upload_id, number
                            ),
                        )
                    )
                    del part  # the pool holds it until it is sent
                    while len(pending) >= STREAM_PARTS_IN_FLIGHT:
                        done, future = pending.popleft()
                        parts.append(Part(done, future.result()))
                    part = _read_part(body, self.part_size)
                while pending:
                    done, future = pending.popleft()
                    parts.append(Part(done, future.result()))
            client._complete_multipart_upload(bucket, key, upload_id, parts)
        except BaseException:
            with contextlib.suppress(Exception):  # the first error is the one to report
                client._abort_multipart_upload(bucket, key, upload_id)
            raise

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
        """The object's bytes in chunks of up to ``CHUNK_SIZE``.

        One thread per read pulls from the server up to ``READ_AHEAD`` chunks ahead of the
        consumer, so fetching the next chunk overlaps sending the last one (a thread hop
        per chunk, fetching only when asked, left MinIO and the client taking turns).
        Memory stays at ``READ_AHEAD`` chunks; a consumer that stops early stops the thread.
        """
        _check_key(key)
        resp = await self._run(
            self.client.get_object, self.bucket, key, offset=offset, length=length or 0
        )
        loop = asyncio.get_running_loop()
        ready: deque[bytes | BaseException] = deque()
        arrived = asyncio.Event()
        room = threading.Semaphore(READ_AHEAD)
        stop = threading.Event()

        def deliver(item: bytes | BaseException) -> None:
            ready.append(item)
            arrived.set()

        def pull() -> None:
            try:
                while True:
                    room.acquire()
                    if stop.is_set():
                        return
                    chunk = resp.read(CHUNK_SIZE)
                    loop.call_soon_threadsafe(deliver, chunk)
                    if not chunk:
                        return
            except BaseException as exc:  # handed to the consumer
                if not stop.is_set():
                    loop.call_soon_threadsafe(deliver, exc)
            finally:
                resp.close()
                resp.release_conn()

        puller = threading.Thread(target=pull, name="konfer-storage-read", daemon=True)
        puller.start()
        try:
            while True:
                while not ready:
                    arrived.clear()
                    await arrived.wait()
                item = ready.popleft()
                room.release()
                if isinstance(item, BaseException):
                    raise item
                if not item:
                    break
                yield item
        finally:
            stop.set()
            room.release()  # wakes the thread if it waits for room

    async def delete(self, key: str) -> None:
        _check_key(key)
        await self._run(self.client.remove_object, self.bucket, key)

    async def delete_folder(self, folder: str) -> int:
        _check_folder(folder)

        def remove() -> int:
            listed = self.client.list_objects(self.bucket, prefix=folder, recursive=True)
            names = [DeleteObject(str(o.object_name)) for o in listed]
            # remove_objects is lazy: the deletes happen while its errors are read.
            errors = list(self.client.remove_objects(self.bucket, names))
            if errors:
                raise ServiceUnavailable(f"Storage kept {len(errors)} objects of {folder}")
            return len(names)

        return int(await self._run(remove))

    async def presigned_url(
        self, key: str, expires_seconds: int, response_headers: dict[str, str]
    ) -> str | None:
        _check_key(key)
        url: str = await self._run(
            self.client.presigned_get_object,
            self.bucket,
            key,
            expires=timedelta(seconds=expires_seconds),
            response_headers=response_headers,
        )
        return url


def _read_part(body: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes, fewer only at the end; one read when the body has them."""
    chunks: list[bytes] = []
    got = 0
    while got < size:
        chunk = body.read(size - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def storage_from_settings(settings: Settings) -> Storage:
    if settings.s3_endpoint:
        return S3Storage.from_settings(settings)
    return LocalStorage(settings.data_dir / "storage")
