"""Stream copy: encoded frames into files, timestamps from RTP, no decoder anywhere.

Each received track is appended as it arrives to its own spool file (``TrackWriter``:
length-prefixed frames with their timestamps, flushed as they come, so a crash loses at
most the frame being written and a track that joins late needs no header rewrite). When
the recording stops, ``assemble`` muxes every spool into the one file the user asked for
(WebM/MKV/MP4, one stream per track) by packet copy. Streams are created with PyAV's
``add_mux_stream``: there is no codec context, so nothing here can decode or encode. The
frames stay exactly as the publisher encoded them (VP8 frames, H.264 Annex B).

Timestamps: a track's packets carry its RTP timestamps (unwrapped, 90 kHz for video,
48 kHz for Opus) minus its first one. Where a track sits on the recording's timeline
(``offset``) comes from its least-delayed frame, not its first: the first frames often
arrive late and in a burst (the connection was still settling, or the machine was busy),
and anchoring on them would shift the track and make the file longer than the time it
covers. A stop asked for at a known moment cuts every track there (``trim``), so the
file ends when the user pressed stop, not when the recorder heard of it.
"""

from __future__ import annotations

import heapq
import logging
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import av

from konfer.sfu.recorder import bitstream

log = logging.getLogger(__name__)

_RECORD = struct.Struct("<IqB")  # frame length, pts (track clock), keyframe flag
CONTAINERS = {"webm": "webm", "mkv": "matroska", "mp4": "mp4"}
MIME_TYPES = {"webm": "video/webm", "mkv": "video/x-matroska", "mp4": "video/mp4"}
#: What each container can hold by stream copy (design §4). Opus in MP4 needs an OpusHead
#: ("dOps") that a copy stream without a codec context cannot carry, so MP4 takes H.264
#: alone (a video-only recording) and H.264 with Opus goes to MKV.
SUPPORTED = {
    "webm": {"vp8", "opus"},
    "mkv": {"vp8", "h264", "opus"},
    "mp4": {"h264"},
}


def choose_format(requested: str, codecs: set[str]) -> str:
    """The requested container if it can hold every codec by copy, else the closest one.

    VP8 cannot go into MP4 without transcoding, so an MP4 request with VP8 tracks gets
    WebM (or MKV when H.264 is mixed in): the recording is never transcoded to fit.
    """
    if codecs <= SUPPORTED.get(requested, set()):
        return requested
    if codecs <= SUPPORTED["webm"]:
        return "webm"
    return "mkv"


@dataclass
class TrackStats:
    frames: int = 0
    bytes: int = 0
    keyframes: int = 0
    skipped_before_keyframe: int = 0
    discontinuities: int = 0


