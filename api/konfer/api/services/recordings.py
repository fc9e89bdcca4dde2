"""Recordings: starting and stopping recorders, their reports, listing, download, deletion.

Called by ``routers.recordings`` (public routes and the recorders' report route) and by
``routers.meetings`` when a meeting ends. The recorder process does the media work
(``konfer.sfu.recorder``); this module keeps the state machine:

    pending ──first frame──▶ recording ──stop / meeting ends / max duration──▶ completed
       │                       ▲    │                                  └──▶ failed (reason)
       │        media flows again   SFU lost
       │                       │    ▼
       │                        paused (reason) ──stop──▶ completed
       │                                        ──SFU not back in time──▶ completed (reason)
       └──stop before any media──▶ cancelled (reason)

``paused`` means the recorder lost the meeting's SFU (the process died or restarted, the
media connection failed) and is rejoining; what it wrote is kept. The answer to its
``paused`` reports carries the SFU's current control URL (``current_sfu_url``), so it
finds an SFU the local runtime restarted on another port; in Kubernetes the URL is the
Meeting's Service and does not change.

A failed upload ends ``failed`` with ``upload_pending`` and the reason naming the kept
file; ``retry_upload`` starts a recorder in upload-only mode and a success turns the row
``completed``. Who may do what: members of the meeting (and admins) see its recordings;
its hosts and co-hosts start, stop, retry and delete them.

Completion hook (for transcription and anything else that follows a recording): every
``on_completed`` callback runs with the session and the row inside the transaction that
marks it completed, so a callback that enqueues a durable job commits with it; then a
``recording.completed`` event is published on the bus channel ``konfer:recordings``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from konfer.api.db.models import (
    Media,
    Meeting,
    MeetingStatus,
    Participant,
    Recording,
    RecordingStatus,
)
from konfer.api.deps import Principal
from konfer.api.runtime.recorders import RecorderSpec
from konfer.api.schemas.common import PageParams
from konfer.api.schemas.recordings import RecorderReport, RecordingOptions, RecordingPublic
from konfer.api.services import meetings as meeting_service
from konfer.api.state import AppState
from konfer.core.errors import (
    Conflict,
    InsufficientPermissions,
    InvalidToken,
    NotFound,
    ServiceUnavailable,
)
from konfer.core.timeutil import isoformat, utcnow
from konfer.core.tokens import MediaGrants

log = logging.getLogger(__name__)

BUS_CHANNEL = "konfer:recordings"
ACTIVE = frozenset(
    {
        RecordingStatus.pending.value,
        RecordingStatus.recording.value,
        RecordingStatus.paused.value,
    }
)
#: How long a paused recorder's report may wait for the meeting's SFU to be found/started.
SFU_LOOKUP_SECONDS = 5.0
FINISHED = frozenset(
    {
        RecordingStatus.completed.value,
        RecordingStatus.failed.value,
        RecordingStatus.cancelled.value,
    }
)
STOP_WAIT_SECONDS = 20.0
RECORDER_USER_NAME = "konfer-recorder"


class RecordingDisabled(InsufficientPermissions):
    code = "RECORDING_DISABLED"
    default_message = "Recording is turned off for this meeting (settings.enable_recording)"


class RecordingFinished(Conflict):
    code = "RECORDING_FINISHED"
    default_message = "This recording has already finished"


class RecordingInProgress(Conflict):
    code = "RECORDING_IN_PROGRESS"
    default_message = "The meeting is already being recorded"


CompletionHook = Callable[[AsyncSession, Recording], Awaitable[None]]
_completion_hooks: list[CompletionHook] = []


def on_completed(hook: CompletionHook) -> CompletionHook:
    """Run ``hook(session, recording)`` when a recording completes (usable as decorator)."""
    if hook not in _completion_hooks:
        _completion_hooks.append(hook)
    return hook


def not_found(recording_id: uuid.UUID | str) -> NotFound:
    return NotFound(f"Recording with ID '{recording_id}' not found")


# --- shapes ----------------------------------------------------------------------------


def download_url(state: AppState, rec: Recording) -> str | None:
    if rec.status != RecordingStatus.completed.value or not rec.object_key:
        return None
    return f"{state.settings.resolved_public_url}/api/v1/recording/download/{rec.id}"


def public(state: AppState, rec: Recording) -> RecordingPublic:
    return RecordingPublic(
        recording_id=rec.id,
        meeting_id=rec.meeting_id,
        room_id=str(rec.meeting_id),
        status=rec.status,
        reason=rec.reason,
        format=rec.container or rec.format,
        requested_format=rec.format,
        quality=rec.quality,
        layout=rec.layout,
        started_at=rec.started_at,
        stopped_at=rec.stopped_at,
        completed_at=rec.completed_at,
        duration=round(rec.duration or 0.0, 3),
        file_size=rec.file_size or 0,
        estimated_size=rec.file_size or 0,
        participants=rec.participants or 0,
        quality_metrics=rec.quality_metrics or {},
        tracks=rec.tracks or [],
        upload_pending=rec.upload_pending,
        file_path=rec.object_key,
        tracks_file_path=rec.extra_object_keys[0] if rec.extra_object_keys else None,
        output_path=rec.object_key,
        download_url=download_url(state, rec),
        media_id=rec.media_id,
        started_by=rec.started_by,
        created_at=rec.created_at,
    )


# --- access ----------------------------------------------------------------------------


async def _role(session: AsyncSession, meeting: Meeting, principal: Principal) -> str | None:
    member = await meeting_service.membership(session, meeting.id, principal.user.id)
    return member.role if member is not None else None


async def visible_meeting(
    session: AsyncSession, principal: Principal, meeting_id: uuid.UUID
) -> tuple[Meeting, str | None]:
    """The meeting and the caller's role in it; 404 for meetings the caller cannot see."""
    meeting = await session.get(Meeting, meeting_id)
    if meeting is None:
        raise meeting_service.not_found(meeting_id)
    role = await _role(session, meeting, principal)
    if role is None and not principal.is_admin and meeting.creator_id != principal.user.id:
        raise meeting_service.not_found(meeting_id)
    return meeting, role


