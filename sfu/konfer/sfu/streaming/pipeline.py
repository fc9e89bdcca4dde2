"""One live output (HLS, DASH or RTMP) fed with encoded frames from the SFU.

Every frame arrives from a recorder-style tap (encoded, with its RTP timestamp) and goes
through a queue to one thread that owns the PyAV output, so a slow muxer, encoder or
network never stalls the event loop that receives media. What each kind does (design §4):

* DASH: WebM segments; VP8 (or H.264 in MP4 segments) and Opus are copied, nothing is
  transcoded.
* HLS: H.264 is copied (VP8 is transcoded to H.264), Opus becomes AAC; MPEG-TS segments
  and a playlist in a local folder that ``worker`` uploads to storage as they complete.
* RTMP: FLV to the given URL: H.264 copied or VP8 transcoded, AAC audio.

Called by ``worker``; reads nothing but the frames it is given.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.audio.fifo import AudioFifo
from av.audio.resampler import AudioResampler
from av.codec.context import Flags

from konfer.sfu.recorder import bitstream

log = logging.getLogger(__name__)

VIDEO_RATE = 90000
AUDIO_RATE = 48000
GOP_SECONDS = 1
_STOP = object()


@dataclass
class PipelineStats:
    video_frames: int = 0
    audio_frames: int = 0
    bytes_in: int = 0
    dropped_frames: int = 0
    encoding_errors: int = 0
    transcoded_video: bool = False
    transcoded_audio: bool = False
    width: int = 0
    height: int = 0
    started: float | None = None


@dataclass
class _Clock:
    """RTP timestamps of one track → seconds since the stream's start."""

    rate: int
    offset: float = 0.0
    first: int | None = None
    high: int = 0
    last: int | None = None

    def seconds(self, ts: int) -> float:
        if self.last is not None and ts < self.last and self.last - ts > 0x80000000:
            self.high += 1 << 32
        self.last = ts
        full = self.high + ts
        if self.first is None:
            self.first = full
        return self.offset + (full - self.first) / self.rate


