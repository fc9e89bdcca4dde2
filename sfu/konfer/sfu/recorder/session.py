"""``konfer recorder``: one recording, from joining the SFU to a file in storage.

Started by the api's local runtime (a child process) or by the operator (a Job), with
the recording and meeting ids, the SFU's control URL and a media token carrying the
``recorder`` and ``hidden`` grants. It joins as a hidden subscriber, stream-copies every
track (``muxer``), reports its state to the api (``report``), and on stop assembles the
file and uploads it with retries. If storage stays unreachable the file is kept in the
spool folder with a manifest, the status says so, and ``--retry-upload`` finishes the
job later: nothing recorded is lost. Exit code 0 means completed.

Phases reported: pending (joining), recording (the first frame is written), paused (the
SFU was lost: its process died or restarted, the media connection failed, or its control
API stopped answering), finalizing, uploading, completed, failed. Never runs inside the
SFU process: a muxer crash ends a recording, not a meeting.

Losing the SFU pauses the recording instead of ending it. Everything written so far stays
in the spool; the recorder asks the api where the meeting's SFU is now (the answer to a
``paused`` report carries its URL: a new process on a new port locally, the same Service
in Kubernetes) and rejoins with backoff for ``recorder_rejoin_timeout_seconds``. Tracks
received after the rejoin are new tracks of the same recording: they get their own
spool files and streams, placed on the recording's one clock, so the stored file holds
the media from before and after the gap (with silence/no picture in between), stays one
playable file, and no stream has a timestamp jump. The first frame after the rejoin
turns the status back to ``recording``. If the SFU does not come back in time the
recorder stores what it has and ends ``completed`` with a reason saying the recording
ended early (a usable file is never reported as failed); with nothing recorded at all it
ends ``failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import resource
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiortc import RTCRtpReceiver

from konfer.core.settings import Settings
from konfer.core.storage import Storage, storage_from_settings
from konfer.sfu import aiortc_hooks as hooks
from konfer.sfu.recorder import early_stop_requested
from konfer.sfu.recorder.compose import compose
from konfer.sfu.recorder.metrics import RecorderMetrics
from konfer.sfu.recorder.muxer import MIME_TYPES, Assembled, TrackWriter, assemble
from konfer.sfu.recorder.sfu_client import RemoteTrack, SfuGone, SfuSubscriber

log = logging.getLogger(__name__)

CLOCK_RATES = {"audio": 48000, "video": 90000}
COMPOSED = frozenset({"grid", "speaker", "gallery"})
COPYABLE = {"vp8", "h264", "opus"}
MAX_BACKOFF_SECONDS = 60.0
#: How long before the recorder heard a stop the api's stop time may lie to be used.
STOP_CUT_WINDOW_SECONDS = 5.0
#: How long after a stop the recorder keeps receiving media sent before it, at most.
STOP_DRAIN_SECONDS = 2.0
STOP_DRAIN_POLL_SECONDS = 0.02
EXIT_FAILED = 1
EXIT_UPLOAD_FAILED = 3


@dataclass(frozen=True, slots=True)
class RecorderOptions:
    recording_id: str
    meeting_id: str
    sfu_url: str
    format: str = "webm"
    layout: str = "per-track"
    max_duration_seconds: int | None = None
    sources: frozenset[str] = frozenset({"camera", "microphone", "screen_share"})
    retry_upload: bool = False
    quality: str = "medium"  # encoder bitrate of a composed file (compose.BITRATES)
    storage_prefix: str = "recordings/"


@dataclass
class Outcome:
    """What the recorder ends with: the phase and what the api and the operator see."""

    phase: str
    reason: str | None = None
    object_key: str | None = None
    size_bytes: int = 0
    duration_seconds: float = 0.0
    local_path: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "reason": self.reason,
            "objectKey": self.object_key,
            "sizeBytes": self.size_bytes,
            "durationSeconds": round(self.duration_seconds, 3),
        }


class Reporter:
    """Status reports to the api, authenticated with the recorder's own media token."""

    def __init__(self, settings: Settings, recording_id: str, token: str) -> None:
        base = (settings.recorder_callback_url or settings.resolved_public_url).rstrip("/")
        self.url = f"{base}/api/v1/internal/recordings/{recording_id}/report"
        self.http = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"}, timeout=httpx.Timeout(10)
        )
        self.stop_requested = False
        #: When the stop was asked for (Unix time), as the api recorded it.
        self.stop_at: float | None = None
        #: Where the api says the meeting's SFU is now (answers to ``paused`` reports).
        self.sfu_url: str | None = None

    async def send(self, report: dict[str, Any], attempts: int = 3) -> None:
        """Best effort with a few retries: a missed report is repeated by the next one."""
        for attempt in range(attempts):
            try:
                r = await self.http.post(self.url, json=report)
            except httpx.HTTPError as exc:
                log.warning("status report failed: %s", exc)
            else:
                if r.status_code < 300:
                    answer = r.json()
                    if answer.get("stop"):
                        self.stop_requested = True
                    if answer.get("stop_at") is not None:
                        self.stop_at = float(answer["stop_at"])
                    if answer.get("sfu_url"):
                        self.sfu_url = str(answer["sfu_url"])
                    return
                log.warning("status report refused: %s %s", r.status_code, r.text[:200])
                if r.status_code < 500:
                    return
            await asyncio.sleep(0.5 * (attempt + 1))

    async def close(self) -> None:
        await self.http.aclose()


