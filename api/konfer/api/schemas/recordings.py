"""The recording resource in the documented shapes, and what a recorder reports."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from konfer.api.schemas.common import Pagination, Strict

RecordingFormat = Literal["mp4", "webm", "mkv"]
RecordingQuality = Literal["low", "medium", "high"]
RecordingLayout = Literal["grid", "speaker", "gallery", "per-track"]
RecordingStatusName = Literal["pending", "recording", "paused", "completed", "failed", "cancelled"]


class RecordingOptions(Strict):
    """What to record; ``/meetings/{id}/recording/start`` takes these alone."""

    format: RecordingFormat = Field(
        default="mp4",
        description="Requested container; tracks are never transcoded to fit it (VP8 "
        "recordings are WebM, H.264 with Opus MKV): the stored format is in the answer",
    )
    quality: RecordingQuality = "medium"
    record_audio: bool = True
    record_video: bool = True
    record_screen: bool = True
    layout: RecordingLayout = Field(
        default="per-track",
        description="per-track: one file, every track stream-copied (no decoding, almost no "
        "CPU); grid/gallery/speaker: a composed 1280x720 file (decoded and encoded again, "
        "made after stop) as the recording, with the per-track file kept beside it",
    )
    max_duration_seconds: int | None = Field(default=None, gt=0, le=24 * 3600)


class RecordingStart(RecordingOptions):
    meeting_id: uuid.UUID
    room_id: str | None = Field(default=None, max_length=64, description="The meeting id")


class RecordingStop(Strict):
    recording_id: uuid.UUID


class MeetingRecordingStop(Strict):
    """``/meetings/{id}/recording/stop``: the meeting's active recording, or this one."""

    recording_id: uuid.UUID | None = None


class RecordingPublic(BaseModel):
    recording_id: uuid.UUID
    meeting_id: uuid.UUID
    room_id: str
    status: RecordingStatusName
    reason: str | None = Field(description="Why it failed or was cancelled, or what it waits on")
    format: str = Field(description="The stored container (the requested one until stored)")
    requested_format: str
    quality: str
    layout: str
    started_at: datetime | None
    stopped_at: datetime | None
    completed_at: datetime | None
    duration: float = Field(description="Seconds recorded")
    file_size: int = Field(description="Bytes (the encoded media so far while recording)")
    estimated_size: int
    participants: int
    quality_metrics: dict[str, Any]
    tracks: list[dict[str, Any]]
    upload_pending: bool = Field(description="The file is kept by the recorder, not yet stored")
    file_path: str | None = Field(description="The object key in storage")
    tracks_file_path: str | None = Field(
        description="A composed recording's per-track (stream-copied) file, kept beside it"
    )
    output_path: str | None
    download_url: str | None
    media_id: uuid.UUID | None
    started_by: uuid.UUID
    created_at: datetime


class RecordingList(BaseModel):
    recordings: list[RecordingPublic]
    pagination: Pagination


class RecordingDeleted(BaseModel):
    message: str
    recording_id: uuid.UUID


class RecorderReport(BaseModel):
    """A recorder's status report (``/internal/recordings/{id}/report``)."""

    phase: Literal[
        "pending", "recording", "paused", "finalizing", "uploading", "completed", "failed"
    ]
    reason: str | None = Field(default=None, max_length=1000)
    duration: float = Field(default=0.0, ge=0)
    file_size: int = Field(default=0, ge=0)
    participants: int = Field(default=0, ge=0)
    tracks: list[dict[str, Any]] = Field(default_factory=list, max_length=500)
    quality_metrics: dict[str, Any] = Field(default_factory=dict)
    object_key: str | None = Field(default=None, max_length=512)
    format: str | None = Field(default=None, max_length=8)
    mime_type: str | None = Field(default=None, max_length=100)
    local_path: str | None = Field(default=None, max_length=1024)
    upload_pending: bool = False
    extra_files: list[dict[str, Any]] = Field(default_factory=list, max_length=10)
    started_at: float | None = Field(
        default=None,
        description="Unix time the first recorded frame was sent (least-delay estimate)",
    )


class RecorderAnswer(BaseModel):
    stop: bool = Field(description="The api wants the recorder to stop and finalize")
    stop_at: float | None = Field(
        default=None,
        description="Unix time the stop was asked for: the recorder ends the file there",
    )
    status: RecordingStatusName
    sfu_url: str | None = Field(
        default=None,
        description="Where the meeting's SFU is now; answered to a paused recorder so it "
        "can rejoin one that restarted elsewhere",
    )
