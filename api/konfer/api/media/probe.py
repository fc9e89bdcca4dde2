"""Checking an upload's content in a child process, so the api never loads PyAV or Pillow.

An upload's response carries what a probe found (duration, resolution, codecs), so the
probe runs before the upload is answered. Doing it in the api process would map PyAV's
FFmpeg libraries, Pillow and NumPy into every api replica for good (some 40 MB resident)
and let a file that crashes a demuxer take the api down with it. Instead an upload that
needs a probe takes a child (``python -m konfer.api.media.probe``) as soon as its first
bytes are sniffed: a waiting one, or a new one that imports PyAV while the body is still
streaming to storage. The child reads the stored object through its parent, one ranged
read at a time, over its stdin/stdout (it needs no storage credentials and holds at most
one read block), and afterwards waits for the next upload; up to ``IDLE_CHILDREN`` wait.

The protocol, one line per message, child to parent: ``ready`` once started; then per
request any number of ``read OFFSET LENGTH`` (answered by a decimal length line and that
many bytes) and finally ``done JSON`` (an ``Inspected``) or ``refused JSON`` (message and
details of a 415). Parent to child: a request is one JSON line naming the object's size
and its sniffed container and type. EOF on stdin ends the child.

``inspect_media`` and ``Inspected`` (what a probe result means for the library) live here
because the child needs them without the api's database layer; ``services.media``
re-exports them for the worker and the routers. ``ProbeProcess`` is used by
``services.media.upload``; ``close_idle`` by the app's shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import sys
import weakref
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

from konfer.api.media.formats import (
    AUDIO_ONLY_MIME,
    DEMUXERS,
    SUPPORTED_TEXT,
    VIDEO_CONTAINERS,
    Sniffed,
    mime_for,
)
from konfer.api.media.plans import MediaError, MediaInfo
from konfer.core.errors import ServiceUnavailable, UnsupportedMediaType

if TYPE_CHECKING:  # the child starts faster without the storage SDK
    from konfer.core.storage import Storage

log = logging.getLogger(__name__)

READ_BLOCK = 1024 * 1024
MAX_READ = 8 * 1024 * 1024  # the most the parent sends for one request
PROBE_SECONDS = 120  # a file that keeps a demuxer busy longer is refused
IDLE_CHILDREN = 2  # children kept for the next uploads (about 50 MB resident each)
_PIL_FORMATS = {"jpg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP", "bmp": "BMP"}


@dataclass(slots=True)
class Inspected:
    file_type: str
    container: str
    mime_type: str
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    bitrate: int | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    frame_rate: float | None = None
    sample_rate: int | None = None
    channels: int | None = None


def needs_child(sniffed: Sniffed) -> bool:
    """Audio, video and images are read by PyAV/Pillow; documents are checked in place."""
    return sniffed.needs_probe or sniffed.file_type == "image"


def inspect_media(info: MediaInfo, container: str) -> Inspected:
    """Type, MIME and stream facts from a probe of a file whose container is known."""
    accepted = DEMUXERS.get(container, ())
    if not any(name in info.demuxer.split(",") for name in accepted):
        raise UnsupportedMediaType(
            f"Unsupported file format. Supported formats: {SUPPORTED_TEXT}",
            details={"file": f"content does not parse as {container}"},
        )
    if info.video is not None and container in VIDEO_CONTAINERS:
        file_type = "video"
    elif info.audio is not None:
        file_type = "audio"
        if container in AUDIO_ONLY_MIME:
            container = AUDIO_ONLY_MIME[container][0]
    else:
        raise UnsupportedMediaType(
            f"Unsupported file format. Supported formats: {SUPPORTED_TEXT}",
            details={"file": f"a {container} file needs an audio stream"},
        )
    result = Inspected(
        file_type=file_type,
        container=container,
        mime_type=mime_for(container, file_type),
        duration=info.duration,
        bitrate=info.bitrate,
    )
    if info.video is not None and file_type == "video":
        result.width, result.height = info.video.width, info.video.height
        result.video_codec, result.frame_rate = info.video.codec, info.video.frame_rate
    if info.audio is not None:
        result.audio_codec = info.audio.codec
        result.sample_rate, result.channels = info.audio.sample_rate, info.audio.channels
    return result


def check_document(head_of_tail: bytes, sniffed: Sniffed) -> Inspected:
    """A PDF must end with its trailer; text was checked while it streamed."""
    if sniffed.container == "pdf" and b"%%EOF" not in head_of_tail:
        raise UnsupportedMediaType(
            "The PDF is damaged or truncated", details={"file": "no %%EOF trailer"}
        )
    return Inspected("document", sniffed.container, mime_for(sniffed.container, "document"))


# --- parent side -----------------------------------------------------------------------


class _Child:
    """One probe child process and whether it said ``ready``."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.ready = False

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def stop(self) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()


