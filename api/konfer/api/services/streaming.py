"""Live streams: starting and stopping ``konfer streamer`` workers, their reports, viewers.

Called by ``routers.streaming`` and, when a meeting ends, by ``routers.meetings``. Who may
do what: the meeting's hosts and co-hosts start and stop streams; its members (and
admins) see them. HLS and DASH files are served to anyone holding the stream's URL (its
id is unguessable), because players cannot send bearer tokens; each playlist/manifest
request counts its viewer (address + user agent) for 30 seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, cast

from redis.asyncio import Redis
from sqlalchemy import CursorResult, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from konfer.api.db.models import LiveStream, Meeting, Participant, StreamStatus
from konfer.api.deps import Principal
from konfer.api.runtime.recorders import StreamerSpec
from konfer.api.schemas.common import PageParams
from konfer.api.schemas.streaming import StreamerReport, StreamPublic, StreamStart
from konfer.api.services import meetings as meeting_service
from konfer.api.services import recordings as recording_service
from konfer.api.state import AppState
from konfer.core.errors import (
    Conflict,
    InsufficientPermissions,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
)
from konfer.core.storage import live_stream_folder
from konfer.core.timeutil import isoformat, utcnow
from konfer.core.tokens import MediaGrants

if TYPE_CHECKING:
    from konfer.api.runtime.streamer_watch import StreamerEnd

log = logging.getLogger(__name__)

ACTIVE = frozenset({StreamStatus.pending.value, StreamStatus.streaming.value})
VIEWER_WINDOW_SECONDS = 30.0
STOP_WAIT_SECONDS = 20.0
BITRATES = {"low": 600_000, "medium": 1_500_000, "high": 3_000_000}


def not_found(stream_id: uuid.UUID | str) -> NotFound:
    return NotFound(f"Stream with ID '{stream_id}' not found")


class Viewers:
    """Who watched a stream: now (last 30 s), ever, and the most at once."""

    def __init__(self, redis: Redis | None) -> None:
        self.redis = redis
        self._recent: dict[str, dict[str, float]] = {}
        self._ever: dict[str, set[str]] = {}
        self._peak: dict[str, int] = {}

    @staticmethod
    def key_of(address: str, agent: str) -> str:
        return hashlib.sha256(f"{address}|{agent}".encode()).hexdigest()[:16]

    async def seen(self, stream_id: str, viewer: str) -> None:
        now = time.time()
        if self.redis is not None:
            recent, ever, peak = (f"konfer:viewers:{stream_id}:{k}" for k in ("now", "all", "peak"))
            pipe = self.redis.pipeline()
            pipe.zadd(recent, {viewer: now})
            pipe.zremrangebyscore(recent, 0, now - VIEWER_WINDOW_SECONDS)
            pipe.zcard(recent)
            pipe.sadd(ever, viewer)
            for key in (recent, ever, peak):
                pipe.expire(key, 7 * 24 * 3600)
            result = await pipe.execute()
            current = int(result[2])
            old = await self.redis.get(peak)
            if old is None or int(old) < current:
                await self.redis.set(peak, current, ex=7 * 24 * 3600)
            return
        recent_m = self._recent.setdefault(stream_id, {})
        recent_m[viewer] = now
        for k in [k for k, t in recent_m.items() if t < now - VIEWER_WINDOW_SECONDS]:
            del recent_m[k]
        self._ever.setdefault(stream_id, set()).add(viewer)
        self._peak[stream_id] = max(self._peak.get(stream_id, 0), len(recent_m))

    async def counts(self, stream_id: str) -> tuple[int, int, int]:
        """(current, total, peak)."""
        now = time.time()
        if self.redis is not None:
            base = f"konfer:viewers:{stream_id}"
            current = await self.redis.zcount(f"{base}:now", now - VIEWER_WINDOW_SECONDS, "+inf")
            total = await self.redis.scard(f"{base}:all")  # type: ignore[misc]
            peak = await self.redis.get(f"{base}:peak")
            return int(current), int(total), int(peak or 0)
        recent = self._recent.get(stream_id, {})
        current = sum(1 for t in recent.values() if t >= now - VIEWER_WINDOW_SECONDS)
        return current, len(self._ever.get(stream_id, ())), self._peak.get(stream_id, 0)


_viewers: dict[str, Viewers] = {}


def viewers(state: AppState) -> Viewers:
    """This replica's counter (shared through Redis when there is one)."""
    found = _viewers.get(state.replica_id)
    if found is None:
        found = _viewers[state.replica_id] = Viewers(state.redis)
    return found


