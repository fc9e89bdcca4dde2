"""Identity tables: users, login sessions (refresh-token families), password resets, mail;
meetings with participants and chat; the media library and its processing jobs.

An access token names its session (``sid``); the request's user lookup joins the session,
so logout, ban, password change and account deletion take effect on the very next request
without a second store.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from konfer.api.db.base import Base, UTCDateTime
from konfer.core.timeutil import utcnow


class Role(StrEnum):
    admin = "admin"
    user = "user"


class UserStatus(StrEnum):
    active = "active"
    banned = "banned"
    deleted = "deleted"


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(64))
    email: Mapped[str | None] = mapped_column(String(320))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    nickname: Mapped[str | None] = mapped_column(String(100))
    bio: Mapped[str | None] = mapped_column(String(500))
    avatar_url: Mapped[str | None] = mapped_column(String(2048))
    avatar_key: Mapped[str | None] = mapped_column(String(512))
    role: Mapped[str] = mapped_column(String(16), default=Role.user.value)
    status: Mapped[str] = mapped_column(String(16), default=UserStatus.active.value)
    ban_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("uq_users_username_lower", func.lower(username), unique=True),
        Index("uq_users_email_lower", func.lower(email), unique=True),
        Index("ix_users_created_at", "created_at"),
    )


class AuthSession(Base):
    """One sign-in: a refresh-token family and the access tokens minted from it."""

    __tablename__ = "auth_sessions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoke_reason: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    ip: Mapped[str | None] = mapped_column(String(64))


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("auth_sessions.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PasswordReset(Base):
    __tablename__ = "password_resets"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OutboxEmail(Base):
    """Mail waiting for (or done with) delivery; kept so nothing is lost when SMTP is down."""

    __tablename__ = "outbox_emails"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    to_address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(String(500))


class MeetingStatus(StrEnum):
    scheduled = "scheduled"
    in_progress = "in_progress"
    ended = "ended"


class MeetingRole(StrEnum):
    host = "host"
    co_host = "co-host"
    participant = "participant"
    viewer = "viewer"


class Meeting(Base):
    __tablename__ = "meetings"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(String(2000))
    creator_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    start_time: Mapped[datetime] = mapped_column(UTCDateTime)
    end_time: Mapped[datetime] = mapped_column(UTCDateTime)
    max_participants: Mapped[int] = mapped_column(default=100)
    meeting_type: Mapped[str] = mapped_column(String(16), default="video")
    password_hash: Mapped[str | None] = mapped_column(String(255))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=MeetingStatus.scheduled.value)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_meetings_status_start", "status", "start_time"),)


class Participant(Base):
    """A user's membership of a meeting: role, and whether they are in it right now."""

    __tablename__ = "participants"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    meeting_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("meetings.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    role: Mapped[str] = mapped_column(String(16), default=MeetingRole.participant.value)
    joined_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("meeting_id", "user_id", name="uq_participants_meeting_user"),
    )


class ChatMessage(Base):
    __tablename__ = "chat_messages"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    meeting_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_chat_messages_meeting_created", "meeting_id", "created_at"),)


class MediaSource(StrEnum):
    upload = "upload"
    job = "job"


class Media(Base):
    """A file of the media library: an upload, or the output of a processing job."""

    __tablename__ = "media"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    meeting_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("meetings.id", ondelete="SET NULL"), index=True
    )
    filename: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(1000))
    file_type: Mapped[str] = mapped_column(String(16))
    container: Mapped[str] = mapped_column(String(16))
    mime_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    object_key: Mapped[str] = mapped_column(String(512))
    thumbnail_key: Mapped[str | None] = mapped_column(String(512))
    duration: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column()
    height: Mapped[int | None] = mapped_column()
    bitrate: Mapped[int | None] = mapped_column(BigInteger)
    video_codec: Mapped[str | None] = mapped_column(String(32))
    audio_codec: Mapped[str | None] = mapped_column(String(32))
    frame_rate: Mapped[float | None] = mapped_column(Float)
    sample_rate: Mapped[int | None] = mapped_column()
    channels: Mapped[int | None] = mapped_column()
    source: Mapped[str] = mapped_column(String(16), default=MediaSource.upload.value)
    source_job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    download_count: Mapped[int] = mapped_column(default=0)
    last_accessed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_media_owner_created", "owner_id", "created_at"),
        Index("ix_media_created_at", "created_at"),
    )


