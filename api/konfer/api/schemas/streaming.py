"""The live-stream resource in the documented shapes, and what a streamer reports."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from konfer.api.schemas.common import Pagination, Strict

StreamType = Literal["rtmp", "hls", "dash"]
StreamStatusName = Literal["pending", "streaming", "stopped", "failed"]


class StreamStart(Strict):
    meeting_id: uuid.UUID
    room_id: str | None = Field(default=None, max_length=64, description="The meeting id")
    stream_type: StreamType
    rtmp_url: str | None = Field(default=None, max_length=2048)
    quality: Literal["low", "medium", "high"] = "medium"
    bitrate: int | None = Field(default=None, ge=100_000, le=20_000_000)
    resolution: str | None = Field(default=None, pattern=r"^\d{2,4}x\d{2,4}$")
    user_id: uuid.UUID | None = Field(
        default=None, description="Whose camera and microphone; the first publisher if unset"
    )

    @field_validator("rtmp_url")
    @classmethod
    def _rtmp_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("rtmp://", "rtmps://")):
            raise ValueError("rtmp_url must start with rtmp:// or rtmps://")
        return value


class StreamStop(Strict):
    stream_id: uuid.UUID


class StreamPublic(BaseModel):
    stream_id: uuid.UUID
    meeting_id: uuid.UUID
    stream_type: StreamType
    status: StreamStatusName
    reason: str | None
    rtmp_url: str | None
    hls_url: str | None
    dash_url: str | None
    quality: str
    started_at: datetime | None
    stopped_at: datetime | None
    duration: int
    viewers: int
    current_viewers: int
    total_viewers: int
    peak_viewers: int
    quality_metrics: dict[str, Any]


class StreamList(BaseModel):
    filters: dict[str, str]
    message: str
    pagination: Pagination
    streams: list[StreamPublic]


class StreamerReport(BaseModel):
    status: Literal["pending", "streaming", "stopped", "failed"]
    reason: str | None = Field(default=None, max_length=1000)
    quality_metrics: dict[str, Any] = Field(default_factory=dict)


class StreamerAnswer(BaseModel):
    stop: bool