@dataclass
class Pipeline:
    """The PyAV side of one live output, run in its own thread."""

    kind: str  # hls | dash | rtmp
    target: str  # a folder (hls, dash) or an rtmp:// URL
    video_codec: str | None
    audio_codec: str | None
    video_bitrate: int = 1_500_000
    stats: PipelineStats = field(default_factory=PipelineStats)
    error: str | None = None
    _queue: queue.Queue[Any] = field(default_factory=lambda: queue.Queue(maxsize=2000))
    _thread: threading.Thread | None = None
    _t0: float | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"stream-{self.kind}", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def push(self, kind: str, frame: bytes, timestamp: int) -> None:
        """From the event loop: hand one encoded frame over (dropped if the thread lags)."""
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        try:
            self._queue.put_nowait((kind, frame, timestamp, now - self._t0))
        except queue.Full:
            self.stats.dropped_frames += 1

    def stop(self, timeout: float = 30.0) -> None:
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)

    # --- the thread ------------------------------------------------------------------

    def _open(self) -> Any:
        if self.kind == "hls":
            folder = Path(self.target)
            folder.mkdir(parents=True, exist_ok=True)
            return av.open(
                str(folder / "playlist.m3u8"),
                "w",
                format="hls",
                options={
                    "hls_time": "2",
                    "hls_list_size": "0",
                    "hls_flags": "independent_segments+temp_file",
                    "hls_segment_filename": str(folder / "segment%05d.ts"),
                },
            )
        if self.kind == "dash":
            folder = Path(self.target)
            folder.mkdir(parents=True, exist_ok=True)
            webm = self.video_codec in (None, "vp8")
            return av.open(
                str(folder / "manifest.mpd"),
                "w",
                format="dash",
                options={
                    "dash_segment_type": "webm" if webm else "mp4",
                    "seg_duration": "2",
                    "use_template": "1",
                    "use_timeline": "1",
                    "streaming": "1",
                },
            )
        return av.open(self.target, "w", format="flv")

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:
            log.exception("live output failed")
            self.error = f"{type(exc).__name__}: {exc}"

    def _loop(self) -> None:
        out: Any = None
        vstream: Any = None
        astream: Any = None
        vdec: Any = None
        adec: Any = None
        resampler: AudioResampler | None = None
        fifo: AudioFifo | None = None
        vclock = _Clock(VIDEO_RATE)
        aclock = _Clock(AUDIO_RATE)
        pending_audio: list[tuple[bytes, int, float]] = []
        copy_video = self.video_codec == "h264" or (
            self.kind == "dash" and self.video_codec == "vp8"
        )
        copy_audio = self.kind == "dash"
        audio_samples = 0
        last_vpts = -1

        def open_output(width: int, height: int) -> None:
            nonlocal out, vstream, astream, vdec, adec, resampler, fifo
            out = self._open()
            if self.video_codec is not None:
                if copy_video:
                    vstream = out.add_mux_stream(self.video_codec, width=width, height=height)
                    vstream.time_base = Fraction(1, VIDEO_RATE)
                else:
                    self.stats.transcoded_video = True
                    vdec = av.CodecContext.create(self.video_codec, "r")
                    vstream = out.add_stream("libx264", rate=30)
                    vstream.width, vstream.height = width, height
                    vstream.pix_fmt = "yuv420p"
                    vstream.bit_rate = self.video_bitrate
                    vstream.codec_context.options = {
                        "preset": "ultrafast",
                        "tune": "zerolatency",
                        "g": str(30 * GOP_SECONDS),
                    }
                    if self.kind == "rtmp":
                        vstream.codec_context.flags |= Flags.global_header
            if self.audio_codec is not None:
                if copy_audio:
                    astream = out.add_mux_stream("opus", rate=AUDIO_RATE)
                    astream.time_base = Fraction(1, AUDIO_RATE)
                else:
                    self.stats.transcoded_audio = True
                    adec = av.CodecContext.create("opus", "r")
                    astream = out.add_stream("aac", rate=AUDIO_RATE)
                    astream.layout = "stereo"
                    if self.kind == "rtmp":
                        astream.codec_context.flags |= Flags.global_header
                    resampler = AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
                    fifo = AudioFifo()

        def write_audio(frame: bytes, ts: int, arrived: float) -> None:
            nonlocal audio_samples
            if aclock.first is None:
                aclock.offset = arrived
            at = aclock.seconds(ts)
            if copy_audio:
                packet = av.Packet(frame)
                packet.pts = packet.dts = round(at * AUDIO_RATE)
                packet.time_base = Fraction(1, AUDIO_RATE)
                packet.stream = astream
                out.mux(packet)
                return
            assert adec is not None
            assert resampler is not None
            assert fifo is not None
            for decoded in adec.decode(av.Packet(frame)):
                for converted in resampler.resample(decoded):
                    converted.pts = None
                    fifo.write(converted)
            while fifo.samples >= 1024:
                chunk = fifo.read(1024)
                if chunk is None:
                    break
                if audio_samples == 0:
                    audio_samples = round(at * AUDIO_RATE)
                chunk.pts = audio_samples
                chunk.time_base = Fraction(1, AUDIO_RATE)
                chunk.sample_rate = AUDIO_RATE
                audio_samples += 1024
                for packet in astream.encode(chunk):
                    out.mux(packet)

        def write_video(frame: bytes, ts: int, arrived: float) -> None:
            if vclock.first is None:
                vclock.offset = arrived
            at = vclock.seconds(ts)
            if vdec is None:
                packet = av.Packet(frame)
                packet.pts = packet.dts = round(at * VIDEO_RATE)
                packet.time_base = Fraction(1, VIDEO_RATE)
                packet.is_keyframe = bitstream.is_keyframe(self.video_codec or "", frame)
                packet.stream = vstream
                out.mux(packet)
                return
            nonlocal last_vpts
            for decoded in vdec.decode(av.Packet(frame)):
                image = decoded.reformat(
                    width=vstream.width, height=vstream.height, format="yuv420p"
                )
                last_vpts = max(round(at * 30), last_vpts + 1)
                image.pts = last_vpts
                image.time_base = Fraction(1, 30)
                for packet in vstream.encode(image):
                    out.mux(packet)

        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            kind, frame, ts, arrived = item
            self.stats.bytes_in += len(frame)
            if out is None:
                if kind == "video" or self.video_codec is None:
                    size = (0, 0)
                    if kind == "video":
                        if not bitstream.is_keyframe(self.video_codec or "", frame):
                            self.stats.dropped_frames += 1
                            continue
                        found = bitstream.picture_size(self.video_codec or "", frame)
                        if found is None:
                            self.stats.dropped_frames += 1
                            continue
                        size = found
                    self.stats.width, self.stats.height = size
                    open_output(*size)
                    self.stats.started = time.time()
                    for queued in pending_audio:
                        write_audio(*queued)
                    pending_audio.clear()
                else:
                    pending_audio.append((frame, ts, arrived))
                    if len(pending_audio) > 500:
                        pending_audio.pop(0)
                    continue
            try:
                if kind == "video":
                    if vstream is None:
                        continue
                    write_video(frame, ts, arrived)
                    self.stats.video_frames += 1
                elif astream is not None:
                    write_audio(frame, ts, arrived)
                    self.stats.audio_frames += 1
            except (av.FFmpegError, ValueError) as exc:
                self.stats.encoding_errors += 1
                log.warning("live output skipped a frame: %s", exc)
        if out is not None:
            if vdec is not None:
                for packet in vstream.encode(None):
                    out.mux(packet)
            if adec is not None and astream is not None:
                for packet in astream.encode(None):
                    out.mux(packet)
            out.close()