async def public(state: AppState, stream: LiveStream) -> StreamPublic:
    current, total, peak = await viewers(state).counts(str(stream.id))
    base = f"{state.settings.resolved_public_url}/api/v1/streaming"
    end = stream.stopped_at or utcnow()
    duration = int((end - stream.started_at).total_seconds()) if stream.started_at else 0
    return StreamPublic(
        stream_id=stream.id,
        meeting_id=stream.meeting_id,
        stream_type=stream.stream_type,
        status=stream.status,
        reason=stream.reason,
        rtmp_url=stream.rtmp_url,
        hls_url=f"{base}/hls/{stream.id}/playlist.m3u8" if stream.stream_type == "hls" else None,
        dash_url=f"{base}/dash/{stream.id}/manifest.mpd" if stream.stream_type == "dash" else None,
        quality=stream.quality,
        started_at=stream.started_at,
        stopped_at=stream.stopped_at,
        duration=duration,
        viewers=current,
        current_viewers=current,
        total_viewers=max(total, stream.total_viewers),
        peak_viewers=max(peak, stream.peak_viewers),
        quality_metrics=stream.quality_metrics or {},
    )


def streamer_token(state: AppState, stream: LiveStream) -> str:
    grants = MediaGrants(
        room=str(stream.meeting_id),
        can_publish=False,
        can_subscribe=True,
        can_publish_sources=[],
        hidden=True,
        recorder=True,
    )
    ttl = state.settings.recording_max_duration_seconds + 3600
    return state.tokens.issue_media(stream.id, "konfer-streamer", grants, ttl)


async def start(
    session: AsyncSession, state: AppState, principal: Principal, body: StreamStart
) -> LiveStream:
    meeting, role = await recording_service.visible_meeting(session, principal, body.meeting_id)
    recording_service.ensure_manages(role)
    meeting_service.ensure_not_ended(meeting)
    if body.room_id is not None and body.room_id != str(meeting.id):
        raise ValidationFailed("room_id must be the meeting's id", details={"room_id": "mismatch"})
    if body.stream_type == "rtmp" and not body.rtmp_url:
        raise ValidationFailed(
            "rtmp_url is required for an rtmp stream", details={"rtmp_url": "required"}
        )
    if state.sfu_runtime is None or state.recorder_runtime is None:
        raise ServiceUnavailable("Live streaming needs the SFU media mode (KONFER_SFU_ENABLED)")
    stream = LiveStream(
        meeting_id=meeting.id,
        started_by=principal.user.id,
        stream_type=body.stream_type,
        status=StreamStatus.pending.value,
        rtmp_url=body.rtmp_url,
        quality=body.quality,
        bitrate=body.bitrate,
        resolution=body.resolution,
        stop_requested=False,
        total_viewers=0,
        peak_viewers=0,
        quality_metrics={},
    )
    session.add(stream)
    await session.commit()
    await session.refresh(stream)
    try:
        sfu_url = await state.sfu_runtime.endpoint(str(meeting.id))
        await state.recorder_runtime.start_streamer(
            StreamerSpec(
                stream_id=str(stream.id),
                meeting_id=str(meeting.id),
                sfu_url=sfu_url,
                token=streamer_token(state, stream),
                kind=body.stream_type,
                rtmp_url=body.rtmp_url,
                user_id=str(body.user_id) if body.user_id else None,
                video_bitrate=body.bitrate or BITRATES[body.quality],
            )
        )
    except Exception as exc:
        stream.status = StreamStatus.failed.value
        stream.reason = f"STREAMER_START_FAILED: {exc}"
        await session.commit()
        raise ServiceUnavailable("The streaming worker could not start") from exc
    return stream


