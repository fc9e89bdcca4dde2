"""meeting recordings and live streams

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from konfer.api.db.base import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recordings",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "meeting_id",
            sa.Uuid(),
            sa.ForeignKey("meetings.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("started_by", sa.Uuid(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=True),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("container", sa.String(8), nullable=True),
        sa.Column("quality", sa.String(8), nullable=False),
        sa.Column("layout", sa.String(16), nullable=False),
        sa.Column("record_audio", sa.Boolean(), nullable=False),
        sa.Column("record_video", sa.Boolean(), nullable=False),
        sa.Column("record_screen", sa.Boolean(), nullable=False),
        sa.Column("max_duration_seconds", sa.Integer(), nullable=True),
        sa.Column("object_key", sa.String(512), nullable=True),
        sa.Column("extra_object_keys", sa.JSON(), nullable=False),
        sa.Column("mime_type", sa.String(100), nullable=True),
        sa.Column("local_path", sa.String(1024), nullable=True),
        sa.Column("upload_pending", sa.Boolean(), nullable=False),
        sa.Column("stop_requested", sa.Boolean(), nullable=False),
        sa.Column("file_size", sa.BigInteger(), nullable=False),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.Column("participants", sa.Integer(), nullable=False),
        sa.Column("quality_metrics", sa.JSON(), nullable=False),
        sa.Column("tracks", sa.JSON(), nullable=False),
        sa.Column("media_id", sa.Uuid(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("stopped_at", UTCDateTime(), nullable=True),
        sa.Column("completed_at", UTCDateTime(), nullable=True),
        sa.Column("last_report_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_recordings_meeting_created", "recordings", ["meeting_id", "created_at"])
    op.create_index("ix_recordings_status", "recordings", ["status"])

    op.create_table(
        "live_streams",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "meeting_id",
            sa.Uuid(),
            sa.ForeignKey("meetings.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("started_by", sa.Uuid(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("stream_type", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=True),
        sa.Column("rtmp_url", sa.String(2048), nullable=True),
        sa.Column("quality", sa.String(8), nullable=False),
        sa.Column("bitrate", sa.Integer(), nullable=True),
        sa.Column("resolution", sa.String(16), nullable=True),
        sa.Column("stop_requested", sa.Boolean(), nullable=False),
        sa.Column("total_viewers", sa.Integer(), nullable=False),
        sa.Column("peak_viewers", sa.Integer(), nullable=False),
        sa.Column("quality_metrics", sa.JSON(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("stopped_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_live_streams_meeting_created", "live_streams", ["meeting_id", "created_at"])
    op.create_index("ix_live_streams_status", "live_streams", ["status"])


def downgrade() -> None:
    op.drop_table("live_streams")
    op.drop_table("recordings")
