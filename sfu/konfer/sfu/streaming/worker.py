"""``konfer streamer``: one live stream of a meeting, in its own process (never the SFU's).

Started by the api's local runtime with the stream and meeting ids, the SFU's control URL,
the output kind and a media token (hidden subscriber). It joins the SFU like a recorder,
picks one camera and one microphone (the given user's, else the first to publish) and
feeds them to a ``pipeline.Pipeline``. HLS and DASH files are written to a local folder
and uploaded to storage under ``streams/<stream id>/`` as they complete (the playlist or
manifest after the segments it names), where the api serves them; RTMP goes to the URL.
It reports to the api every heartbeat; the answer may tell it to stop. On exit it leaves
a one-line JSON summary (``{"phase", "reason"}``) in ``KONFER_RECORDER_TERMINATION_LOG``
(``/dev/termination-log``, the Job's termination message) when that path is writable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiortc import RTCRtpReceiver

from konfer.core.settings import Settings
from konfer.core.storage import Storage, live_stream_folder, storage_from_settings
from konfer.sfu import aiortc_hooks as hooks
from konfer.sfu.recorder.sfu_client import RemoteTrack, SfuGone, SfuSubscriber
from konfer.sfu.streaming.pipeline import Pipeline

log = logging.getLogger(__name__)

CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".mpd": "application/dash+xml",
    ".webm": "video/webm",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
}
TRACK_WAIT_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class StreamOptions:
    stream_id: str
    meeting_id: str
    sfu_url: str
    kind: str  # hls | dash | rtmp
    rtmp_url: str | None = None
    user_id: str | None = None
    video_bitrate: int = 1_500_000


@dataclass
class Streamer:
    settings: Settings
    options: StreamOptions
    token: str
    storage: Storage
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    video: RemoteTrack | None = None
    audio: RemoteTrack | None = None
    receivers: dict[str, RTCRtpReceiver] = field(default_factory=dict)
    offered: list[RemoteTrack] = field(default_factory=list)
    pipeline: Pipeline | None = None
    uploaded: dict[str, int] = field(default_factory=dict)
    http: httpx.AsyncClient | None = None
    stop_requested: bool = False

    @property
    def folder(self) -> Path:
        return self.settings.resolved_recording_spool_dir / "streams" / self.options.stream_id

    @property
    def prefix(self) -> str:
        return live_stream_folder(self.options.stream_id)

    def on_track(self, remote: RemoteTrack, receiver: RTCRtpReceiver) -> None:
        self.offered.append(remote)
        self.receivers[remote.track_id] = receiver

        def sink(frame: bytes, timestamp: int) -> None:
            # Only the chosen camera and microphone reach the pipeline; every receiver is
            # tapped all the same, so aiortc never decodes anything in this process.
            chosen = self.video if remote.kind == "video" else self.audio
            if self.pipeline is not None and chosen is remote and not self.stopping.is_set():
                self.pipeline.push(remote.kind, frame, timestamp)

        hooks.tap_receiver(receiver, sink)

    def _choose(self) -> None:
        """One camera and one microphone, the same person's when possible."""
        wanted = self.options.user_id
        cams = [t for t in self.offered if t.kind == "video" and t.source == "camera"]
        cams = cams or [t for t in self.offered if t.kind == "video"]
        mics = [t for t in self.offered if t.kind == "audio"]
        if wanted:
            cams = [t for t in cams if t.user_id == wanted] or cams
            mics = [t for t in mics if t.user_id == wanted] or mics
        self.video = cams[0] if cams else None
        if self.video is not None:
            mics = [t for t in mics if t.user_id == self.video.user_id] or mics
        self.audio = mics[0] if mics else None

    async def report(self, status: str, reason: str | None = None) -> None:
        assert self.http is not None
        stats = self.pipeline.stats if self.pipeline else None
        body: dict[str, Any] = {"status": status, "reason": reason}
        if stats is not None:
            body["quality_metrics"] = {
                "frame_rate": 0,
                "resolution": f"{stats.width}x{stats.height}" if stats.width else None,
                "video_frames": stats.video_frames,
                "audio_frames": stats.audio_frames,
                "dropped_frames": stats.dropped_frames,
                "encoding_errors": stats.encoding_errors,
                "transcoded_video": stats.transcoded_video,
                "transcoded_audio": stats.transcoded_audio,
                "bytes_in": stats.bytes_in,
            }
        base = (self.settings.recorder_callback_url or self.settings.resolved_public_url).rstrip(
            "/"
        )
        with contextlib.suppress(httpx.HTTPError, ValueError):
            r = await self.http.post(
                f"{base}/api/v1/internal/streams/{self.options.stream_id}/report", json=body
            )
            if r.status_code < 300 and r.json().get("stop"):
                self.stop_requested = True

    async def upload_ready(self, final: bool = False) -> None:
        """Upload new or grown files; the playlist/manifest last, so it names stored ones."""
        if self.options.kind == "rtmp":
            return
        for path, size in await asyncio.to_thread(self._ready, final):
            content = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
            fh = await asyncio.to_thread(path.open, "rb")
            try:
                await self.storage.put(f"{self.prefix}{path.name}", fh, size, content)
            finally:
                fh.close()
            self.uploaded[path.name] = size

    def _ready(self, final: bool) -> list[tuple[Path, int]]:
        """Files to upload now: finished segments, then the playlist or manifest.

        HLS renames a segment into place when it is complete (``temp_file``); DASH writes
        in place, so its newest segment of each stream waits for the next pass.
        """
        if not self.folder.is_dir():
            return []
        files = [p for p in self.folder.iterdir() if p.is_file() and ".tmp" not in p.name]
        indexes = [p for p in files if p.suffix in (".m3u8", ".mpd")]
        segments = sorted((p for p in files if p not in indexes), key=lambda p: p.stat().st_mtime)
        if not final and self.options.kind == "dash":  # HLS writes segments as .tmp first
            newest: dict[str, Path] = {}
            for p in segments:
                newest[p.suffix + p.name.split("-")[0]] = p
            segments = [p for p in segments if p not in newest.values()]
        ready = [(p, p.stat().st_size) for p in segments]
        ready = [(p, n) for p, n in ready if self.uploaded.get(p.name) != n]
        return ready + [(p, p.stat().st_size) for p in indexes]

    async def run(self) -> str | None:
        """Stream until stopped; the failure reason, or None."""
        sub = SfuSubscriber(
            self.options.sfu_url, self.token, f"streamer-{self.options.stream_id}", self.on_track
        )
        self.http = httpx.AsyncClient(headers={"Authorization": f"Bearer {self.token}"}, timeout=10)
        events: asyncio.Task[None] | None = None
        try:
            await self.report("pending")
            await sub.join()
            events = asyncio.create_task(sub.run())
            deadline = time.monotonic() + 60
            while not self.offered and time.monotonic() < deadline:
                if self.stopping.is_set() or events.done():
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(TRACK_WAIT_SECONDS if self.offered else 0)
            self._choose()
            if self.video is None and self.audio is None:
                return "NO_MEDIA: nobody publishes in the meeting"
            target = self.options.rtmp_url if self.options.kind == "rtmp" else str(self.folder)
            assert target is not None
            self.pipeline = Pipeline(
                self.options.kind,
                target,
                self.video.codec if self.video else None,
                self.audio.codec if self.audio else None,
                self.options.video_bitrate,
            )
            self.pipeline.start()
            if self.video is not None:
                await sub.keyframe(self.video.track_id)
            while not self.stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.stopping.wait(), self.settings.recording_heartbeat_seconds
                    )
                if events.done() or not self.pipeline.alive:
                    break
                await self.upload_ready()
                started = self.pipeline.stats.started is not None
                await self.report("streaming" if started else "pending")
                if self.stop_requested:
                    self.stopping.set()
            self.stopping.set()
            await asyncio.to_thread(self.pipeline.stop)
            await self.upload_ready(final=True)
            return self.pipeline.error
        except (SfuGone, httpx.HTTPError) as exc:
            return f"SFU_UNAVAILABLE: {exc}"
        finally:
            if events is not None:
                events.cancel()
                with contextlib.suppress(BaseException):
                    await events
            await sub.close()