def ensure_manages(role: str | None) -> None:
    if role not in meeting_service.MANAGING_ROLES:
        raise InsufficientPermissions("Only the meeting's host or co-hosts can do this")


async def get_visible(
    session: AsyncSession, principal: Principal, recording_id: uuid.UUID
) -> tuple[Recording, str | None]:
    rec = await session.get(Recording, recording_id)
    if rec is None:
        raise not_found(recording_id)
    try:
        _meeting, role = await visible_meeting(session, principal, rec.meeting_id)
    except NotFound:
        raise not_found(recording_id) from None
    return rec, role


# --- start / stop ----------------------------------------------------------------------


def recorder_token(state: AppState, rec: Recording) -> str:
    """A media token bound to this recording: subject = recording id, recorder + hidden."""
    grants = MediaGrants(
        room=str(rec.meeting_id),
        can_publish=False,
        can_subscribe=True,
        can_publish_sources=[],
        hidden=True,
        recorder=True,
    )
    limit = rec.max_duration_seconds or state.settings.recording_max_duration_seconds
    return state.tokens.issue_media(rec.id, RECORDER_USER_NAME, grants, limit + 3600)


def _sources(options: RecordingOptions) -> tuple[str, ...]:
    wanted = []
    if options.record_video:
        wanted.append("camera")
    if options.record_audio:
        wanted.append("microphone")
    if options.record_screen:
        wanted.append("screen_share")
    return tuple(wanted)