async def get_visible(
    session: AsyncSession, principal: Principal, stream_id: uuid.UUID
) -> tuple[LiveStream, str | None]:
    stream = await session.get(LiveStream, stream_id)
    if stream is None:
        raise not_found(stream_id)
    try:
        _m, role = await recording_service.visible_meeting(session, principal, stream.meeting_id)
    except NotFound:
        raise not_found(stream_id) from None
    return stream, role


async def stop(
    session: AsyncSession, state: AppState, stream: LiveStream, wait: bool = True
) -> LiveStream:
    if stream.status not in ACTIVE:
        raise Conflict(f"Stream '{stream.id}' has already ended ({stream.status})")
    stream.stop_requested = True
    await session.commit()
    if state.recorder_runtime is not None:
        await state.recorder_runtime.stop(f"stream:{stream.id}")
    if not wait:
        return stream
    deadline = asyncio.get_running_loop().time() + STOP_WAIT_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        async with state.sessionmaker() as fresh:
            row = await fresh.get(LiveStream, stream.id)
            if row is None or row.status not in ACTIVE:
                break
        await asyncio.sleep(0.2)
    await session.refresh(stream)
    return stream


async def stop_meeting(
    session: AsyncSession, state: AppState, meeting_id: uuid.UUID
) -> list[LiveStream]:
    """Ask every active stream of the meeting to stop; the ones asked."""
    rows = (
        (
            await session.execute(
                select(LiveStream).where(
                    LiveStream.meeting_id == meeting_id, LiveStream.status.in_(ACTIVE)
                )
            )
        )
        .scalars()
        .all()
    )
    for stream in rows:
        await stop(session, state, stream, wait=False)
    return list(rows)


async def drop_meeting_streams(
    session: AsyncSession, state: AppState, meeting_id: uuid.UUID
) -> list[str]:
    """A meeting is being deleted: the storage folders of its streams, to remove after.

    Segments are public by URL and nobody could list or delete them once the meeting is
    gone. Running streamers are stopped first and given ``STOP_WAIT_SECONDS`` to upload
    their last segment, so nothing arrives after the folder went. The rows go with the
    meeting (cascade).
    """
    stopping = {s.id for s in await stop_meeting(session, state, meeting_id)}
    deadline = asyncio.get_running_loop().time() + STOP_WAIT_SECONDS
    while stopping and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
        async with state.sessionmaker() as fresh:
            active = await fresh.execute(
                select(LiveStream.id).where(
                    LiveStream.id.in_(stopping), LiveStream.status.in_(ACTIVE)
                )
            )
            stopping = set(active.scalars().all())
    ids = await session.execute(select(LiveStream.id).where(LiveStream.meeting_id == meeting_id))
    return [live_stream_folder(str(i)) for i in ids.scalars().all()]


async def remove_folders(state: AppState, folders: list[str]) -> None:
    """Best effort, after the meeting is deleted: a storage error is logged, not raised."""
    for folder in folders:
        try:
            await state.storage.delete_folder(folder)
        except Exception:
            log.exception("deleting a live stream's files failed", extra={"folder": folder})


def verify_streamer(state: AppState, authorization: str | None, stream: LiveStream) -> None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InsufficientPermissions("A streamer media token is required")
    subject, grants = state.tokens.verify_media(token.strip())
    if not grants.recorder or grants.room != str(stream.meeting_id) or subject != str(stream.id):
        raise InsufficientPermissions("This token is not this stream's token")


