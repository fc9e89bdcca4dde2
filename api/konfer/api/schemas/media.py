"""The media resource and the ffmpeg job requests/answers, in the documented shapes.

Field names follow the API document's examples (``media_id``, ``uploaded_by``,
``thumbnail_url``, ``job_id``, ``estimated_time`` …). Request bodies are ``Strict``;
their option values are checked here, their combinations (codec vs container, inputs
vs operation) in ``services.jobs``.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, StringConstraints

from konfer.api.schemas.common import Strict

AudioFormat = Literal["mp3", "wav", "ogg", "flac", "aac", "m4a"]
OutputFormat = Literal[
    "mp4", "webm", "mkv", "avi", "mov", "flv", "mp3", "wav", "ogg", "flac", "aac", "m4a"
]
ImageFormat = Literal["jpg", "png", "webp"]
VideoCodec = Literal["h264", "h265", "vp8", "vp9"]
AudioCodec = Literal["aac", "mp3", "opus", "vorbis", "flac"]
Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower"]
Quality = Literal["low", "medium", "high"]
Transition = Literal["none", "fade", "dissolve"]
Operation = Literal[
    "extract_audio", "extract_video", "generate_thumbnail", "compress", "convert_format"
]

RESOLUTION_PRESETS = {
    "240p": 240,
    "360p": 360,
    "480p": 480,
    "720p": 720,
    "1080p": 1080,
    "1440p": 1440,
    "2160p": 2160,
    "4k": 2160,
}
_RESOLUTION = re.compile(r"^(\d{2,5})x(\d{2,5})$")
_BITRATE = re.compile(r"^(\d+(?:\.\d+)?)([kKmM]?)$")


def parse_resolution(value: str) -> tuple[int | None, int]:
    """``WIDTHxHEIGHT`` (even numbers) or a preset like ``720p``: (width or None, height)."""
    text = value.strip().lower()
    if text in RESOLUTION_PRESETS:
        return None, RESOLUTION_PRESETS[text]
    match = _RESOLUTION.match(text)
    if not match:
        raise ValueError("use WIDTHxHEIGHT (e.g. 1280x720) or a preset: 240p … 1080p, 4k")
    width, height = int(match[1]), int(match[2])
    if not (16 <= width <= 7680 and 16 <= height <= 4320):
        raise ValueError("width must be 16-7680 and height 16-4320")
    if width % 2 or height % 2:
        raise ValueError("width and height must be even numbers")
    return width, height


def parse_bitrate(value: str | int) -> int:
    """``2000k``, ``5M`` or bits per second, between 8 kbit/s and 100 Mbit/s."""
    if isinstance(value, int):
        bps = value
    else:
        match = _BITRATE.match(value.strip())
        if not match:
            raise ValueError("use bits per second or a number with k or M, e.g. 2000k, 5M")
        factor = {"": 1, "k": 1000, "m": 1_000_000}[match[2].lower()]
        bps = int(float(match[1]) * factor)
    if not 8_000 <= bps <= 100_000_000:
        raise ValueError("must be between 8k and 100M")
    return bps


def _resolution(value: Any) -> Any:
    if isinstance(value, str):
        parse_resolution(value)
    return value


def _bitrate(value: Any) -> Any:
    if isinstance(value, str | int) and not isinstance(value, bool):
        parse_bitrate(value)
    return value


Resolution = Annotated[str, BeforeValidator(_resolution)]
Bitrate = Annotated[str | int, BeforeValidator(_bitrate)]


# --- media ------------------------------------------------------------------------------


class MediaPublic(BaseModel):
    """A media item, as ``/media/upload`` and ``/media/info/{id}`` return it."""

    media_id: uuid.UUID
    filename: str
    file_type: str
    size: int
    mime_type: str
    format: str
    duration: float | None
    resolution: str | None
    width: int | None
    height: int | None
    bitrate: int | None
    codec: str | None
    audio_codec: str | None
    frame_rate: float | None
    sample_rate: int | None
    channels: int | None
    meeting_id: uuid.UUID | None
    description: str | None
    url: str
    thumbnail_url: str | None
    source: str
    source_job_id: uuid.UUID | None
    uploaded_at: datetime
    uploaded_by: uuid.UUID
    download_count: int
    last_accessed: datetime | None


class MediaListData(BaseModel):
    media_files: list[MediaPublic]
    page: int
    page_size: int
    total: int


class MediaListFilters(BaseModel):
    file_type: str
    meeting_id: str
    user_id: str


class MediaList(BaseModel):
    data: MediaListData
    filters: MediaListFilters
    message: str
    offset: int


class MediaDeleted(BaseModel):
    message: str
    media_id: uuid.UUID


class ProcessRequest(Strict):
    media_id: uuid.UUID
    operations: Annotated[list[Operation], Field(min_length=1, max_length=5)]
    output_format: Annotated[str, StringConstraints(max_length=8)] | None = None
    quality: Quality | None = None


class ProcessAccepted(BaseModel):
    job_id: uuid.UUID
    status: str
    estimated_time: int
    message: str
    output_media_ids: list[uuid.UUID]


# --- ffmpeg jobs ------------------------------------------------------------------------


class TranscodeRequest(Strict):
    input_media_id: uuid.UUID
    output_format: OutputFormat
    video_codec: VideoCodec | None = None
    audio_codec: AudioCodec | None = None
    resolution: Resolution | None = None
    bitrate: Bitrate | None = None
    frame_rate: Annotated[int, Field(ge=1, le=120)] | None = None
    preset: Preset = "medium"


class TranscodeAccepted(BaseModel):
    job_id: uuid.UUID
    status: str
    input_media_id: uuid.UUID
    output_media_id: uuid.UUID
    output_format: str
    estimated_time: int
    created_at: datetime


class ExtractAudioRequest(Strict):
    video_media_id: uuid.UUID
    audio_format: AudioFormat = "mp3"
    audio_bitrate: Bitrate | None = None


class ExtractVideoRequest(Strict):
    media_id: uuid.UUID


class JobAccepted(BaseModel):
    job_id: uuid.UUID
    status: str
    output_media_id: uuid.UUID
    estimated_time: int


class MergeRequest(Strict):
    media_ids: Annotated[list[uuid.UUID], Field(min_length=2, max_length=10)]
    output_format: OutputFormat = "mp4"
    transition: Transition = "none"
    transition_duration: Annotated[float, Field(gt=0, le=5)] = 1.0


class ThumbnailRequest(Strict):
    media_id: uuid.UUID
    timestamp: Annotated[float, Field(ge=0, le=86_400)] = 0.0
    width: Annotated[int, Field(ge=16, le=3840)] = 320
    height: Annotated[int, Field(ge=16, le=2160)] = 180
    format: ImageFormat = "jpg"


class ThumbnailAnswer(BaseModel):
    thumbnail_id: uuid.UUID
    url: str
    width: int
    height: int
    format: str
    size: int | None
    job_id: uuid.UUID
    status: str


class JobStatusPublic(BaseModel):
    job_id: uuid.UUID
    kind: str
    status: str
    progress: int
    input_media_id: uuid.UUID | None
    input_media_ids: list[uuid.UUID]
    output_media_id: uuid.UUID | None
    output_media_ids: list[uuid.UUID]
    attempts: int
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    processing_time: float | None
    error: str | None