async def start(
    session: AsyncSession,
    state: AppState,
    principal: Principal,
    meeting_id: uuid.UUID,
    options: RecordingOptions,
) -> Recording:
    meeting, role = await visible_meeting(session, principal, meeting_id)
    ensure_manages(role)
    meeting_service.ensure_not_ended(meeting)
    if not meeting_service.meeting_settings(meeting).enable_recording:
        raise RecordingDisabled()
    sources = _sources(options)
    if not sources:
        raise Conflict("Nothing to record: audio, video and screen are all turned off")
    if state.sfu_runtime is None or state.recorder_runtime is None:
        raise ServiceUnavailable("Recording needs the SFU media mode (KONFER_SFU_ENABLED)")
    active = (
        await session.execute(
            select(Recording.id).where(
                Recording.meeting_id == meeting.id, Recording.status.in_(ACTIVE)
            )
        )
    ).first()
    if active is not None:
        raise RecordingInProgress(details={"recording_id": str(active[0])})
    rec = Recording(
        meeting_id=meeting.id,
        started_by=principal.user.id,
        status=RecordingStatus.pending.value,
        phase="pending",
        format=options.format,
        quality=options.quality,
        layout=options.layout,
        record_audio=options.record_audio,
        record_video=options.record_video,
        record_screen=options.record_screen,
        max_duration_seconds=options.max_duration_seconds,
        file_size=0,
        duration=0.0,
        participants=0,
        quality_metrics={},
        tracks=[],
        extra_object_keys=[],
        upload_pending=False,
        stop_requested=False,
    )
    session.add(rec)
    await session.commit()
    await session.refresh(rec)
    try:
        sfu_url = await state.sfu_runtime.endpoint(str(meeting.id))
        await state.recorder_runtime.start(
            RecorderSpec(
                recording_id=str(rec.id),
                meeting_id=str(meeting.id),
                sfu_url=sfu_url,
                token=recorder_token(state, rec),
                format=options.format,
                layout=options.layout,
                sources=sources,
                max_duration_seconds=options.max_duration_seconds,
                quality=options.quality,
                storage_prefix=state.settings.recording_storage_prefix,
            )
        )
    except Exception as exc:
        log.exception("starting a recorder failed", extra={"recording_id": str(rec.id)})
        await _finish(session, rec, RecordingStatus.failed, f"RECORDER_START_FAILED: {exc}")
        raise ServiceUnavailable("The recorder could not start") from exc
    await _announce(state, rec, "started")
    return rec


async def _finish(
    session: AsyncSession, rec: Recording, status: RecordingStatus, reason: str | None
) -> None:
    now = utcnow()
    rec.status = status.value
    rec.phase = status.value
    rec.reason = reason
    rec.stopped_at = rec.stopped_at or now
    rec.completed_at = now
    await session.commit()


async def stop(
    session: AsyncSession, state: AppState, rec: Recording, *, wait: bool = True
) -> Recording:
    """Ask the recorder to stop; wait (bounded) until the file is stored or it fails."""
    if rec.status in FINISHED:
        raise RecordingFinished(
            f"Recording '{rec.id}' has already finished ({rec.status})",
            details={"status": rec.status},
        )
    rec.stop_requested = True
    rec.stopped_at = rec.stopped_at or utcnow()
    await session.commit()
    # A recorder this replica started stops now; one started elsewhere (another replica,
    # a Job) hears ``stop`` in the answer to its next report.
    if state.recorder_runtime is not None:
        await state.recorder_runtime.stop(str(rec.id))
    await _announce(state, rec, "stopping")
    if not wait:
        return rec
    return await wait_finished(session, state, rec.id, STOP_WAIT_SECONDS)