async def apply_report(
    session: AsyncSession, state: AppState, stream: LiveStream, report: StreamerReport
) -> LiveStream:
    if stream.status not in ACTIVE:
        return stream
    now = utcnow()
    if report.quality_metrics:
        stream.quality_metrics = report.quality_metrics
    changed = report.status != stream.status
    if report.status == "streaming" and stream.started_at is None:
        stream.started_at = now
    stream.status = report.status
    if report.status in ("stopped", "failed"):
        stream.stopped_at = now
        stream.reason = report.reason
        _current, total, peak = await viewers(state).counts(str(stream.id))
        stream.total_viewers, stream.peak_viewers = total, peak
    await session.commit()
    await session.refresh(stream)
    if changed:
        await _announce(state, stream)
    return stream


async def _announce(state: AppState, stream: LiveStream) -> None:
    """Tell the meeting's sockets where the stream is now (``stream-status``)."""
    room = str(stream.meeting_id)
    message = {
        "type": "stream-status",
        "room_id": room,
        "stream_id": str(stream.id),
        "stream_type": stream.stream_type,
        "status": stream.status,
        "reason": stream.reason,
        "timestamp": isoformat(utcnow()),
    }
    try:
        await state.hub.publish(room, message)
    except Exception:
        log.exception("announcing a stream change failed")


async def streamer_job_ended(state: AppState, stream_id: str, end: StreamerEnd) -> bool:
    """A streamer Job ended without its worker reporting it (kubernetes runtime's watcher).

    Only a stream still pending or streaming changes, in one conditional UPDATE: every api
    replica watches the same Jobs, and a stream that already finished keeps its state.
    True when this call changed it (and announced it)."""
    try:
        key = uuid.UUID(stream_id)
    except ValueError:
        return False
    _current, total, peak = await viewers(state).counts(str(key))
    async with state.sessionmaker() as session:
        result = cast(
            "CursorResult[Any]",
            await session.execute(
                update(LiveStream)
                .where(LiveStream.id == key, LiveStream.status.in_(ACTIVE))
                .values(
                    status=end.status,
                    reason=end.reason,
                    stopped_at=utcnow(),
                    total_viewers=total,
                    peak_viewers=peak,
                )
                .execution_options(synchronize_session=False)
            ),
        )
        await session.commit()
        if result.rowcount != 1:
            return False
        stream = await session.get(LiveStream, key)
    if stream is not None:
        await _announce(state, stream)
    return True


async def streamer_exited(state: AppState, stream_id: str, code: int) -> None:
    async with state.sessionmaker() as session:
        stream = await session.get(LiveStream, uuid.UUID(stream_id))
        if stream is None or stream.status not in ACTIVE:
            return
        stream.status = StreamStatus.failed.value
        stream.reason = f"STREAMER_EXITED: the worker ended with code {code}"
        stream.stopped_at = utcnow()
        await session.commit()
        await _announce(state, stream)


async def list_streams(
    session: AsyncSession,
    principal: Principal,
    params: PageParams,
    status: str | None,
    stream_type: str | None,
    meeting_id: uuid.UUID | None,
) -> tuple[list[LiveStream], int]:
    where: list[Any] = []
    if not principal.is_admin:
        uid = principal.user.id
        where.append(
            or_(
                LiveStream.meeting_id.in_(
                    select(Participant.meeting_id).where(Participant.user_id == uid)
                ),
                LiveStream.meeting_id.in_(select(Meeting.id).where(Meeting.creator_id == uid)),
            )
        )
    if status:
        where.append(LiveStream.status == status)
    if stream_type:
        where.append(LiveStream.stream_type == stream_type)
    if meeting_id:
        where.append(LiveStream.meeting_id == meeting_id)
    total = (
        await session.execute(select(func.count()).select_from(LiveStream).where(*where))
    ).scalar_one()
    rows = await session.execute(
        select(LiveStream)
        .where(*where)
        .order_by(LiveStream.created_at.desc(), LiveStream.id)
        .offset(params.offset)
        .limit(params.page_size)
    )
    return list(rows.scalars().all()), int(total)