async def run_streamer(settings: Settings, options: StreamOptions) -> int:
    if settings.recorder_token is None:
        raise SystemExit("KONFER_RECORDER_TOKEN is not set: the streamer needs its media token")
    token = settings.recorder_token.get_secret_value()
    streamer = Streamer(settings, options, token, storage_from_settings(settings))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, streamer.stopping.set)
    reason = await streamer.run()
    await streamer.report("failed" if reason else "stopped", reason)
    if streamer.http is not None:
        await streamer.http.aclose()
    summary = {"phase": "failed" if reason else "stopped", "reason": reason}
    write_termination_log(settings.recorder_termination_log, summary)
    print(json.dumps(summary), flush=True)
    return 1 if reason else 0


def write_termination_log(path: Path, summary: dict[str, Any]) -> None:
    """The one-line JSON summary Kubernetes keeps as the container's termination message
    (the streamer Job's ``terminationMessagePath``), as the recorder leaves one: the api
    reads it when the Job fails before the final report arrived. Skipped where the path
    cannot be written (a local run)."""
    with contextlib.suppress(OSError):
        if path.parent.is_dir():
            path.write_text(json.dumps(summary) + "\n")


def run(settings: Settings, options: StreamOptions) -> int:
    """Blocking entry point of ``konfer streamer``; the process exit code."""
    import uvloop

    problems = hooks.check_compatibility()
    if problems:
        raise RuntimeError("aiortc does not match the hooks: " + "; ".join(problems))
    hooks.set_ice_hosts(settings.sfu_ice_hosts or None)
    hooks.codec_guard.install()  # aiortc never decodes here; the pipeline transcodes itself
    return uvloop.run(run_streamer(settings, options))