@dataclass
class TrackWriter:
    """One received track appended, encoded and untouched, to its own spool file."""

    path: Path
    track_id: str
    user_id: str
    source: str
    kind: str
    codec: str  # vp8 | h264 | opus
    clock_rate: int
    t0: float  # recording start (monotonic): the zero of every track's offset
    stats: TrackStats = field(default_factory=TrackStats)
    #: Seconds after t0 at which this track's pts 0 was sent: the smallest
    #: ``arrival - pts`` seen, i.e. measured on the frame that waited least on the way.
    offset: float | None = None
    end_pts: int | None = None  # frames after this are left out (``trim``)
    width: int = 0
    height: int = 0
    first_ts: int | None = None
    last_pts: int = -1
    last_arrival: float | None = None  # monotonic time the last frame written arrived
    _ts_high: int = 0
    _ts_last: int | None = None
    _out: BinaryIO | None = None
    closed: bool = False

    @property
    def started(self) -> bool:
        return self._out is not None

    @property
    def duration(self) -> float:
        if not self.started:
            return 0.0
        last = self.last_pts if self.end_pts is None else min(self.last_pts, self.end_pts)
        return max(last, 0) / self.clock_rate

    @property
    def end(self) -> float:
        """Where the track ends on the recording's timeline (s after t0), trim included."""
        return (self.offset or 0.0) + self.duration

    def trim(self, until: float) -> None:
        """End the track at ``until`` seconds after t0 (it keeps at least its first frame)."""
        if self.started and self.offset is not None:
            self.end_pts = max(0, int((until - self.offset) * self.clock_rate))

    def frames(self) -> Iterator[tuple[int, bool, bytes]]:
        """(pts, keyframe, frame) of the spool, up to the trim point."""
        for pts, key, frame in read_spool(self.path):
            if self.end_pts is not None and pts > self.end_pts:
                return
            yield pts, key, frame

    def _unwrap(self, ts: int) -> int:
        if self._ts_last is not None:
            if ts < self._ts_last and self._ts_last - ts > 0x80000000:
                self._ts_high += 1 << 32
            elif ts > self._ts_last and ts - self._ts_last > 0x80000000:
                return self._ts_high - (1 << 32) + ts  # a late packet from before a wrap
        self._ts_last = ts
        return self._ts_high + ts

    def _open(self, frame: bytes) -> bool:
        if self.kind == "video":
            size = bitstream.picture_size(self.codec, frame)
            if size is None:
                return False
            self.width, self.height = size
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._out = self.path.open("wb", buffering=0)
        return True

    def write(self, frame: bytes, rtp_timestamp: int, arrived: float | None = None) -> bool:
        """Append one encoded frame; False while a video track waits for its keyframe."""
        if self.closed or not frame:
            return False
        ts = self._unwrap(rtp_timestamp)
        if self._out is None:
            if self.kind == "video" and not bitstream.is_keyframe(self.codec, frame):
                self.stats.skipped_before_keyframe += 1
                return False
            if not self._open(frame):
                self.stats.skipped_before_keyframe += 1
                return False
            self.first_ts = ts
        assert self.first_ts is not None
        pts = ts - self.first_ts
        if pts <= self.last_pts:  # a publisher restarted its clock, or a stale frame
            self.stats.discontinuities += 1
            pts = self.last_pts + 1
        arrived = arrived or time.monotonic()
        sent = arrived - self.t0 - pts / self.clock_rate
        if self.offset is None or sent < self.offset:
            self.offset = sent
        key = bitstream.is_keyframe(self.codec, frame)
        assert self._out is not None
        self._out.write(_RECORD.pack(len(frame), pts, int(key)) + frame)
        self.last_pts = pts
        self.last_arrival = arrived
        self.stats.frames += 1
        self.stats.bytes += len(frame)
        self.stats.keyframes += int(key)
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._out is not None:
            self._out.close()

    def describe(self) -> dict[str, Any]:
        return {
            "track_id": self.track_id,
            "user_id": self.user_id,
            "source": self.source,
            "kind": self.kind,
            "codec": self.codec,
            "offset": round(self.offset or 0.0, 3),
            "duration": round(self.duration, 3),
            "frames": self.stats.frames,
            "bytes": self.stats.bytes,
            "keyframes": self.stats.keyframes,
            "width": self.width or None,
            "height": self.height or None,
        }


@dataclass(frozen=True, slots=True)
class Assembled:
    path: Path
    format: str
    size: int
    duration: float
    streams: int


def read_spool(path: Path) -> Iterator[tuple[int, bool, bytes]]:
    """(pts, keyframe, frame) of a spool file; a torn last record (crash) is dropped."""
    with path.open("rb") as fh:
        while True:
            head = fh.read(_RECORD.size)
            if len(head) < _RECORD.size:
                return
            size, pts, key = _RECORD.unpack(head)
            frame = fh.read(size)
            if len(frame) < size:
                return
            yield pts, bool(key), frame


def _packets(
    track: TrackWriter, out_stream: Any, offset: float, order: int
) -> Iterator[tuple[float, int, av.Packet[Any]]]:
    tb = Fraction(1, track.clock_rate)
    shift = round(offset * track.clock_rate)
    for pts, key, frame in track.frames():
        packet = av.Packet(frame)
        packet.pts = packet.dts = pts + shift
        packet.time_base = tb
        packet.is_keyframe = key
        packet.stream = out_stream
        yield float((pts + shift) * tb), order, packet


def assemble(tracks: list[TrackWriter], path: Path, requested: str) -> Assembled:
    """Remux the finished track files into one file, by packet copy, interleaved in time."""
    started = [t for t in tracks if t.started and t.stats.frames]
    if not started:
        raise ValueError("nothing was recorded: no track delivered a frame")
    fmt = choose_format(requested, {t.codec for t in started})
    path = path.with_suffix(f".{fmt}")
    base = min(t.offset or 0.0 for t in started)
    with av.open(str(path), "w", format=CONTAINERS[fmt]) as out:
        merged: list[Iterator[tuple[float, int, av.Packet[Any]]]] = []
        for order, t in enumerate(sorted(started, key=lambda t: (t.kind != "video", t.offset))):
            if t.kind == "audio":
                stream = out.add_mux_stream(t.codec, rate=t.clock_rate)
            else:
                stream = out.add_mux_stream(t.codec, width=t.width, height=t.height)
            stream.time_base = Fraction(1, t.clock_rate)
            stream.metadata["title"] = f"{t.user_id} {t.source}"
            merged.append(_packets(t, stream, (t.offset or 0.0) - base, order))
        for _at, _order, packet in heapq.merge(*merged, key=lambda item: (item[0], item[1])):
            out.mux(packet)
    duration = max((t.offset or 0.0) - base + t.duration for t in started)
    return Assembled(path, fmt, path.stat().st_size, duration, len(started))