async def wait_finished(
    session: AsyncSession, state: AppState, recording_id: uuid.UUID, seconds: float
) -> Recording:
    """The row once it is finished, or as it is after ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        async with state.sessionmaker() as fresh:
            current = await fresh.get(Recording, recording_id)
            if current is None:
                raise not_found(recording_id)
            finished = current.status in FINISHED
        if finished or asyncio.get_running_loop().time() >= deadline:
            break
        await asyncio.sleep(0.2)
    await session.refresh(current := await session.get(Recording, recording_id) or current)
    return current


async def finalize_meeting(
    session: AsyncSession, state: AppState, meeting_id: uuid.UUID
) -> Sequence[Recording]:
    """A meeting ends: every active recording of it stops and finalizes (not awaited);
    returns those recordings."""
    rows = (
        (
            await session.execute(
                select(Recording).where(
                    Recording.meeting_id == meeting_id, Recording.status.in_(ACTIVE)
                )
            )
        )
        .scalars()
        .all()
    )
    for rec in rows:
        await stop(session, state, rec, wait=False)
    return rows


async def retry_upload(session: AsyncSession, state: AppState, rec: Recording) -> Recording:
    if not rec.upload_pending or not rec.local_path:
        raise Conflict("This recording has no kept file waiting for storage")
    if state.recorder_runtime is None:
        raise ServiceUnavailable("No recorder runtime is configured")
    # The recorder that kept the file reports before it exits: give it a moment.
    if not await state.recorder_runtime.wait_exit(str(rec.id), 10):
        raise Conflict("A recorder is already working on this recording")
    await state.recorder_runtime.start(
        RecorderSpec(
            recording_id=str(rec.id),
            meeting_id=str(rec.meeting_id),
            sfu_url="http://127.0.0.1:9",  # unused: upload only
            token=recorder_token(state, rec),
            format=rec.container or rec.format,
            layout=rec.layout,
            sources=(),
            retry_upload=True,
        )
    )
    return rec


# --- reports from recorders --------------------------------------------------------------


def verify_recorder(state: AppState, authorization: str | None, rec: Recording) -> None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("A recorder media token is required")
    subject, grants = state.tokens.verify_media(token.strip())
    if not grants.recorder or grants.room != str(rec.meeting_id) or subject != str(rec.id):
        raise InsufficientPermissions("This token is not this recording's recorder token")


_PHASE_STATUS = {
    "pending": RecordingStatus.pending,
    "recording": RecordingStatus.recording,
    "paused": RecordingStatus.paused,
    "finalizing": RecordingStatus.recording,
    "uploading": RecordingStatus.recording,
    "completed": RecordingStatus.completed,
    "failed": RecordingStatus.failed,
}


async def apply_report(
    session: AsyncSession, state: AppState, rec: Recording, report: RecorderReport
) -> Recording:
    """Take a recorder's report; a finished row only changes to complete a kept upload."""
    status = _PHASE_STATUS[report.phase]
    retrying = rec.upload_pending and status in (RecordingStatus.completed, RecordingStatus.failed)
    if rec.status in FINISHED and not retrying:
        return rec
    now = utcnow()
    rec.phase = report.phase
    rec.last_report_at = now
    if report.phase == "uploading" and rec.upload_pending:
        return await _commit(session, rec)
    rec.duration = report.duration
    rec.file_size = report.file_size
    rec.participants = report.participants
    rec.quality_metrics = report.quality_metrics
    rec.tracks = report.tracks
    if report.started_at is not None:  # refined while frames arrive: the latest is best
        rec.started_at = datetime.fromtimestamp(report.started_at, UTC)
    if report.format:
        rec.container = report.format
    if report.mime_type:
        rec.mime_type = report.mime_type
    changed = rec.status != status.value
    rec.status = status.value
    if status is RecordingStatus.completed:
        rec.object_key = report.object_key
        rec.extra_object_keys = [
            str(f["object_key"]) for f in report.extra_files if f.get("object_key")
        ]
        rec.upload_pending = False
        rec.local_path = None
        rec.reason = report.reason  # a note when it ended early, e.g. the SFU never came back
        rec.stopped_at = rec.stopped_at or now
        rec.completed_at = now
        await _add_to_library(session, rec)
        for hook in list(_completion_hooks):
            await hook(session, rec)
        await _commit(session, rec)
        await _announce(state, rec, "completed")
        return rec
    if status is RecordingStatus.failed:
        rec.reason = report.reason or "The recorder failed"
        rec.upload_pending = report.upload_pending
        rec.local_path = report.local_path if report.upload_pending else None
        rec.stopped_at = rec.stopped_at or now
        rec.completed_at = now
        if report.reason and report.reason.startswith("NO_MEDIA") and rec.stop_requested:
            rec.status = RecordingStatus.cancelled.value
        await _commit(session, rec)
        await _announce(state, rec, rec.status)
        return rec
    if status is RecordingStatus.paused:
        rec.reason = report.reason or "MEDIA_SERVER_LOST: the recorder is rejoining"
    elif status is RecordingStatus.recording and rec.reason:
        rec.reason = None
    await _commit(session, rec)
    if changed and status in (RecordingStatus.recording, RecordingStatus.paused):
        await _announce(state, rec, status.value)
    return rec


_lookups: dict[tuple[int, str], asyncio.Future[str]] = {}  # (runtime, meeting) -> lookup


def _lookup_done(key: tuple[int, str], lookup: asyncio.Future[str]) -> None:
    if _lookups.get(key) is lookup:
        del _lookups[key]
    if not lookup.cancelled():
        lookup.exception()  # retrieved: a failure was logged by whoever waited for it