# Children that answered a probe wait here for the next upload, per event loop.
_idle: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[_Child]] = (
    weakref.WeakKeyDictionary()
)


async def _new_child() -> _Child:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "konfer.api.media.probe",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    return _Child(proc)


async def _take_child() -> _Child:
    idle = _idle.get(asyncio.get_running_loop(), [])
    while idle:
        child = idle.pop()
        if child.alive:
            return child
        await child.stop()
    return await _new_child()


async def close_idle() -> None:
    """Stop the waiting children of this event loop (the api's shutdown)."""
    idle = _idle.pop(asyncio.get_running_loop(), [])
    for child in idle:
        await child.stop()


class ProbeProcess:
    """A probe child for one upload: ``spawn`` early, ``inspect`` once stored, ``close``.

    A child that answered goes back to a small idle set for the next upload, so most
    uploads pay neither the child's start nor its imports; one that failed, timed out or
    crashed is killed instead.
    """

    def __init__(self) -> None:
        self._taking: asyncio.Task[_Child] | None = None
        self._reusable = False

    def spawn(self) -> None:
        """Get a child now (a waiting one, or a new one importing while the body arrives)."""
        if self._taking is None:
            self._taking = asyncio.ensure_future(_take_child())

    async def inspect(self, storage: Storage, key: str, size: int, sniffed: Sniffed) -> Inspected:
        self.spawn()
        assert self._taking is not None
        try:
            child = await self._taking
        except OSError as exc:
            raise ServiceUnavailable(f"media probing is unavailable: {exc}") from exc
        try:
            async with asyncio.timeout(PROBE_SECONDS):
                facts = await self._converse(child, storage, key, size, sniffed)
        except TimeoutError:
            raise UnsupportedMediaType(
                "The file is damaged or not readable media",
                details={"file": f"reading it took over {PROBE_SECONDS} s"},
            ) from None
        return facts

    async def _converse(
        self,
        child: _Child,
        storage: Storage,
        key: str,
        size: int,
        sniffed: Sniffed,
    ) -> Inspected:
        proc = child.proc
        assert proc.stdin is not None
        assert proc.stdout is not None
        request = {"size": size, "container": sniffed.container, "file_type": sniffed.file_type}
        try:
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            while True:
                line = await proc.stdout.readline()
                verb, _, rest = line.strip().partition(b" ")
                if verb == b"ready":
                    child.ready = True
                elif verb == b"read":
                    offset, length = (int(v) for v in rest.split())
                    length = max(0, min(length, MAX_READ, size - offset))
                    data = b"".join([c async for c in storage.read(key, offset, length)])
                    proc.stdin.write(b"%d\n" % len(data))
                    proc.stdin.write(data)
                    await proc.stdin.drain()
                elif verb == b"done":
                    self._reusable = True  # it answered in full and waits for the next
                    return Inspected(**json.loads(rest))
                elif verb == b"refused":
                    self._reusable = True
                    answer = json.loads(rest)
                    raise UnsupportedMediaType(answer["message"], details=answer["details"])
                else:
                    break
        except ConnectionError:  # the child went away while we wrote to it
            pass
        code = await proc.wait()
        if not child.ready:
            raise ServiceUnavailable(f"media probing is unavailable (exit status {code})")
        log.warning("media probe of %s stopped with exit status %s", key, code)
        raise UnsupportedMediaType(
            "The file is damaged or not readable media",
            details={"file": f"reading it stopped the probe (exit status {code})"},
        )

    async def close(self) -> None:
        """Hand a healthy child back for the next upload, or stop it."""
        if self._taking is None:
            return
        try:
            child = await self._taking
        except OSError:
            return
        idle = _idle.setdefault(asyncio.get_running_loop(), [])
        if self._reusable and child.alive and len(idle) < IDLE_CHILDREN:
            idle.append(child)
        else:
            await child.stop()


