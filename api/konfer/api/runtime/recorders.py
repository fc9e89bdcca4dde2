"""The local runtime's recorders and streamers: one child process per recording or stream.

``services.recordings`` asks for a recorder when a recording starts and for a stop when
it should end; the process itself reports its progress to the api over HTTP, exactly as
a recorder Job does in Kubernetes, so this module only starts, signals and reaps
processes. Children die with the replica that started them (``--exit-with-parent``);
a recorder whose parent vanished stops like one told to stop: it finalizes, uploads,
and reports through any replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from konfer.core.settings import Settings

log = logging.getLogger(__name__)

RECORDING_PREFIX = "recordings/"


@dataclass(frozen=True, slots=True)
class RecorderSpec:
    """Everything one recorder process is started with."""

    recording_id: str
    meeting_id: str
    sfu_url: str
    token: str
    format: str
    layout: str
    sources: tuple[str, ...]
    max_duration_seconds: int | None = None
    retry_upload: bool = False
    # Encoder quality of a composed file (per-track files are copied as sent).
    quality: str = "medium"
    # Where in storage the files go: ``<prefix><meeting id>/<recording id>.<ext>``.
    storage_prefix: str = RECORDING_PREFIX


class RecorderRuntime(Protocol):
    """What ``services.recordings`` needs of a runtime: local processes, or Jobs that the
    operator runs from Recording objects in Kubernetes. Progress never comes through
    here: recorders report to ``/api/v1/internal/recordings/{id}/report`` themselves."""

    async def start(self, spec: RecorderSpec) -> None: ...

    async def start_streamer(self, spec: StreamerSpec) -> None: ...

    async def stop(self, recording_id: str) -> bool:
        """Ask for a stop now; False if this runtime cannot reach that recorder (it then
        hears ``stop`` in the answer to its next report)."""
        ...

    def running(self, recording_id: str) -> bool: ...

    async def wait_exit(self, recording_id: str, seconds: float) -> bool: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class StreamerSpec:
    """Everything one ``konfer streamer`` process is started with."""

    stream_id: str
    meeting_id: str
    sfu_url: str
    token: str
    kind: str
    rtmp_url: str | None = None
    user_id: str | None = None
    video_bitrate: int = 1_500_000

    @property
    def key(self) -> str:
        return f"stream:{self.stream_id}"

    def args(self) -> list[str]:
        """``konfer streamer`` arguments, the same for a child process and a Job."""
        args = [
            "streamer",
            "--stream-id",
            self.stream_id,
            "--meeting-id",
            self.meeting_id,
            "--sfu-url",
            self.sfu_url,
            "--type",
            self.kind,
            "--video-bitrate",
            str(self.video_bitrate),
        ]
        if self.rtmp_url:
            args += ["--rtmp-url", self.rtmp_url]
        if self.user_id:
            args += ["--user-id", self.user_id]
        return args


@dataclass(eq=False)
class _Child:
    key: str
    process: asyncio.subprocess.Process
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)


class LocalRecorderRuntime:
    def __init__(
        self,
        settings: Settings,
        on_exit: Callable[[str, int], Awaitable[None]] | None = None,
        on_stream_exit: Callable[[str, int], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.on_exit = on_exit
        self.on_stream_exit = on_stream_exit
        self.children: dict[str, _Child] = {}

    @property
    def callback_url(self) -> str:
        """Where the children report: this replica, on loopback, unless configured."""
        if self.settings.recorder_callback_url:
            return self.settings.recorder_callback_url
        host = self.settings.host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - reaching ourselves, not binding
            host = "127.0.0.1"
        return f"http://{host}:{self.settings.port}"

    async def start(self, spec: RecorderSpec) -> None:
        args = [
            "recorder",
            "--recording-id",
            spec.recording_id,
            "--meeting-id",
            spec.meeting_id,
            "--sfu-url",
            spec.sfu_url,
            "--format",
            spec.format,
            "--layout",
            spec.layout,
            "--sources",
            ",".join(spec.sources),
            "--quality",
            spec.quality,
            "--storage-prefix",
            spec.storage_prefix,
            "--exit-with-parent",
        ]
        if spec.max_duration_seconds:
            args += ["--max-duration-seconds", str(spec.max_duration_seconds)]
        if spec.retry_upload:
            args.append("--retry-upload")
        await self._spawn(spec.recording_id, args, spec.token)
        log.info(
            "started recorder",
            extra={"recording_id": spec.recording_id, "meeting_id": spec.meeting_id},
        )

    async def start_streamer(self, spec: StreamerSpec) -> None:
        args = [*spec.args(), "--exit-with-parent"]
        await self._spawn(spec.key, args, spec.token)

    async def _spawn(self, key: str, args: list[str], token: str) -> None:
        env = {
            **os.environ,
            "KONFER_RECORDER_TOKEN": token,
            "KONFER_RECORDER_CALLBACK_URL": self.callback_url,
            "KONFER_RECORDING_SPOOL_DIR": str(self.settings.resolved_recording_spool_dir.resolve()),
            # The exit summary is for Kubernetes; here the exit code and reports suffice.
            "KONFER_RECORDER_TERMINATION_LOG": os.devnull,
        }
        # Storage and ICE settings the api itself was given, whatever their source.
        env.update(_storage_env(self.settings))
        if not self.settings.s3_endpoint:
            env.pop("KONFER_S3_ENDPOINT", None)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "konfer.cli.main",
            *args,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
        )
        child = _Child(key, process)
        child.watcher = asyncio.create_task(self._watch(child), name=f"worker-{key}")
        self.children[key] = child

    async def _watch(self, child: _Child) -> None:
        code = await child.process.wait()
        if self.children.get(child.key) is child:
            del self.children[child.key]
        log.info("worker exited", extra={"worker": child.key, "returncode": code})
        stream = child.key.startswith("stream:")
        handler = self.on_stream_exit if stream else self.on_exit
        if handler is not None:
            try:
                await handler(child.key.removeprefix("stream:"), code)
            except Exception:
                log.exception("handling a worker's exit failed")

    def running(self, recording_id: str) -> bool:
        return recording_id in self.children

    async def wait_exit(self, recording_id: str, seconds: float) -> bool:
        """Whether no recorder for ``recording_id`` runs here (waiting up to ``seconds``)."""
        child = self.children.get(recording_id)
        if child is None:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(child.process.wait()), seconds)
        except TimeoutError:
            return False
        return True

    async def stop(self, recording_id: str) -> bool:
        """Ask the recorder to stop and finalize (SIGTERM); False if none runs here."""
        child = self.children.get(recording_id)
        if child is None or child.process.returncode is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            child.process.terminate()
        return True

    async def close(self) -> None:
        """Stop every recorder and give each time to finalize (they keep what they have)."""
        children = list(self.children.values())
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.process.terminate()
        for child in children:
            try:
                await asyncio.wait_for(child.process.wait(), 30)
            except TimeoutError:
                child.process.kill()
            if child.watcher is not None:
                child.watcher.cancel()


def _storage_env(settings: Settings) -> dict[str, str]:
    env: dict[str, str] = {
        "KONFER_DATA_DIR": str(settings.data_dir.resolve()),
        "KONFER_S3_BUCKET": settings.s3_bucket,
        "KONFER_S3_SECURE": "true" if settings.s3_secure else "false",
        "KONFER_S3_ACCESS_KEY": settings.s3_access_key,
        "KONFER_S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(),
        "KONFER_RECORDING_UPLOAD_ATTEMPTS": str(settings.recording_upload_attempts),
        "KONFER_RECORDING_UPLOAD_BACKOFF_SECONDS": str(settings.recording_upload_backoff_seconds),
        "KONFER_RECORDING_HEARTBEAT_SECONDS": str(settings.recording_heartbeat_seconds),
        "KONFER_RECORDER_REJOIN_TIMEOUT_SECONDS": str(settings.recorder_rejoin_timeout_seconds),
        "KONFER_TOKEN_ISSUER": settings.token_issuer,
    }
    if settings.s3_endpoint:
        env["KONFER_S3_ENDPOINT"] = settings.s3_endpoint
    if settings.s3_region:
        env["KONFER_S3_REGION"] = settings.s3_region
    if settings.sfu_ice_hosts:
        env["KONFER_SFU_ICE_HOSTS"] = ",".join(settings.sfu_ice_hosts)
    return env
