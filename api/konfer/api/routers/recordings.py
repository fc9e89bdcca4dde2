"""``/api/v1/recording/*``, ``/api/v1/meetings/{id}/recording…`` and the recorders' report.

Thin: ``services.recordings`` decides. The meeting-scoped routes take their meeting from
the path (``MeetingHost`` for start/stop, ``VisibleMeeting`` for the list); the
``/recording/*`` routes take it from the body or from the recording. The report route is
for recorder processes only: it is authenticated with the recording's own media token
(grant ``recorder``, subject = recording id), never with a user's access token.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import Response, StreamingResponse

from konfer.api.db.models import Recording
from konfer.api.deps import (
    CurrentPrincipal,
    MeetingHost,
    SessionDep,
    StateDep,
    VisibleMeeting,
)
from konfer.api.schemas.common import PageParams, Pagination
from konfer.api.schemas.recordings import (
    MeetingRecordingStop,
    RecorderAnswer,
    RecorderReport,
    RecordingDeleted,
    RecordingList,
    RecordingOptions,
    RecordingPublic,
    RecordingStart,
    RecordingStatusName,
    RecordingStop,
)
from konfer.api.services import media as media_service
from konfer.api.services import recordings as service
from konfer.core.errors import NotFound, ValidationFailed

router = APIRouter(prefix="/api/v1/recording", tags=["recording"])
meeting_router = APIRouter(prefix="/api/v1/meetings", tags=["meetings", "recording"])
internal_router = APIRouter(prefix="/api/v1/internal/recordings", tags=["internal"])

Page = Annotated[int, Query(ge=1, le=1_000_000)]
PageSize = Annotated[int, Query(ge=1, le=100)]


# --- /recording/* -------------------------------------------------------------------------


@router.post("/start", response_model=RecordingPublic)
async def start_recording(
    body: RecordingStart, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> RecordingPublic:
    """Start recording a meeting (its hosts and co-hosts); answers while the recorder joins."""
    if body.room_id is not None and body.room_id != str(body.meeting_id):
        raise ValidationFailed("room_id must be the meeting's id", details={"room_id": "mismatch"})
    options = RecordingOptions(**body.model_dump(exclude={"meeting_id", "room_id"}))
    rec = await service.start(session, state, principal, body.meeting_id, options)
    return service.public(state, rec)


@router.post("/stop", response_model=RecordingPublic)
async def stop_recording(
    body: RecordingStop, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> RecordingPublic:
    """Stop and finalize; answers once the file is stored (or after 20 s, still finishing)."""
    rec, role = await service.get_visible(session, principal, body.recording_id)
    service.ensure_manages(role)
    rec = await service.stop(session, state, rec)
    return service.public(state, rec)


@router.get("/list", response_model=RecordingList)
async def list_recordings(
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    meeting_id: uuid.UUID | None = None,
    status: RecordingStatusName | None = None,
    page: Page = 1,
    page_size: PageSize = 20,
) -> RecordingList:
    """Recordings of the meetings the caller belongs to (all for admins), newest first."""
    params = PageParams(page=page, page_size=page_size)
    rows, total = await service.list_recordings(session, principal, params, meeting_id, status)
    return RecordingList(
        recordings=[service.public(state, r) for r in rows],
        pagination=Pagination.of(page, page_size, total),
    )


@router.get("/status/{recording_id}", response_model=RecordingPublic)
async def recording_status(
    recording_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> RecordingPublic:
    rec, _role = await service.get_visible(session, principal, recording_id)
    return service.public(state, rec)


@router.post("/{recording_id}/retry-upload", response_model=RecordingPublic)
async def retry_upload(
    recording_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> RecordingPublic:
    """Upload a file the recorder kept when storage refused it (hosts and co-hosts)."""
    rec, role = await service.get_visible(session, principal, recording_id)
    service.ensure_manages(role)
    await service.retry_upload(session, state, rec)
    return service.public(state, rec)


@router.get(
    "/download/{recording_id}",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"video/webm": {}, "video/x-matroska": {}, "video/mp4": {}}},
        206: {"description": "One byte range (``Range: bytes=…``), with Content-Range"},
        416: {"description": "RANGE_NOT_SATISFIABLE, with Content-Range: bytes */size"},
    },
)
async def download_recording(
    recording_id: uuid.UUID,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
) -> Response:
    """The recorded file as an attachment; one ``Range`` is answered with 206."""
    rec, _role = await service.get_visible(session, principal, recording_id)
    if rec.object_key is None or rec.status != "completed":
        raise NotFound(
            f"Recording '{recording_id}' has no stored file yet ({rec.status})",
            details={"status": rec.status},
        )
    stored = await state.storage.stat(rec.object_key)
    if stored is None:
        raise NotFound(f"The file of recording '{recording_id}' is gone from storage")
    size = stored.size
    window = media_service.parse_range(request.headers.get("range"), size)
    fmt = rec.container or rec.format
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Disposition": media_service.content_disposition(
            f"meeting-{rec.meeting_id}-recording.{fmt}"
        ),
        "Cache-Control": "private, max-age=0",
        "ETag": f'"{rec.id.hex}"',
    }
    status_code = status.HTTP_200_OK
    offset, length = 0, size
    if window is not None:
        first, last = window
        offset, length = first, last - first + 1
        status_code = status.HTTP_206_PARTIAL_CONTENT
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    headers["Content-Length"] = str(length)
    mime = rec.mime_type or stored.content_type
    await session.commit()
    body = state.storage.read(rec.object_key, offset, length) if length else _empty()
    return StreamingResponse(body, status_code=status_code, headers=headers, media_type=mime)


async def _empty() -> AsyncIterator[bytes]:
    if False:  # pragma: no cover - an empty async generator
        yield b""


@router.get("/{recording_id}", response_model=RecordingPublic)
async def get_recording(
    recording_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> RecordingPublic:
    rec, _role = await service.get_visible(session, principal, recording_id)
    return service.public(state, rec)


@router.delete("/{recording_id}", response_model=RecordingDeleted)
async def delete_recording(
    recording_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> RecordingDeleted:
    """Delete a finished recording and its file (hosts, co-hosts and admins)."""
    rec, role = await service.get_visible(session, principal, recording_id)
    if not principal.is_admin:
        service.ensure_manages(role)
    await service.delete(session, state, rec)
    return RecordingDeleted(message="Recording deleted successfully", recording_id=recording_id)


# --- /meetings/{id}/recording… ------------------------------------------------------------


@meeting_router.post("/{meeting_id}/recording/start", response_model=RecordingPublic)
async def start_meeting_recording(
    access: MeetingHost,
    session: SessionDep,
    state: StateDep,
    body: RecordingOptions | None = None,
) -> RecordingPublic:
    rec = await service.start(
        session, state, access.principal, access.meeting.id, body or RecordingOptions()
    )
    return service.public(state, rec)


@meeting_router.post("/{meeting_id}/recording/stop", response_model=RecordingPublic)
async def stop_meeting_recording(
    access: MeetingHost,
    session: SessionDep,
    state: StateDep,
    body: MeetingRecordingStop | None = None,
) -> RecordingPublic:
    """Stop the meeting's active recording (or the one named)."""
    from sqlalchemy import select

    if body is not None and body.recording_id is not None:
        rec = await session.get(Recording, body.recording_id)
        if rec is None or rec.meeting_id != access.meeting.id:
            raise service.not_found(body.recording_id)
    else:
        rec = (
            (
                await session.execute(
                    select(Recording)
                    .where(
                        Recording.meeting_id == access.meeting.id,
                        Recording.status.in_(service.ACTIVE),
                    )
                    .order_by(Recording.created_at.desc())
                )
            )
            .scalars()
            .first()
        )
        if rec is None:
            raise NotFound("The meeting has no active recording")
    rec = await service.stop(session, state, rec)
    return service.public(state, rec)