async def current_sfu_url(session: AsyncSession, state: AppState, rec: Recording) -> str | None:
    """Where a paused recorder should rejoin: the meeting's SFU, started again if it died.

    None when the meeting is over (the recorder is then told to stop) or the SFU cannot
    be had within ``SFU_LOOKUP_SECONDS`` (the recorder asks again with its next report).
    """
    if state.sfu_runtime is None or rec.stop_requested:
        return None
    meeting = await session.get(Meeting, rec.meeting_id)
    if meeting is None or meeting.status == MeetingStatus.ended.value:
        return None
    # Shielded: an SFU that takes longer to start than this answer may wait still starts
    # (and is recorded for the meeting) instead of being abandoned half-way.
    # One lookup per meeting at a time, however often its recorder reports.
    room = str(rec.meeting_id)
    key = (id(state.sfu_runtime), room)
    lookup = _lookups.get(key)
    if lookup is None:
        lookup = _lookups[key] = asyncio.ensure_future(state.sfu_runtime.endpoint(room))
        lookup.add_done_callback(lambda done: _lookup_done(key, done))
    try:
        return await asyncio.wait_for(asyncio.shield(lookup), SFU_LOOKUP_SECONDS)
    except Exception as exc:  # not ready yet, or failed: the next report asks again
        log.warning(
            "no SFU for a paused recorder yet: %s", exc, extra={"recording_id": str(rec.id)}
        )
        return None


async def _commit(session: AsyncSession, rec: Recording) -> Recording:
    await session.commit()
    await session.refresh(rec)
    return rec


async def recorder_exited(state: AppState, recording_id: str, code: int) -> None:
    """A local recorder process ended; a row it left unfinished becomes failed."""
    async with state.sessionmaker() as session:
        rec = await session.get(Recording, uuid.UUID(recording_id))
        if rec is None or rec.status in FINISHED:
            return
        if rec.upload_pending:
            rec.status = RecordingStatus.failed.value
            await session.commit()
            return
        await _finish(
            session,
            rec,
            RecordingStatus.failed,
            f"RECORDER_EXITED: the recorder process ended with code {code} before finishing",
        )
        await _announce(state, rec, "failed")


async def _add_to_library(session: AsyncSession, rec: Recording) -> None:
    """The finished file also appears in the media library (``source = recording``)."""
    if rec.object_key is None or rec.media_id is not None:
        return
    video = next((t for t in rec.tracks if t.get("kind") == "video"), None)
    audio = next((t for t in rec.tracks if t.get("kind") == "audio"), None)
    fmt = rec.container or rec.format
    media = Media(
        owner_id=rec.started_by,
        meeting_id=rec.meeting_id,
        filename=f"meeting-{rec.meeting_id}-recording-{str(rec.id)[:8]}.{fmt}",
        description="Meeting recording",
        file_type="video" if video else "audio",
        container=fmt,
        mime_type=rec.mime_type or "application/octet-stream",
        size=rec.file_size,
        object_key=rec.object_key,
        duration=rec.duration,
        width=video.get("width") if video else None,
        height=video.get("height") if video else None,
        bitrate=int(rec.quality_metrics.get("average_bitrate") or 0) or None,
        video_codec=video.get("codec") if video else None,
        audio_codec=audio.get("codec") if audio else None,
        sample_rate=48000 if audio else None,
        source="recording",
        source_job_id=rec.id,
        download_count=0,
    )
    session.add(media)
    await session.flush()
    rec.media_id = media.id


async def _announce(state: AppState, rec: Recording, event: str) -> None:
    """Tell the meeting's sockets, and publish completions for whoever follows them."""
    room = str(rec.meeting_id)
    message = {
        "type": "recording-status",
        "room_id": room,
        "recording_id": str(rec.id),
        "status": rec.status,
        "event": event,
        "timestamp": isoformat(utcnow()),
    }
    try:
        await state.hub.publish(room, message)
        if event == "completed":
            await state.bus.publish(
                BUS_CHANNEL,
                json.dumps(
                    {
                        "type": "recording.completed",
                        "recording_id": str(rec.id),
                        "meeting_id": room,
                        "object_key": rec.object_key,
                        "format": rec.container,
                        "mime_type": rec.mime_type,
                        "duration": rec.duration,
                        "media_id": str(rec.media_id) if rec.media_id else None,
                        "timestamp": message["timestamp"],
                    }
                ),
            )
    except Exception:
        log.exception("announcing a recording change failed")


