"""Streamed multipart uploads: request bytes go to object storage as they arrive.

Starlette's form parser spools a file part to a temporary file before the route sees it,
so a 1 GB upload would be written to local disk and then read again. Here the request
body is parsed incrementally (``python_multipart``'s push parser) and the file part's
bytes are fed through a bounded in-memory ``Pipe`` to ``Storage.put`` running in its own
thread (MinIO: a multipart upload of unknown length, two parts sent while the next
part arrives in the pipe). Memory stays at three parts (``s3_stream_part_mb`` each),
whatever the file size.

The first ``SNIFF_BYTES`` are held back until the format is known from its magic bytes,
so an unsupported file is refused before anything is stored; the size cap of the sniffed
type is enforced while streaming. On any failure the partial object is removed.

Called by ``services.media.upload``; ``run_in_thread`` is also used by the job worker
and the AI routes for blocking PyAV calls.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import io
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeVar, cast

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from konfer.api.media.formats import SNIFF_BYTES, SUPPORTED_TEXT, Sniffed, sniff
from konfer.core.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from konfer.core.storage import Storage

T = TypeVar("T")

FILE_FIELD = "file"
MAX_FIELD_BYTES = 8 * 1024
MAX_PARTS = 16


def run_in_thread(fn: Callable[[], T], name: str = "konfer-media") -> Awaitable[T]:
    """Run a blocking function in a thread of its own, not the loop's shared executor.

    Uploads hold their thread for the whole transfer and jobs for a whole operation;
    on the default executor (a handful of threads) a few of them would starve everything
    else that uses ``asyncio.to_thread``.
    """
    future: Future[T] = Future()

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting coroutine
            if not future.cancelled():
                future.set_exception(exc)
        else:
            if not future.cancelled():
                future.set_result(result)

    threading.Thread(target=target, name=name, daemon=True).start()
    return asyncio.wrap_future(future)


class Pipe(io.RawIOBase):
    """A bounded byte pipe from the event loop (``write``) to a blocking reader thread.

    ``read(n)`` waits for ``n`` bytes (or the pipe's capacity, or its end), so the MinIO
    SDK gets a whole part from one call instead of concatenating small reads. Written
    chunks are kept as they are and joined once when read (the one copy: the SDK wants
    bytes), and the reader is woken only when what it waits for is there.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, capacity: int) -> None:
        super().__init__()
        self._loop = loop
        self._capacity = capacity
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._wanted = 0  # what a waiting reader needs; 0 when none waits
        self._cond = threading.Condition()
        self._eof = False
        self._error: BaseException | None = None
        self._space = asyncio.Event()

    def readable(self) -> bool:
        return True

    async def write_async(self, data: bytes) -> None:
        while True:
            with self._cond:
                if self._error is not None:
                    raise self._error
                if self._size < self._capacity:
                    self._chunks.append(data)
                    self._size += len(data)
                    if self._wanted and self._size >= self._wanted:
                        self._cond.notify_all()
                    return
                self._space.clear()
            await self._space.wait()

    def finish(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def abort(self, error: BaseException) -> None:
        with self._cond:
            self._error = error
            self._cond.notify_all()
        self._loop.call_soon_threadsafe(self._space.set)

    def read(self, size: int | None = -1) -> bytes:
        want = self._capacity if size is None or size < 0 else size
        target = min(want, self._capacity)
        parts: list[bytes] = []
        with self._cond:
            self._wanted = target
            self._cond.wait_for(
                lambda: self._error is not None or self._eof or self._size >= target
            )
            self._wanted = 0
            if self._error is not None:
                raise OSError(f"upload aborted: {self._error}")
            got = 0
            while self._chunks and got < want:
                chunk = self._chunks.popleft()
                if got + len(chunk) > want:
                    keep = want - got
                    self._chunks.appendleft(chunk[keep:])
                    chunk = chunk[:keep]
                parts.append(chunk)
                got += len(chunk)
            self._size -= got
        self._loop.call_soon_threadsafe(self._space.set)
        return b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


# --- multipart -------------------------------------------------------------------------


@dataclass(slots=True)
class _Part:
    headers: dict[str, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None


@dataclass(slots=True)
class Received:
    """What an upload delivered: its form fields and the stored file."""

    fields: dict[str, str]
    filename: str
    key: str
    size: int
    sniffed: Sniffed
    head: bytes


def boundary_of(content_type: str | None) -> bytes:
    kind, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaType("Uploads must be sent as multipart/form-data")
    return boundary


class _Events:
    """Callbacks of the push parser, collected so an async loop can act on them."""

    def __init__(self) -> None:
        self.queue: list[tuple[str, Any]] = []
        self._field = b""
        self._value = b""
        self.part: _Part | None = None
        self.ended = False

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._begin,
            "on_part_data": self._data,
            "on_part_end": lambda: self.queue.append(("end", None)),
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": lambda: self.queue.append(("headers", self.part)),
            "on_end": self._end,
        }

    def _begin(self) -> None:
        self.part = _Part()

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self.queue and self.queue[-1][0] == "data":
            self.queue[-1] = ("data", self.queue[-1][1] + data[start:end])
        else:
            self.queue.append(("data", data[start:end]))

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        assert self.part is not None
        self.part.headers[self._field.decode("latin-1").lower()] = self._value
        self._field = self._value = b""

    def _end(self) -> None:
        self.ended = True


def _describe(part: _Part) -> None:
    disposition = part.headers.get("content-disposition", b"")
    _, options = parse_options_header(disposition)
    name = options.get(b"name")
    if name is None:
        raise ValidationFailed("Malformed multipart body", details={"body": "part without name"})
    part.name = name.decode("utf-8", "replace")
    filename = options.get(b"filename")
    if filename is not None:
        raw = filename.decode("utf-8", "replace")
        # Browsers send just the name; some tools send a path.
        part.filename = raw.replace("\\", "/").rsplit("/", 1)[-1].strip()


class _FileSink:
    """The file part on its way to storage: sniffing, size cap, text check, the put."""

    def __init__(
        self,
        storage: Storage,
        key_for: Callable[[Sniffed], tuple[str, str]],
        limit_for: Callable[[str], tuple[int, str]],
    ) -> None:
        self.storage = storage
        self.key_for = key_for
        self.limit_for = limit_for
        self.head = bytearray()
        self.size = 0
        self.sniffed: Sniffed | None = None
        self.key: str | None = None
        self.limit = 0
        self.limit_text = ""
        self.pipe: Pipe | None = None
        self.put: asyncio.Future[Any] | None = None
        self.text: codecs.BufferedIncrementalDecoder | None = None

    async def _start(self, complete: bool) -> None:
        head = bytes(self.head)
        if not head:
            raise ValidationFailed(details={"file": "file is empty"})
        found = sniff(head, complete=complete)
        if found is None:
            raise UnsupportedMediaType(
                f"Unsupported file format. Supported formats: {SUPPORTED_TEXT}",
                details={"file": "the content is not one of the supported formats"},
            )
        self.sniffed = found
        self.limit, self.limit_text = self.limit_for(found.file_type)
        if found.container == "txt":
            self.text = codecs.getincrementaldecoder("utf-8")()
        self._check(head)
        key, mime = self.key_for(found)
        self.key = key
        loop = asyncio.get_running_loop()
        pipe = Pipe(loop, self.storage.part_size)  # one part: the next fills while one is sent
        self.pipe = pipe
        storage = self.storage
        self.put = asyncio.ensure_future(
            run_in_thread(
                lambda: asyncio.run(storage.put(key, cast(BinaryIO, pipe), -1, mime)),
                "konfer-upload",
            )
        )
        await pipe.write_async(head)

    def _check(self, data: bytes) -> None:
        if self.size > self.limit:
            raise PayloadTooLarge(f"File size exceeds maximum limit of {self.limit_text}")
        if self.text is not None:
            try:
                self.text.decode(data)
            except UnicodeDecodeError as exc:
                raise UnsupportedMediaType(
                    "Text documents must be UTF-8",
                    details={"file": "the text is not valid UTF-8"},
                ) from exc

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.pipe is None:
            self.head += data
            if len(self.head) >= SNIFF_BYTES:
                await self._start(complete=False)
            return
        self._check(data)
        await self.pipe.write_async(data)

    async def finish(self) -> int:
        if self.pipe is None:
            await self._start(complete=True)
        assert self.pipe is not None
        assert self.put is not None
        if self.text is not None:
            try:
                self.text.decode(b"", final=True)
            except UnicodeDecodeError as exc:
                raise UnsupportedMediaType(
                    "Text documents must be UTF-8",
                    details={"file": "the text is not valid UTF-8"},
                ) from exc
        self.pipe.finish()
        info = await self.put
        return int(info.size)

    async def discard(self, error: BaseException) -> None:
        """Stop the transfer and remove whatever reached storage."""
        if self.pipe is not None:
            self.pipe.abort(error)
        if self.put is not None:
            with contextlib.suppress(Exception):  # it failed; that is why we are here
                await asyncio.shield(self.put)
        if self.key is not None:
            await self.storage.delete(self.key)


async def receive(
    stream: AsyncIterator[bytes],
    content_type: str | None,
    storage: Storage,
    key_for: Callable[[Sniffed], tuple[str, str]],
    limit_for: Callable[[str], tuple[int, str]],
    keepalive: Callable[[], Awaitable[None]] | None = None,
    keepalive_every: float = 30.0,
) -> Received:
    """Parse a multipart body and store its ``file`` part; everything else is a text field.

    ``key_for(sniffed)`` names the object and its content type once the format is known;
    ``limit_for(file_type)`` gives the size cap and how to say it. On any error the
    partial object is deleted before the error propagates.
    """
    boundary = boundary_of(content_type)
    events = _Events()
    parser = MultipartParser(boundary, events.callbacks())  # type: ignore[arg-type]
    fields: dict[str, str] = {}
    sink: _FileSink | None = None
    filename = ""
    current: _Part | None = None
    field_value = bytearray()
    parts = 0
    last_keepalive = time.monotonic()
    try:
        async for chunk in stream:
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise ValidationFailed(
                    "Malformed multipart body", details={"body": str(exc)}
                ) from exc
            for kind, value in events.queue:
                if kind == "headers":
                    current = value
                    assert current is not None
                    _describe(current)
                    parts += 1
                    if parts > MAX_PARTS:
                        raise ValidationFailed(details={"body": "too many form fields"})
                    field_value.clear()
                    if current.name == FILE_FIELD:
                        if sink is not None:
                            raise ValidationFailed(details={"file": "only one file per upload"})
                        if current.filename is None:
                            raise ValidationFailed(details={"file": "must be a file"})
                        sink = _FileSink(storage, key_for, limit_for)
                        filename = current.filename
                elif kind == "data":
                    assert current is not None
                    if current.name == FILE_FIELD:
                        assert sink is not None
                        await sink.write(value)
                    else:
                        field_value += value
                        if len(field_value) > MAX_FIELD_BYTES:
                            raise ValidationFailed(details={current.name: "value is too long"})
                elif kind == "end":
                    assert current is not None
                    if current.name != FILE_FIELD:
                        if current.name in fields:
                            raise ValidationFailed(details={current.name: "given more than once"})
                        try:
                            fields[current.name] = field_value.decode("utf-8")
                        except UnicodeDecodeError as exc:
                            raise ValidationFailed(
                                details={current.name: "must be UTF-8 text"}
                            ) from exc
                    current = None
            events.queue.clear()
            if keepalive is not None and time.monotonic() - last_keepalive > keepalive_every:
                last_keepalive = time.monotonic()
                await keepalive()
        if not events.ended:
            raise ValidationFailed(
                "Malformed multipart body", details={"body": "body is truncated"}
            )
        if sink is None:
            raise ValidationFailed(details={"file": "Field required"})
        size = await sink.finish()
    except BaseException as exc:
        if sink is not None:
            await sink.discard(exc)
        raise
    assert sink.sniffed is not None
    assert sink.key is not None
    return Received(
        fields=fields,
        filename=filename,
        key=sink.key,
        size=size,
        sniffed=sink.sniffed,
        head=bytes(sink.head),
    )
