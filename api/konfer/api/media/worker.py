"""The job worker: claims queued media jobs and runs them with PyAV.

Started by ``konfer worker`` (a Deployment in Kubernetes, a child process of
``konfer up`` locally) and in tests as an asyncio task. One ``Worker`` runs up to
``worker_concurrency`` jobs at once; each job:

1. is claimed under a lease (``services.jobs.claim``);
2. has its inputs copied from storage into a scratch folder;
3. runs in a thread of its own (PyAV releases the GIL while coding) while a heartbeat
   writes its progress every second and renews the lease — a failed renewal (cancelled,
   or lease lost) makes the next progress callback raise ``ops.Cancelled``;
4. uploads its outputs under fresh keys and completes in one transaction, or deletes
   them if it may no longer complete.

``ops.MediaError`` (bad input, impossible request) fails a job for good; any other
error (storage down, database blip) puts it back in the queue while attempts remain. A
worker that is killed simply stops renewing; its job is retried once the lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from konfer.api.db.models import Media, MediaJob, MediaSource
from konfer.api.media import ops
from konfer.api.media.formats import IMAGE_FORMATS, extension_for
from konfer.api.media.upload import run_in_thread
from konfer.api.services import jobs
from konfer.api.services.media import inspect_media, object_key
from konfer.core.settings import Settings
from konfer.core.storage import Storage
from konfer.core.timeutil import utcnow

log = logging.getLogger(__name__)

STALE_SCRATCH_SECONDS = 3600
SUFFIX = {
    "transcode": "",
    "extract_audio": "-audio",
    "extract_video": "-video",
    "merge": "-merged",
    "thumbnail": "-thumbnail",
    "generate_thumbnail": "-thumbnail",
    "compress": "-compressed",
    "convert_format": "",
}


class _Run:
    """One claimed job while it runs: its progress and whether it must stop."""

    def __init__(self, job: MediaJob) -> None:
        self.job = job
        self.attempt = job.attempts
        self.progress = 0.0
        self.stop = threading.Event()
        self.keys: list[str] = []

    def report(self, fraction: float) -> None:
        """The progress callback handed to ``ops``; raises once the job must stop."""
        if self.stop.is_set():
            raise ops.Cancelled()
        self.progress = max(self.progress, min(1.0, fraction))

    def scaled(self, index: int, count: int) -> Callable[[float], None]:
        return lambda f: self.report((index + f) / count)


class Worker:
    """Claims and runs jobs until stopped; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        storage: Storage,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.storage = storage
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        root = settings.worker_scratch_dir or Path(tempfile.gettempdir())
        self.scratch = root / "konfer-jobs"
        self.lease = settings.worker_lease_seconds
        self.beat = min(1.0, self.lease / 4)

    # --- loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Claim and run jobs until ``stop`` is set; running jobs go back to the queue."""
        stop = stop or asyncio.Event()
        await asyncio.to_thread(self._clean_scratch)
        log.info("worker started", extra={"worker_id": self.id})
        running: set[asyncio.Task[None]] = set()
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                while len(running) < self.settings.worker_concurrency:
                    job = await self._claim()
                    if job is None:
                        break
                    task = asyncio.create_task(self._execute(job))
                    running.add(task)
                    task.add_done_callback(running.discard)
                await asyncio.wait(
                    [stopping, *running],
                    timeout=self.settings.worker_poll_interval_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
        finally:
            stopping.cancel()
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            log.info("worker stopped", extra={"worker_id": self.id})

    async def run_once(self) -> bool:
        """Claim one job and run it to the end; False when the queue had none."""
        job = await self._claim()
        if job is None:
            return False
        await self._execute(job)
        return True

    async def _claim(self) -> MediaJob | None:
        try:
            async with self.sessionmaker() as session:
                return await jobs.claim(session, self.id, self.lease)
        except Exception:
            log.exception("claiming a job failed")
            return None

    def _clean_scratch(self) -> None:
        """Remove scratch folders a killed worker left behind."""
        if not self.scratch.is_dir():
            return
        cutoff = time.time() - STALE_SCRATCH_SECONDS
        for entry in self.scratch.iterdir():
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)

    # --- one job ------------------------------------------------------------------------

    async def _heartbeat(self, run: _Run) -> None:
        while True:
            await asyncio.sleep(self.beat)
            try:
                async with self.sessionmaker() as session:
                    ok = await jobs.heartbeat(
                        session, run.job.id, self.id, run.attempt, run.progress, self.lease
                    )
            except Exception:
                log.exception("progress write failed", extra={"job_id": str(run.job.id)})
                continue
            if not ok:
                run.stop.set()
                return

    async def _execute(self, job: MediaJob) -> None:
        run = _Run(job)
        workdir = self.scratch / f"{job.id}-{job.attempts}"
        heart = asyncio.create_task(self._heartbeat(run))
        started = time.monotonic()
        outcome = "completed"
        try:
            await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
            outputs, attach = await self._perform(run, workdir)
            run.stop.set()  # no more progress writes from here on
            async with self.sessionmaker() as session:
                done = await jobs.complete(session, job.id, self.id, run.attempt, outputs, attach)
            if not done:
                outcome = "superseded"
                await self._discard(run)
        except ops.Cancelled:
            outcome = "cancelled"
            await self._discard(run)
        except ops.MediaError as exc:
            outcome = "failed"
            await self._discard(run)
            await self._fail(run, str(exc), retry=False)
        except asyncio.CancelledError:
            outcome = "interrupted"
            run.stop.set()
            await self._discard(run)
            await self._fail(run, "The worker stopped during the job", retry=True)
            raise
        except Exception as exc:
            outcome = "error"
            log.exception("job failed", extra={"job_id": str(job.id)})
            await self._discard(run)
            await self._fail(run, f"{type(exc).__name__}: {exc}", retry=True)
        finally:
            run.stop.set()
            heart.cancel()
            await asyncio.gather(heart, return_exceptions=True)
            await asyncio.to_thread(shutil.rmtree, workdir, True)
            log.info(
                "job finished",
                extra={
                    "job_id": str(job.id),
                    "kind": job.kind,
                    "outcome": outcome,
                    "attempt": run.attempt,
                    "seconds": round(time.monotonic() - started, 3),
                },
            )

    async def _fail(self, run: _Run, error: str, retry: bool) -> None:
        try:
            async with self.sessionmaker() as session:
                await jobs.fail(session, run.job.id, self.id, run.attempt, error, retry)
        except Exception:
            log.exception("recording a job failure failed", extra={"job_id": str(run.job.id)})

    async def _discard(self, run: _Run) -> None:
        for key in run.keys:
            with contextlib.suppress(Exception):
                await self.storage.delete(key)
        run.keys.clear()

    # --- inputs and outputs -------------------------------------------------------------

    async def _inputs(self, run: _Run, workdir: Path) -> list[tuple[Media, Path]]:
        found: list[tuple[Media, Path]] = []
        async with self.sessionmaker() as session:
            for index, raw in enumerate(run.job.input_media_ids):
                media = await session.get(Media, uuid.UUID(raw))
                if media is None:
                    raise ops.MediaError(f"Input media {raw} no longer exists")
                found.append((media, workdir / f"in{index}.{extension_for(media.container)}"))
        for media, path in found:
            info = await self.storage.stat(media.object_key)
            if info is None:
                raise ops.MediaError(f"Input media {media.id} has no stored file")
            with path.open("wb") as fh:
                async for chunk in self.storage.read(media.object_key):
                    fh.write(chunk)
                    if run.stop.is_set():
                        raise ops.Cancelled()
        return found

    async def _upload(self, run: _Run, path: Path, key: str, mime: str) -> None:
        size = (await asyncio.to_thread(path.stat)).st_size
        run.keys.append(key)
        with path.open("rb") as fh:
            # A cancelled await would leave the storage thread writing after _discard has
            # deleted the key; wait for the write to end so the delete comes last.
            put = asyncio.ensure_future(self.storage.put(key, fh, size, mime))
            try:
                await asyncio.shield(put)
            except asyncio.CancelledError:
                await asyncio.gather(put, return_exceptions=True)
                raise

    async def _output(
        self,
        run: _Run,
        media_id: uuid.UUID,
        path: Path,
        container: str,
        origin: Media,
        step: str,
    ) -> Media:
        """Probe a produced file, store it (and its preview), and describe it as an item."""
        now = utcnow()
        ext = extension_for(container)
        stem = origin.filename.rsplit(".", 1)[0] if "." in origin.filename else origin.filename
        filename = f"{stem}{SUFFIX.get(step, '')}.{ext}"
        if filename == origin.filename:
            filename = f"{stem}-{step.replace('_', '-')}.{ext}"
        media = Media(
            id=media_id,
            owner_id=run.job.owner_id,
            meeting_id=origin.meeting_id,
            filename=filename[:255],
            description=f"{step.replace('_', ' ')} of {origin.id}",
            container=container,
            size=(await asyncio.to_thread(path.stat)).st_size,
            source=MediaSource.job.value,
            source_job_id=run.job.id,
            download_count=0,
            created_at=now,
        )
        key = object_key(media_id, ext)
        media.object_key = key
        if container in IMAGE_FORMATS:
            fmt, width, height = await run_in_thread(lambda: ops.probe_image(path))
            del fmt
            media.file_type, media.mime_type = "image", IMAGE_FORMATS[container]
            media.width, media.height = width, height
            await self._upload(run, path, key, media.mime_type)
            media.thumbnail_key = key
            return media
        info = await run_in_thread(lambda: ops.probe(path, check_decode=False))
        facts = inspect_media(info, container)
        for name in (
            "file_type",
            "mime_type",
            "duration",
            "width",
            "height",
            "bitrate",
            "video_codec",
            "audio_codec",
            "frame_rate",
            "sample_rate",
            "channels",
        ):
            setattr(media, name, getattr(facts, name))
        media.container = facts.container
        await self._upload(run, path, key, media.mime_type)
        if media.file_type == "video":
            thumb = path.with_suffix(".thumb.jpg")
            timestamp = min(1.0, (media.duration or 0) * 0.1)
            await run_in_thread(
                lambda: ops.thumbnail(
                    path,
                    thumb,
                    is_image=False,
                    timestamp=timestamp,
                    width=320,
                    height=180,
                    fmt="jpg",
                )
            )
            media.thumbnail_key = object_key(media_id, "jpg")
            await self._upload(run, thumb, media.thumbnail_key, "image/jpeg")
        return media

    # --- the operations -----------------------------------------------------------------

    async def _perform(
        self, run: _Run, workdir: Path
    ) -> tuple[list[Media], tuple[uuid.UUID, str] | None]:
        job = run.job
        inputs = await self._inputs(run, workdir)
        origin, src = inputs[0]
        params: dict[str, Any] = job.params or {}
        out_ids = [uuid.UUID(i) for i in job.output_media_ids]
        if job.kind == "thumbnail" and params.get("attach"):
            path = workdir / "preview.jpg"
            await self._thumbnail(origin, src, path, params, run.report)
            key = object_key(origin.id, "jpg")
            await self._upload(run, path, key, "image/jpeg")
            return [], (origin.id, key)
        if job.kind == "merge":
            plan = jobs.plan_from_json(params["plan"])
            durations = []
            for _, path in inputs:
                info = await run_in_thread(lambda p=path: ops.probe(p, check_decode=False))  # type: ignore[misc]
                durations.append(info.duration or 0.0)
            out = workdir / f"out.{extension_for(plan.container)}"
            merge_inputs = [
                ops.MergeInput(p, d) for (_, p), d in zip(inputs, durations, strict=True)
            ]
            await run_in_thread(
                lambda: ops.merge(
                    merge_inputs,
                    out,
                    plan,
                    params["transition"],
                    float(params["transition_duration"]),
                    run.report,
                )
            )
            return [await self._output(run, out_ids[0], out, plan.container, origin, "merge")], None
        if job.kind == "process":
            steps = params["steps"]
            made = []
            for index, (step, media_id) in enumerate(zip(steps, out_ids, strict=True)):
                made.append(
                    await self._step(
                        run,
                        step["op"],
                        step["params"],
                        origin,
                        src,
                        workdir,
                        media_id,
                        run.scaled(index, len(steps)),
                    )
                )
            return made, None
        media = await self._step(
            run, job.kind, params, origin, src, workdir, out_ids[0], run.report
        )
        return [media], None

    async def _thumbnail(
        self, origin: Media, src: Path, out: Path, params: dict[str, Any], report: ops.Progress
    ) -> None:
        report(0.0)
        await run_in_thread(
            lambda: ops.thumbnail(
                src,
                out,
                is_image=origin.file_type == "image",
                timestamp=float(params.get("timestamp", 0.0)),
                width=int(params["width"]),
                height=int(params["height"]),
                fmt=str(params["format"]),
            )
        )

    async def _step(
        self,
        run: _Run,
        op: str,
        params: dict[str, Any],
        origin: Media,
        src: Path,
        workdir: Path,
        media_id: uuid.UUID,
        report: ops.Progress,
    ) -> Media:
        if op in ("thumbnail", "generate_thumbnail"):
            fmt = str(params["format"])
            out = workdir / f"{media_id}.{fmt}"
            await self._thumbnail(origin, src, out, params, report)
            return await self._output(run, media_id, out, fmt, origin, op)
        if op == "extract_video":
            container = str(params["container"])
            out = workdir / f"{media_id}.{extension_for(container)}"
            await run_in_thread(lambda: ops.remux(src, out, container, "video", report))
            return await self._output(run, media_id, out, container, origin, op)
        plan = jobs.plan_from_json(params["plan"])
        out = workdir / f"{media_id}.{extension_for(plan.container)}"
        if op == "extract_audio" and params.get("copy"):
            await run_in_thread(lambda: ops.remux(src, out, plan.container, "audio", report))
        elif op in ("transcode", "extract_audio", "compress", "convert_format"):
            await run_in_thread(lambda: ops.transcode(src, out, plan, report))
        else:
            raise ops.MediaError(f"Unknown operation {op}")
        return await self._output(run, media_id, out, plan.container, origin, op)


async def serve(settings: Settings, stop: asyncio.Event, parent_pid: int | None = None) -> None:
    """``konfer worker``: connect, wait for the schema, run until ``stop`` is set."""
    from konfer.api.db.engine import create_engine, create_sessionmaker
    from konfer.api.db.migrate import wait_until_current
    from konfer.core.storage import storage_from_settings

    watcher = None
    if parent_pid is not None:
        # The starter names itself: a parent that died before this process got here (we
        # would see init as our parent) is noticed too, and the worker never runs orphaned.
        async def watch() -> None:
            while os.getppid() == parent_pid:  # noqa: ASYNC110 - nothing to wait on but time
                await asyncio.sleep(1.0)
            log.info("parent process is gone; stopping")
            stop.set()

        watcher = asyncio.create_task(watch())
    engine = create_engine(settings)
    try:
        await wait_until_current(engine, stop)
        if stop.is_set():
            return
        storage = storage_from_settings(settings)
        await storage.ensure_ready()
        worker = Worker(settings, create_sessionmaker(engine), storage)
        await worker.run(stop)
    finally:
        if watcher is not None:
            watcher.cancel()
        await engine.dispose()