# --- listing, download, deletion -----------------------------------------------------------


def _visible_meetings(principal: Principal) -> Any:
    if principal.is_admin:
        return True
    uid = principal.user.id
    return or_(
        Recording.meeting_id.in_(select(Participant.meeting_id).where(Participant.user_id == uid)),
        Recording.meeting_id.in_(select(Meeting.id).where(Meeting.creator_id == uid)),
    )


async def list_recordings(
    session: AsyncSession,
    principal: Principal,
    params: PageParams,
    meeting_id: uuid.UUID | None = None,
    status: str | None = None,
) -> tuple[list[Recording], int]:
    where: list[Any] = [_visible_meetings(principal)]
    if meeting_id is not None:
        where.append(Recording.meeting_id == meeting_id)
    if status is not None:
        where.append(Recording.status == status)
    total = (
        await session.execute(select(func.count()).select_from(Recording).where(*where))
    ).scalar_one()
    rows = await session.execute(
        select(Recording)
        .where(*where)
        .order_by(Recording.created_at.desc(), Recording.id)
        .offset(params.offset)
        .limit(params.page_size)
    )
    return list(rows.scalars().all()), int(total)


async def delete(session: AsyncSession, state: AppState, rec: Recording) -> None:
    """The row, its stored file, its library entry and any kept local file."""
    if rec.status in ACTIVE:
        raise RecordingInProgress("Stop the recording before deleting it")
    keys = [k for k in (rec.object_key, *(rec.extra_object_keys or [])) if k]
    media_id, kept = rec.media_id, rec.local_path
    if media_id is not None:
        media = await session.get(Media, media_id)
        if media is not None:
            await session.delete(media)
    await session.delete(rec)
    await session.commit()
    for key in keys:
        await state.storage.delete(key)
    if kept:
        await asyncio.to_thread(_remove_kept, state.settings.resolved_recording_spool_dir, kept)


@dataclass(frozen=True, slots=True)
class StoredFiles:
    """What deleted recordings leave to remove once their rows are gone."""

    object_keys: list[str]
    kept_paths: list[str]


async def drop_meeting_recordings(
    session: AsyncSession, state: AppState, meeting_id: uuid.UUID
) -> StoredFiles:
    """A meeting is being deleted: its recordings go with it, files and library entries too.

    The documents say nothing of recordings outliving their meeting, and a deleted meeting
    must not leave media nobody can list or delete. Running recorders are stopped first
    and given ``STOP_WAIT_SECONDS`` to store their file, so what they upload is known and
    removed too. The rows are deleted in the caller's transaction (not committed here);
    ``remove_files`` removes the objects and kept files after it commits.
    """
    for rec in await finalize_meeting(session, state, meeting_id):
        await wait_finished(session, state, rec.id, STOP_WAIT_SECONDS)
    rows = (
        (await session.execute(select(Recording).where(Recording.meeting_id == meeting_id)))
        .scalars()
        .all()
    )
    files = StoredFiles([], [])
    for rec in rows:
        files.object_keys.extend(k for k in (rec.object_key, *(rec.extra_object_keys or [])) if k)
        if rec.local_path:
            files.kept_paths.append(rec.local_path)
        if rec.media_id is not None:
            media = await session.get(Media, rec.media_id)
            if media is not None:
                await session.delete(media)
        await session.delete(rec)
    await session.flush()
    return files


async def remove_files(state: AppState, files: StoredFiles) -> None:
    """Best effort: a missing object is already gone; a storage error is logged, not raised
    (the meeting is deleted either way)."""
    for key in files.object_keys:
        try:
            await state.storage.delete(key)
        except Exception:
            log.exception("deleting a recording object failed", extra={"object_key": key})
    spool = state.settings.resolved_recording_spool_dir
    for kept in files.kept_paths:
        await asyncio.to_thread(_remove_kept, spool, kept)


def _remove_kept(spool: Path, kept: str) -> None:
    """The kept file's folder, if it is one of the spool's (never anything else)."""
    path = Path(kept).resolve()
    if path.is_relative_to(spool.resolve()):
        shutil.rmtree(path.parent, ignore_errors=True)