@dataclass
class Recorder:
    settings: Settings
    options: RecorderOptions
    token: str
    storage: Storage
    metrics: RecorderMetrics = field(default_factory=RecorderMetrics)
    writers: dict[str, TrackWriter] = field(default_factory=dict)
    t0: float = field(default_factory=time.monotonic)
    t0_wall: float = field(default_factory=time.time)  # the same moment in Unix time
    first_frame: float | None = None
    phase: str = "pending"
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    #: No frame is written once set: after the stop and the media still on its way to it.
    sealed: bool = False
    first_frame_seen: asyncio.Event = field(default_factory=asyncio.Event)
    subscriber: SfuSubscriber | None = None
    reporter: Reporter | None = None
    peak_bitrate: int = 0
    compose_decoders: int = 0
    #: Times the SFU was lost and rejoined (or given up on), and the time spent paused.
    interruptions: int = 0
    paused_seconds: float = 0.0
    paused_since: float | None = None
    pause_reason: str | None = None
    #: Why the recording ended before it was stopped (the SFU never came back).
    note: str | None = None
    media_seen: asyncio.Event = field(default_factory=asyncio.Event)
    _epoch: int = 0  # one per SFU connection: tracks of a later one are new tracks
    _loss_before: tuple[int, int] = (0, 0)  # packet counts of earlier connections
    _last_bytes: int = 0
    _last_sample: float = 0.0

    @property
    def spool(self) -> Path:
        return self.settings.resolved_recording_spool_dir / self.options.recording_id

    @property
    def object_key(self) -> str:
        """``<prefix><meeting>/<recording>``: the prefix is the Recording's storage.prefix
        (a folder when it ends in ``/``, else a name stem)."""
        return f"{self.options.storage_prefix}{self.options.meeting_id}/{self.options.recording_id}"

    # --- receiving -------------------------------------------------------------------

    def _writer_key(self, track_id: str) -> str:
        # A track id seen again after a rejoin is a new stream: its RTP clock restarted.
        return track_id if not self._epoch else f"{track_id}#{self._epoch}"

    def awaiting_keyframe(self, track_id: str) -> bool:
        """Whether the track's writer still waits for the keyframe its file must start
        with (the subscriber asks the publisher again while it does)."""
        writer = self.writers.get(self._writer_key(track_id))
        return (
            writer is not None
            and writer.kind == "video"
            and not writer.started
            and not writer.closed
            and not self.stopping.is_set()
        )

    def on_track(self, remote: RemoteTrack, receiver: RTCRtpReceiver) -> None:
        if remote.source not in self.options.sources or remote.codec not in COPYABLE:
            if remote.codec not in COPYABLE:
                log.warning("cannot stream-copy codec %s; track skipped", remote.codec)
            hooks.tap_receiver(receiver, _discard)  # received, never decoded
            return
        writer = TrackWriter(
            path=self.spool / f"{len(self.writers):03d}-{remote.kind}-{remote.track_id}.spool",
            track_id=remote.track_id,
            user_id=remote.user_id,
            source=remote.source,
            kind=remote.kind,
            codec=remote.codec,
            clock_rate=CLOCK_RATES[remote.kind],
            t0=self.t0,
        )
        self.writers[self._writer_key(remote.track_id)] = writer
        self.metrics.tracks.set(len(self.writers))

        def sink(frame: bytes, timestamp: int) -> None:
            if self.sealed:
                return
            now = time.monotonic()
            if writer.write(frame, timestamp, now):
                self.metrics.frames.labels(writer.kind).inc()
                self.metrics.bytes.labels(writer.kind).inc(len(frame))
                if self.first_frame is None:
                    self.first_frame = now
                    self.first_frame_seen.set()
                if self.phase in ("pending", "paused"):
                    self.media_seen.set()

        hooks.tap_receiver(receiver, sink)

    # --- reporting -------------------------------------------------------------------

    def duration(self) -> float:
        spans = [(w.offset or 0.0) + w.duration for w in self.writers.values() if w.started] or [
            0.0
        ]
        starts = [w.offset or 0.0 for w in self.writers.values() if w.started] or [0.0]
        return max(0.0, max(spans) - min(starts))

    def quality(self) -> dict[str, Any]:
        written = [w for w in self.writers.values() if w.started]
        total_bytes = sum(w.stats.bytes for w in written)
        duration = self.duration()
        lost, received = self.subscriber.packet_loss() if self.subscriber else (0, 0)
        lost, received = lost + self._loss_before[0], received + self._loss_before[1]
        paused = self.paused_seconds
        if self.paused_since is not None:
            paused += time.monotonic() - self.paused_since
        self.metrics.packets_lost.set(lost)
        self.metrics.duration.set(duration)
        decoders = hooks.codec_guard.attempts + self.compose_decoders
        self.metrics.decoders.set(decoders)
        return {
            "average_bitrate": int(total_bytes * 8 / duration) if duration > 0 else 0,
            "peak_bitrate": self.peak_bitrate,
            "dropped_frames": sum(
                w.stats.skipped_before_keyframe + w.stats.discontinuities
                for w in self.writers.values()
            ),
            "encoding_errors": 0,
            "video_frames": sum(w.stats.frames for w in written if w.kind == "video"),
            "audio_frames": sum(w.stats.frames for w in written if w.kind == "audio"),
            "keyframes": sum(w.stats.keyframes for w in written),
            "packets_received": received,
            "packets_lost": lost,
            "decoders_created": decoders,
            "transcoded": False,
            "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "cpu_seconds": round(time.process_time(), 3),
            "interruptions": self.interruptions,
            "paused_seconds": round(paused, 3),
        }

    def report(self, phase: str, **extra: Any) -> dict[str, Any]:
        written = [w for w in self.writers.values() if w.started]
        body: dict[str, Any] = {
            "phase": phase,
            "duration": round(self.duration(), 3),
            "file_size": sum(w.stats.bytes for w in written),
            "participants": len({w.user_id for w in written}),
            "tracks": [w.describe() for w in written],
            "quality_metrics": self.quality(),
            "layout": self.options.layout,
        }
        if written:  # when the first frame on the file's timeline was sent
            body["started_at"] = self.t0_wall + min(w.offset or 0.0 for w in written)
        if phase == "paused" and self.pause_reason:
            body["reason"] = self.pause_reason
        body.update(extra)
        return body

    async def _send(self, phase: str, **extra: Any) -> None:
        self.phase = phase
        self.metrics.set_phase(phase)
        if self.reporter is not None:
            await self.reporter.send(self.report(phase, **extra))

    def _sample_bitrate(self) -> None:
        now = time.monotonic()
        total = sum(w.stats.bytes for w in self.writers.values())
        if self._last_sample:
            elapsed = now - self._last_sample
            if elapsed > 0:
                self.peak_bitrate = max(
                    self.peak_bitrate, int((total - self._last_bytes) * 8 / elapsed)
                )
        self._last_sample, self._last_bytes = now, total

    async def _heartbeat(self) -> None:
        limit = self.options.max_duration_seconds or self.settings.recording_max_duration_seconds
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.stopping.wait(), self.settings.recording_heartbeat_seconds
                )
            if self.stopping.is_set():
                return
            self._sample_bitrate()
            recording = self.first_frame is not None and self.phase == "pending"
            await self._send("recording" if recording else self.phase)
            if self.reporter is not None and self.reporter.stop_requested:
                log.info("the api asked the recorder to stop")
                self.stopping.set()
            if self.first_frame is not None and time.monotonic() - self.first_frame >= limit:
                log.info("maximum duration reached")
                self.stopping.set()

    async def _watch_media(self) -> None:
        """Report ``recording`` as soon as frames are written: first, and after a rejoin."""
        while not self.stopping.is_set():
            await self.media_seen.wait()
            self.media_seen.clear()
            if self.stopping.is_set() or self.first_frame is None:
                continue
            if self.phase in ("pending", "paused"):
                if self.paused_since is not None:
                    self.paused_seconds += time.monotonic() - self.paused_since
                    self.paused_since = None
                    log.info("media flows again after the rejoin")
                self.pause_reason = None
                await self._send("recording")

    # --- the whole run ---------------------------------------------------------------

    def _subscriber(self, url: str) -> SfuSubscriber:
        return SfuSubscriber(
            url,
            self.token,
            f"recorder-{self.options.recording_id}",
            self.on_track,
            keyframe_wanted=self.awaiting_keyframe,
        )

    async def record(self) -> Outcome:
        self.spool.mkdir(parents=True, exist_ok=True)
        heard: float | None = None  # when the recorder learned it should stop
        await self._send("pending")
        tasks = [
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self._watch_media(), name="media"),
        ]
        try:
            self.subscriber = self._subscriber(self.options.sfu_url)
            try:
                await self.subscriber.join()
            except (SfuGone, httpx.HTTPError) as exc:
                return Outcome("failed", f"SFU_UNAVAILABLE: {exc}")
            subscriber: SfuSubscriber | None = self.subscriber
            while subscriber is not None:
                lost = await self._attend(subscriber)
                if lost is None:
                    heard = time.monotonic()
                    if self.first_frame is not None:
                        # The answer carries when the stop was asked for.
                        await self._send("finalizing")
                        await self._drain(heard)
                    break
                subscriber = await self._rejoin(lost)
        finally:
            stopped = heard or time.monotonic()
            self.stopping.set()
            self.sealed = True
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            for writer in self.writers.values():
                writer.close()
            if self.paused_since is not None:
                self.paused_seconds += time.monotonic() - self.paused_since
                self.paused_since = None
            if self.subscriber is not None:
                await self.subscriber.close()
        if self.first_frame is None:
            reason = self.note or (
                "NO_MEDIA: nothing was published while the recorder was in the meeting"
            )
            return Outcome("failed", reason)
        if self.phase != "finalizing":
            await self._send("finalizing")  # the answer carries when the stop was asked for
        self._cut_at_stop_request(stopped)
        return await self.finalize()

    def _stop_request_offset(self, heard: float) -> float | None:
        """When the user asked to stop, in seconds after t0, if the api said so and it fits.

        The api's clock is trusted only for a moment inside ``STOP_CUT_WINDOW_SECONDS``
        before the recorder heard the stop, so a skewed clock or a stop from elsewhere
        (meeting end, time limit) changes nothing.
        """
        if self.reporter is None or self.reporter.stop_at is None:
            return None
        until = self.reporter.stop_at - self.t0_wall
        if heard - self.t0 - STOP_CUT_WINDOW_SECONDS <= until < heard - self.t0:
            return until
        return None

    async def _drain(self, heard: float) -> None:
        """Keep writing what was sent before the stop request and is still on its way.

        Media reaches the recorder later than it was sent, by the network's and the
        publishers' delay (most of a second on a busy node), so frames sent before the
        user asked to stop may still be arriving when the recorder hears of it; the file
        should hold them. Each track that was flowing is awaited until a frame from the
        stop request on has arrived, for at most ``STOP_DRAIN_SECONDS``.
        """
        until = self._stop_request_offset(heard)
        if until is None:
            return
        waiting = [
            w
            for w in self.writers.values()
            if not w.closed
            and w.last_arrival is not None  # a frame was written: the track started
            and heard - w.last_arrival < STOP_DRAIN_SECONDS
        ]
        deadline = heard + STOP_DRAIN_SECONDS
        while waiting := [w for w in waiting if w.end < until]:
            if time.monotonic() >= deadline:
                log.info(
                    "%d track(s) did not reach the stop request within %.1f s",
                    len(waiting),
                    STOP_DRAIN_SECONDS,
                )
                return
            await asyncio.sleep(STOP_DRAIN_POLL_SECONDS)

    def _cut_at_stop_request(self, stopped: float) -> None:
        """End the file when the user asked to stop, not when the recorder heard it.

        The request reaches the recorder through the api and a signal or a report answer,
        which takes from milliseconds to most of a second on a busy node; everything in
        between would be recorded after the user's stop.
        """
        until = self._stop_request_offset(stopped)
        if until is None:
            return
        log.info(
            "cutting the recording %.3f s before the stop was heard", stopped - self.t0 - until
        )
        for writer in self.writers.values():
            writer.trim(until)

    async def _attend(self, subscriber: SfuSubscriber) -> str | None:
        """Receive from one SFU connection: None once stopped, else how it was lost."""
        run = asyncio.create_task(subscriber.run(), name="sfu-events")
        failed = asyncio.create_task(subscriber.lost.wait())
        stop = asyncio.create_task(self.stopping.wait())
        await asyncio.wait([run, failed, stop], return_when=asyncio.FIRST_COMPLETED)
        lost: str | None = None
        if self.stopping.is_set():
            lost = None
        elif run.done():
            exc = run.exception()
            lost = str(exc) if exc else "the SFU ended the connection"
        elif failed.done():
            lost = "the media connection failed"
        for task in (run, failed, stop):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        return lost

    async def _rejoin(self, lost: str) -> SfuSubscriber | None:
        """Paused: keep what is written, rejoin with backoff until a stop or the deadline.

        Returns the new connection, or None when stopped or given up (``note`` says why).
        """
        log.warning("lost the SFU (%s); pausing and rejoining", lost)
        lost_at = time.monotonic()
        self.interruptions += 1
        self._epoch += 1
        if self.paused_since is None:
            self.paused_since = lost_at
        for writer in self.writers.values():
            writer.close()  # the tracks of the lost connection end here; files stay valid
        url = self.options.sfu_url
        if self.subscriber is not None:
            url = self.subscriber.base_url
            lost_now, received_now = self.subscriber.packet_loss()
            self._loss_before = (
                self._loss_before[0] + lost_now,
                self._loss_before[1] + received_now,
            )
            await self.subscriber.close()
            self.subscriber = None
        self.pause_reason = f"MEDIA_SERVER_LOST: media server lost ({lost}); rejoining"
        self.media_seen.clear()
        timeout = self.settings.recorder_rejoin_timeout_seconds
        delay = 0.25
        while not self.stopping.is_set():
            await self._send("paused")  # the answer says where the SFU is now, or stop
            if self.reporter is not None:
                if self.reporter.stop_requested:
                    self.stopping.set()
                    break
                url = self.reporter.sfu_url or url
            subscriber = self._subscriber(url)
            try:
                await subscriber.join()
            except (SfuGone, httpx.HTTPError) as exc:
                await subscriber.close()
                log.info("rejoining the SFU at %s failed: %s", url, exc)
            else:
                log.info("rejoined the SFU at %s", url)
                self.subscriber = subscriber
                return subscriber
            remaining = lost_at + timeout - time.monotonic()
            if remaining <= 0:
                recorded = self.duration()
                self.note = (
                    f"ENDED_EARLY: the media server was lost ({lost}) and could not be "
                    f"rejoined within {timeout:g} s; the file holds the {recorded:.1f} s "
                    "recorded before"
                )
                log.error("giving up on the SFU: %s", self.note)
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), min(delay, remaining))
            delay = min(delay * 2, 5.0)
        return None

    async def finalize(self) -> Outcome:
        writers = list(self.writers.values())
        try:
            made = await asyncio.to_thread(
                assemble, writers, self.spool / "recording", self.options.format
            )
        except Exception as exc:
            log.exception("assembling the recording failed")
            return Outcome("failed", f"MUX_FAILED: {exc}")
        manifest = self._manifest(made)
        if self.options.layout in COMPOSED:
            # The composed file is the recording; the per-track one is kept beside it.
            layout = "speaker" if self.options.layout == "speaker" else "grid"
            cpu = time.process_time()
            try:
                composed = await asyncio.to_thread(
                    compose,
                    writers,
                    self.spool / "composed",
                    layout,
                    self.options.format,
                    self.options.quality,
                )
            except Exception as exc:
                log.exception("composing the recording failed")
                return Outcome("failed", f"COMPOSE_FAILED: {exc}")
            assert composed.path is not None
            self.compose_decoders = composed.decoders
            manifest["extra_files"] = [
                {
                    "local_path": manifest["local_path"],
                    "object_key": f"{self.object_key}-tracks.{made.format}",
                    "mime_type": manifest["mime_type"],
                }
            ]
            manifest.update(
                object_key=f"{self.object_key}.{composed.format}",
                format=composed.format,
                mime_type=MIME_TYPES[composed.format],
                file_size=composed.path.stat().st_size,
                duration=round(composed.duration, 3),
                local_path=str(composed.path),
                quality_metrics=self.quality(),
            )
            manifest["quality_metrics"]["compose_cpu_seconds"] = round(time.process_time() - cpu, 3)
            manifest["quality_metrics"]["transcoded"] = True
        (self.spool / "manifest.json").write_text(json.dumps(manifest))
        for writer in self.writers.values():
            writer.path.unlink(missing_ok=True)
        return await self.upload(manifest)

    def _manifest(self, made: Assembled) -> dict[str, Any]:
        report = self.report("completed")
        if self.note:
            report["reason"] = self.note
        report.update(
            {
                "object_key": f"{self.object_key}.{made.format}",
                "format": made.format,
                "mime_type": MIME_TYPES[made.format],
                "file_size": made.size,
                "duration": round(made.duration, 3),
                "local_path": str(made.path),
                "streams": made.streams,
            }
        )
        return report

    async def upload(self, manifest: dict[str, Any]) -> Outcome:
        path = Path(manifest["local_path"])
        key = str(manifest["object_key"])
        attempts = self.settings.recording_upload_attempts
        delay = self.settings.recording_upload_backoff_seconds
        error = ""
        await self._send_manifest("uploading", manifest)
        for attempt in range(1, attempts + 1):
            try:
                for extra in manifest.get("extra_files", []):
                    await self._put(
                        Path(extra["local_path"]), extra["object_key"], extra["mime_type"]
                    )
                await self._put(path, key, str(manifest["mime_type"]))
            except Exception as exc:  # storage down, refused, full: all retried alike
                error = f"{type(exc).__name__}: {exc}"
                self.metrics.upload_attempts.labels("failed").inc()
                log.warning("upload attempt %d/%d failed: %s", attempt, attempts, error)
                if attempt < attempts:
                    await asyncio.sleep(min(delay * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS))
                continue
            self.metrics.upload_attempts.labels("ok").inc()
            await self._send_manifest("completed", manifest)
            shutil.rmtree(self.spool, ignore_errors=True)
            return Outcome(
                "completed",
                manifest.get("reason"),
                key,
                int(manifest["file_size"]),
                float(manifest["duration"]),
            )
        reason = (
            f"UPLOAD_FAILED after {attempts} attempts ({error}); "
            f"the file is kept at {path} and the upload can be retried"
        )
        await self._send_manifest("failed", manifest, reason=reason, upload_pending=True)
        return Outcome(
            "failed",
            reason,
            None,
            int(manifest["file_size"]),
            float(manifest["duration"]),
            str(path),
        )

    async def _put(self, path: Path, key: str, mime: str) -> None:
        await self.storage.ensure_ready()
        fh: io.BufferedReader = await asyncio.to_thread(path.open, "rb")
        try:
            size = os.fstat(fh.fileno()).st_size
            await self.storage.put(key, fh, size, mime)
        finally:
            fh.close()
        stored = await self.storage.stat(key)
        if stored is None or stored.size != size:
            raise OSError(f"storage holds {stored.size if stored else 'nothing'} of {size} bytes")

    async def _send_manifest(self, phase: str, manifest: dict[str, Any], **extra: Any) -> None:
        self.phase = phase
        self.metrics.set_phase(phase)
        if self.reporter is None:
            return
        body = {k: v for k, v in manifest.items() if k != "phase"}
        body.update(extra)
        body["phase"] = phase
        if phase != "failed":  # the kept path matters only while the file waits for storage
            body.pop("local_path", None)
        await self.reporter.send(body, attempts=5)

    async def retry_upload(self) -> Outcome:
        """Upload a file an earlier run kept, with the manifest it left beside it."""
        manifest = await asyncio.to_thread(self._kept_manifest)
        if manifest is None:
            return Outcome("failed", f"NOTHING_KEPT: no kept recording in {self.spool}")
        return await self.upload(manifest)

    def _kept_manifest(self) -> dict[str, Any] | None:
        path = self.spool / "manifest.json"
        if not path.is_file():
            return None
        manifest: dict[str, Any] = json.loads(path.read_text())
        return manifest if Path(manifest["local_path"]).is_file() else None