async def inspect_document(storage: Storage, key: str, size: int, sniffed: Sniffed) -> Inspected:
    tail = b""
    if sniffed.container == "pdf":
        start = max(0, size - 2048)
        tail = b"".join([c async for c in storage.read(key, start, size - start)])
    return check_document(tail, sniffed)


# --- child side ------------------------------------------------------------------------


class _ParentFile(io.RawIOBase):
    """The stored object, seekable, read through the parent in blocks of ``READ_BLOCK``."""

    def __init__(self, inp: BinaryIO, out: BinaryIO, size: int) -> None:
        super().__init__()
        self._in, self._out, self._size = inp, out, size
        self._pos = 0
        self._cache_start = 0
        self._cache = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _fetch(self, offset: int, length: int) -> bytes:
        self._out.write(b"read %d %d\n" % (offset, length))
        self._out.flush()
        count = int(self._in.readline())
        data = self._in.read(count)
        if len(data) != count:
            raise OSError("the parent closed the stream")
        return data

    def readinto(self, buffer: Any) -> int:
        if self._pos >= self._size:
            return 0
        want = min(len(buffer), self._size - self._pos)
        start = self._pos - self._cache_start
        if not (start >= 0 and start + want <= len(self._cache)):
            length = min(max(want, READ_BLOCK), self._size - self._pos)
            self._cache = self._fetch(self._pos, length)
            self._cache_start = self._pos
            start = 0
            want = min(want, len(self._cache))
        buffer[:want] = self._cache[start : start + want]
        self._pos += want
        return want


def _check(reader: _ParentFile, sniffed: Sniffed) -> Inspected:
    from konfer.api.media import ops

    if sniffed.needs_probe:
        try:
            info = ops.probe(reader)
        except MediaError as exc:
            raise UnsupportedMediaType(
                "The file is damaged or not readable media", details={"file": str(exc)[:300]}
            ) from exc
        return inspect_media(info, sniffed.container)
    try:
        fmt, width, height = ops.probe_image(cast(IO[bytes], reader))
    except MediaError as exc:
        raise UnsupportedMediaType(
            "The file is damaged or not a readable image", details={"file": str(exc)[:300]}
        ) from exc
    if fmt != _PIL_FORMATS[sniffed.container]:
        raise UnsupportedMediaType(details={"file": "image format mismatch"})
    mime = mime_for(sniffed.container, "image")
    return Inspected("image", sniffed.container, mime, width=width, height=height)


def main() -> None:
    """The child: import PyAV and Pillow, say ready, then answer requests until EOF."""
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # anything a library prints must not enter the protocol
    inp = sys.stdin.buffer
    from konfer.api.media import ops  # noqa: F401  - the slow part, done while waiting

    out.write(b"ready\n")
    out.flush()
    while line := inp.readline():
        request = json.loads(line)
        sniffed = Sniffed(request["container"], request["file_type"])
        try:
            facts = _check(_ParentFile(inp, out, int(request["size"])), sniffed)
        except UnsupportedMediaType as exc:
            answer = {"message": exc.message, "details": exc.details}
            out.write(b"refused " + json.dumps(answer).encode() + b"\n")
        else:
            out.write(b"done " + json.dumps(dataclasses.asdict(facts)).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