class JobStatus(StrEnum):
    queued = "queued"
    processing = "processing"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class MediaJob(Base):
    """A durable processing job, claimed by one worker at a time under a lease.

    ``claimed_by`` + ``attempts`` fence a claim: a worker's progress and completion writes
    match both, so a worker whose lease expired (and whose job another worker took) can no
    longer change the row.
    """

    __tablename__ = "media_jobs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued.value)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    input_media_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    input_media_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    output_media_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    output_media_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_media_jobs_status_created", "status", "created_at"),)


class RecordingStatus(StrEnum):
    pending = "pending"
    recording = "recording"
    paused = "paused"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class Recording(Base):
    """One recording of a meeting, written by a ``konfer recorder`` process.

    The recorder reports its phase here (``/internal/recordings/{id}/report``);
    ``upload_pending`` with ``local_path`` means the file exists but storage refused it,
    and a retry can still complete it.
    """

    __tablename__ = "recordings"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    meeting_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"))
    started_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(16), default=RecordingStatus.pending.value)
    phase: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str | None] = mapped_column(String(1000))
    format: Mapped[str] = mapped_column(String(8))
    container: Mapped[str | None] = mapped_column(String(8))
    quality: Mapped[str] = mapped_column(String(8), default="medium")
    layout: Mapped[str] = mapped_column(String(16), default="grid")
    record_audio: Mapped[bool] = mapped_column(default=True)
    record_video: Mapped[bool] = mapped_column(default=True)
    record_screen: Mapped[bool] = mapped_column(default=True)
    max_duration_seconds: Mapped[int | None] = mapped_column()
    object_key: Mapped[str | None] = mapped_column(String(512))
    extra_object_keys: Mapped[list[str]] = mapped_column(JSON, default=list)
    mime_type: Mapped[str | None] = mapped_column(String(100))
    local_path: Mapped[str | None] = mapped_column(String(1024))
    upload_pending: Mapped[bool] = mapped_column(default=False)
    stop_requested: Mapped[bool] = mapped_column(default=False)
    file_size: Mapped[int] = mapped_column(BigInteger, default=0)
    duration: Mapped[float] = mapped_column(Float, default=0.0)
    participants: Mapped[int] = mapped_column(default=0)
    quality_metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    tracks: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    media_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_report_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        Index("ix_recordings_meeting_created", "meeting_id", "created_at"),
        Index("ix_recordings_status", "status"),
    )


class StreamStatus(StrEnum):
    pending = "pending"
    streaming = "streaming"
    stopped = "stopped"
    failed = "failed"


class LiveStream(Base):
    """One live stream of a meeting (HLS, DASH or RTMP), run by a ``konfer streamer``."""

    __tablename__ = "live_streams"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    meeting_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"))
    started_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    stream_type: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default=StreamStatus.pending.value)
    reason: Mapped[str | None] = mapped_column(String(1000))
    rtmp_url: Mapped[str | None] = mapped_column(String(2048))
    quality: Mapped[str] = mapped_column(String(8), default="medium")
    bitrate: Mapped[int | None] = mapped_column()
    resolution: Mapped[str | None] = mapped_column(String(16))
    stop_requested: Mapped[bool] = mapped_column(default=False)
    total_viewers: Mapped[int] = mapped_column(default=0)
    peak_viewers: Mapped[int] = mapped_column(default=0)
    quality_metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        Index("ix_live_streams_meeting_created", "meeting_id", "created_at"),
        Index("ix_live_streams_status", "status"),
    )