@meeting_router.get("/{meeting_id}/recordings", response_model=RecordingList)
async def meeting_recordings(
    access: VisibleMeeting,
    session: SessionDep,
    state: StateDep,
    status: RecordingStatusName | None = None,
    page: Page = 1,
    page_size: PageSize = 20,
) -> RecordingList:
    params = PageParams(page=page, page_size=page_size)
    rows, total = await service.list_recordings(
        session, access.principal, params, access.meeting.id, status
    )
    return RecordingList(
        recordings=[service.public(state, r) for r in rows],
        pagination=Pagination.of(page, page_size, total),
    )


# --- recorders ----------------------------------------------------------------------------


@internal_router.post("/{recording_id}/report", response_model=RecorderAnswer)
async def recorder_report(
    recording_id: uuid.UUID,
    report: RecorderReport,
    session: SessionDep,
    state: StateDep,
    authorization: Annotated[str | None, Header()] = None,
) -> RecorderAnswer:
    """A recorder's progress; the answer tells it whether to stop."""
    rec = await session.get(Recording, recording_id)
    if rec is None:
        raise service.not_found(recording_id)
    service.verify_recorder(state, authorization, rec)
    rec = await service.apply_report(session, state, rec, report)
    sfu_url = None
    if rec.status == "paused":
        sfu_url = await service.current_sfu_url(session, state, rec)
    stop_at = rec.stopped_at.timestamp() if rec.stop_requested and rec.stopped_at else None
    return RecorderAnswer(
        stop=rec.stop_requested, stop_at=stop_at, status=rec.status, sfu_url=sfu_url
    )