def _discard(frame: bytes, timestamp: int) -> None:
    """The sink of tracks this recording leaves out."""


def write_termination_log(path: Path, outcome: Outcome) -> None:
    """The one-line summary Kubernetes shows as the container's termination message."""
    with contextlib.suppress(OSError):
        if path.parent.is_dir():
            path.write_text(json.dumps(outcome.summary()) + "\n")


async def run_recorder(settings: Settings, options: RecorderOptions) -> Outcome:
    """Record (or retry an upload), report the outcome, return it."""
    if settings.recorder_token is None:
        raise SystemExit("KONFER_RECORDER_TOKEN is not set: the recorder needs its media token")
    token = settings.recorder_token.get_secret_value()
    recorder = Recorder(settings, options, token, storage_from_settings(settings))
    recorder.reporter = Reporter(settings, options.recording_id, token)
    if settings.recorder_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.recorder_metrics_port, registry=recorder.metrics.registry)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, recorder.stopping.set)
    if early_stop_requested():
        recorder.stopping.set()
    try:
        if options.retry_upload:
            outcome = await recorder.retry_upload()
        else:
            outcome = await recorder.record()
        if outcome.phase == "failed" and outcome.local_path is None:
            await recorder._send("failed", reason=outcome.reason)
        return outcome
    finally:
        await recorder.reporter.close()


def run(settings: Settings, options: RecorderOptions) -> int:
    """Blocking entry point of ``konfer recorder``; the process exit code."""
    import uvloop

    problems = hooks.check_compatibility()
    if problems:
        raise RuntimeError("aiortc does not match the recorder's hooks: " + "; ".join(problems))
    hooks.set_ice_hosts(settings.sfu_ice_hosts or None)
    # aiortc's own decoders and encoders are refused (and counted): a per-track recording
    # must never decode, and the count it reports proves it.
    hooks.codec_guard.install()
    outcome = uvloop.run(run_recorder(settings, options))
    write_termination_log(settings.recorder_termination_log, outcome)
    print(json.dumps(outcome.summary()), flush=True)
    if outcome.phase == "completed":
        return 0
    return EXIT_UPLOAD_FAILED if outcome.local_path else EXIT_FAILED
