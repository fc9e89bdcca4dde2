"""The local runtime: one ``konfer sfu`` child process per active meeting.

Any api replica may be asked for a meeting's SFU; a small directory (Redis, or memory
for one process) records which SFU serves which meeting so replicas on one machine share
it. The replica that started an SFU watches it: it restarts nothing by itself but tells
the room when the process dies (clients then negotiate again, which starts a new one),
and stops it when the meeting ends or nobody has been connected for the idle timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx
from redis.asyncio import Redis

from konfer.core.errors import ServiceUnavailable
from konfer.core.process import announced
from konfer.core.settings import Settings

log = logging.getLogger(__name__)

_KEY = "konfer:sfu:"
_LEASE_SECONDS = 30


class SfuDirectory(Protocol):
    async def claim(self, meeting_id: str, url: str) -> str | None:
        """Record url for the meeting unless one is recorded; return the recorded one."""
        ...

    async def lookup(self, meeting_id: str) -> str | None: ...
    async def renew(self, meeting_id: str, url: str) -> None: ...
    async def release(self, meeting_id: str, url: str) -> None: ...


class MemoryDirectory:
    def __init__(self) -> None:
        self._urls: dict[str, str] = {}

    async def claim(self, meeting_id: str, url: str) -> str | None:
        return self._urls.setdefault(meeting_id, url)

    async def lookup(self, meeting_id: str) -> str | None:
        return self._urls.get(meeting_id)

    async def renew(self, meeting_id: str, url: str) -> None:
        return None

    async def release(self, meeting_id: str, url: str) -> None:
        if self._urls.get(meeting_id) == url:
            del self._urls[meeting_id]


class RedisDirectory:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def claim(self, meeting_id: str, url: str) -> str | None:
        if await self.redis.set(_KEY + meeting_id, url, nx=True, ex=_LEASE_SECONDS):
            return url
        return await self.lookup(meeting_id)

    async def lookup(self, meeting_id: str) -> str | None:
        value = await self.redis.get(_KEY + meeting_id)
        return value.decode() if isinstance(value, bytes) else value

    async def renew(self, meeting_id: str, url: str) -> None:
        if await self.lookup(meeting_id) == url:
            await self.redis.expire(_KEY + meeting_id, _LEASE_SECONDS)

    async def release(self, meeting_id: str, url: str) -> None:
        if await self.lookup(meeting_id) == url:
            await self.redis.delete(_KEY + meeting_id)


@dataclass(eq=False)
class _Child:
    meeting_id: str
    url: str
    process: asyncio.subprocess.Process
    stopping: bool = False
    empty_since: float | None = None
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)


class LocalSfuRuntime:
    def __init__(
        self,
        settings: Settings,
        directory: SfuDirectory,
        on_crash: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.directory = directory
        self.on_crash = on_crash
        self.children: dict[str, _Child] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._http = httpx.AsyncClient(timeout=5)

    async def endpoint(self, meeting_id: str) -> str:
        """The control URL of the meeting's SFU, starting one when none runs."""
        url = await self.directory.lookup(meeting_id)
        if url is not None and await self._alive(url):
            return url
        lock = self._locks.setdefault(meeting_id, asyncio.Lock())
        async with lock:
            url = await self.directory.lookup(meeting_id)
            if url is not None and await self._alive(url):
                return url
            if url is not None:  # recorded but dead: its owner crashed
                await self.directory.release(meeting_id, url)
            return await self._start(meeting_id)

    async def _alive(self, url: str) -> bool:
        try:
            return (await self._http.get(f"{url}/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    async def _start(self, meeting_id: str) -> str:
        """Start an SFU on a port the kernel picks; it names the port in ``url_file``."""
        keys_dir = str(self.settings.resolved_keys_dir.resolve())
        with tempfile.TemporaryDirectory(prefix="konfer-sfu-") as folder:
            url_file = Path(folder) / "url"
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "konfer.cli.main",
                "sfu",
                "--meeting",
                meeting_id,
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--url-file",
                str(url_file),
                "--keys-dir",
                keys_dir,
                "--exit-with-parent",
                env=os.environ.copy(),
                stdin=asyncio.subprocess.DEVNULL,
            )
            deadline = time.monotonic() + self.settings.sfu_start_timeout_seconds
            url: str | None = None
            while url is None or not await self._alive(url):
                if process.returncode is not None or time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    raise ServiceUnavailable("The meeting's media server did not start")
                if url is None:
                    url = announced(url_file)
                    if url is not None:
                        continue
                await asyncio.sleep(0.1)
        claimed = await self.directory.claim(meeting_id, url)
        if claimed != url:  # another replica won the race: use theirs
            process.terminate()
            await process.wait()
            assert claimed is not None
            return claimed
        child = _Child(meeting_id, url, process)
        child.watcher = asyncio.create_task(self._watch(child), name=f"sfu-{meeting_id}")
        self.children[meeting_id] = child
        log.info("started SFU", extra={"meeting_id": meeting_id, "url": url})
        return url

    async def _watch(self, child: _Child) -> None:
        """Renew the directory lease, notice a crash, stop when idle."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.process.wait(), 5)
            if child.process.returncode is not None:
                break
            await self.directory.renew(child.meeting_id, child.url)
            if await self._idle_too_long(child):
                log.info("stopping idle SFU", extra={"meeting_id": child.meeting_id})
                await self.stop(child.meeting_id)
                return
        self.children.pop(child.meeting_id, None)
        await self.directory.release(child.meeting_id, child.url)
        if not child.stopping:
            log.error(
                "SFU exited",
                extra={"meeting_id": child.meeting_id, "returncode": child.process.returncode},
            )
            if self.on_crash is not None:
                await self.on_crash(child.meeting_id)

    async def _idle_too_long(self, child: _Child) -> bool:
        try:
            peers = (await self._http.get(f"{child.url}/healthz")).json()["peers"]
        except (httpx.HTTPError, ValueError, KeyError):
            return False
        if peers:
            child.empty_since = None
            return False
        now = time.monotonic()
        child.empty_since = child.empty_since or now
        return now - child.empty_since >= self.settings.sfu_idle_timeout_seconds

    async def start(self, meeting_id: str) -> None:
        """Nothing to do ahead: a local SFU starts in well under a second, on first join."""

    def peers_changed(self, meeting_id: str) -> None:
        """The watcher asks the SFU itself how many peers it has (``_idle_too_long``)."""

    async def stop(self, meeting_id: str) -> None:
        child = self.children.pop(meeting_id, None)
        if child is None:
            return
        child.stopping = True
        await self.directory.release(meeting_id, child.url)
        if child.process.returncode is None:
            child.process.terminate()
            try:
                await asyncio.wait_for(child.process.wait(), 10)
            except TimeoutError:
                child.process.kill()
                await child.process.wait()

    async def close(self) -> None:
        for meeting_id in list(self.children):
            await self.stop(meeting_id)
        await self._http.aclose()
