"""What a media operation is asked to do and what a probe found, without PyAV.

Plain data and tables: the codecs each container may carry, output plans, probe results,
the job-time estimate and the exceptions of ``ops``. The api process plans jobs and
checks requests with these alone, so it never loads PyAV (or Pillow) — that happens in
the job worker (``ops``, which re-exports all of this) and in the upload probe's child
process (``probe``). Imported by ``services.jobs``, ``services.media``, ``probe`` and ``ops``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MAX_DIMENSION = 7680
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower")

VIDEO_ENCODERS = {"h264": "libx264", "h265": "libx265", "vp8": "libvpx", "vp9": "libvpx-vp9"}
AUDIO_ENCODERS = {
    "aac": "aac",
    "mp3": "libmp3lame",
    "opus": "libopus",
    "vorbis": "vorbis",
    "flac": "flac",
    "pcm": "pcm_s16le",
}
# What each output container may carry, and its defaults (first of each list).
CONTAINER_CODECS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mp4": (("h264", "h265", "vp9"), ("aac", "mp3", "opus")),
    "webm": (("vp9", "vp8"), ("opus", "vorbis")),
    "mkv": (("h264", "h265", "vp8", "vp9"), ("aac", "opus", "mp3", "vorbis", "flac")),
    "avi": (("h264", "h265", "vp8", "vp9"), ("mp3", "aac")),
    "mov": (("h264", "h265"), ("aac", "mp3")),
    "flv": (("h264",), ("aac", "mp3")),
    "mp3": ((), ("mp3",)),
    "wav": ((), ("pcm",)),
    "ogg": ((), ("vorbis", "opus", "flac")),
    "flac": ((), ("flac",)),
    "aac": ((), ("aac",)),
    "m4a": ((), ("aac",)),
}
MUXERS = {
    "mp4": "mp4",
    "webm": "webm",
    "mkv": "matroska",
    "avi": "avi",
    "mov": "mov",
    "flv": "flv",
    "mp3": "mp3",
    "wav": "wav",
    "ogg": "ogg",
    "flac": "flac",
    "aac": "adts",
    "m4a": "ipod",
}
# A decoder's codec name -> our codec name, for stream copies and reporting.
CODEC_NAMES = {
    "h264": "h264",
    "hevc": "h265",
    "vp8": "vp8",
    "vp9": "vp9",
    "aac": "aac",
    "mp3": "mp3",
    "mp3float": "mp3",
    "opus": "opus",
    "vorbis": "vorbis",
    "flac": "flac",
    "pcm_s16le": "pcm",
}


class MediaError(Exception):
    """The input is not media this code can read, or asks for something impossible."""


class Cancelled(Exception):
    """Raised by a progress callback to stop an operation (job cancelled or lease lost)."""


# --- probing ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VideoInfo:
    codec: str
    width: int
    height: int
    frame_rate: float | None


@dataclass(frozen=True, slots=True)
class AudioInfo:
    codec: str
    sample_rate: int
    channels: int


@dataclass(frozen=True, slots=True)
class MediaInfo:
    demuxer: str
    duration: float | None
    bitrate: int | None
    video: VideoInfo | None
    audio: AudioInfo | None


# --- output plans ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VideoPlan:
    codec: str = "h264"
    width: int | None = None
    height: int | None = None
    fps: int | None = None
    bitrate: int | None = None
    preset: str = "medium"
    crf: int | None = None


@dataclass(frozen=True, slots=True)
class AudioPlan:
    codec: str = "aac"
    bitrate: int | None = None


@dataclass(frozen=True, slots=True)
class OutputPlan:
    container: str
    video: VideoPlan | None = None
    audio: AudioPlan | None = field(default_factory=AudioPlan)


def default_plan(container: str) -> OutputPlan:
    vcodecs, acodecs = CONTAINER_CODECS[container]
    return OutputPlan(
        container,
        VideoPlan(codec=vcodecs[0]) if vcodecs else None,
        AudioPlan(codec=acodecs[0]),
    )


def estimate_seconds(duration: float | None, pixels: int | None, kind: str) -> int:
    """A rough wall-time estimate for a job, for the ``estimated_time`` field."""
    seconds = duration or 10.0
    if kind in ("thumbnail", "extract_video"):
        return 1 if kind == "thumbnail" else max(1, math.ceil(seconds * 0.02))
    if kind == "extract_audio" or not pixels:
        return max(1, math.ceil(seconds * 0.05))
    return max(1, math.ceil(seconds * pixels / (640 * 480) * 0.3))
