"""``/api/v1/media/*``: upload, list, info, download (HTTP Range), thumbnail, delete,
process.

Thin: access rules and validation live in ``services.media`` (who may see and delete
what), streaming in ``media.upload``, job planning in ``services.jobs``. The upload
route reads its own body (no FastAPI form parsing) so the file streams to storage.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import RedirectResponse, StreamingResponse
from sqlalchemy import select

from konfer.api.db.models import MediaJob
from konfer.api.deps import CurrentPrincipal, SessionDep, StateDep
from konfer.api.media.formats import FILE_TYPES, SUPPORTED_TEXT
from konfer.api.schemas.common import PageParams
from konfer.api.schemas.media import (
    MediaDeleted,
    MediaList,
    MediaListData,
    MediaListFilters,
    MediaPublic,
    ProcessAccepted,
    ProcessRequest,
)
from konfer.api.services import jobs
from konfer.api.services import media as media_service
from konfer.core.errors import NotFound, RateLimitExceeded, ValidationFailed
from konfer.core.timeutil import isoformat, utcnow

router = APIRouter(prefix="/api/v1/media", tags=["media"])

REDIRECT_SECONDS = 300  # lifetime of a presigned download URL (media_download_redirect)

Page = Annotated[int, Query(ge=1, le=1_000_000)]
PageSize = Annotated[int, Query(ge=1, le=100)]

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": f"The media file. Accepted: {SUPPORTED_TEXT}",
                        },
                        "meeting_id": {
                            "type": "string",
                            "format": "uuid",
                            "description": "A meeting the uploader belongs to",
                        },
                        "file_type": {"type": "string", "enum": list(FILE_TYPES)},
                        "description": {"type": "string", "maxLength": 1000},
                        "user_id": {"type": "string", "description": "Must be the caller's id"},
                    },
                }
            }
        },
    }
}


@router.get("/health", tags=["health"])
async def health() -> dict[str, str]:
    return {"service": "media-service", "status": "ok", "time": isoformat(utcnow())}


@router.post(
    "/upload",
    response_model=MediaPublic,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_UPLOAD_BODY,
    responses={415: {"description": "UNSUPPORTED_MEDIA_TYPE: not an accepted format"}},
)
async def upload(
    request: Request, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> MediaPublic:
    """Upload a file (multipart field ``file``), streamed to storage; at most
    ``media_max_<type>_mb`` per type, 5 uploads a minute and 3 at once per user."""
    settings = state.settings
    await session.commit()  # hand the connection back to the pool for the transfer
    slot_key, token = f"uploads:{principal.user.id}", uuid.uuid4().hex
    limit = settings.media_max_concurrent_uploads
    if not await state.upload_slots.acquire(slot_key, token, limit):
        state.metrics.rate_limited.labels("concurrent_upload").inc()
        raise RateLimitExceeded(
            5, f"Too many concurrent uploads: at most {limit} at a time per user"
        )
    try:
        media = await media_service.upload(
            session,
            state.storage,
            settings,
            principal,
            request.stream(),
            request.headers.get("content-type"),
            keepalive=lambda: state.upload_slots.refresh(slot_key, token),
        )
    finally:
        await state.upload_slots.release(slot_key, token)
    state.metrics.media_uploads.labels(media.file_type).inc()
    state.metrics.media_upload_bytes.inc(media.size)
    return media_service.public(media, settings)


@router.get("", response_model=MediaList)
async def list_media(
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    page: Page = 1,
    page_size: PageSize = 20,
    file_type: str | None = None,
    meeting_id: str | None = None,
    user_id: str | None = None,
) -> MediaList:
    """Media the caller may see (own, their meetings', everything for admins), newest first."""
    problems: dict[str, str] = {}
    kind = (file_type or "").strip().lower() or None
    if kind is not None and kind not in FILE_TYPES:
        problems["file_type"] = "Must be one of: video, audio, image, document"
    ids: dict[str, uuid.UUID | None] = {}
    for name, raw in (("meeting_id", meeting_id), ("user_id", user_id)):
        ids[name] = None
        if raw and raw.strip():
            try:
                ids[name] = uuid.UUID(raw.strip())
            except ValueError:
                problems[name] = "Must be a UUID"
    if problems:
        raise ValidationFailed(details=problems)
    params = PageParams(page=page, page_size=page_size)
    found, total = await media_service.list_media(
        session,
        principal,
        media_service.MediaFilters(kind, ids["meeting_id"], ids["user_id"]),
        params,
    )
    return MediaList(
        data=MediaListData(
            media_files=[media_service.public(m, state.settings) for m in found],
            page=page,
            page_size=page_size,
            total=total,
        ),
        filters=MediaListFilters(
            file_type=kind or "",
            meeting_id=str(ids["meeting_id"] or ""),
            user_id=str(ids["user_id"] or ""),
        ),
        message="Media list retrieved successfully",
        offset=params.offset,
    )


@router.get("/info/{media_id}", response_model=MediaPublic)
async def info(
    media_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> MediaPublic:
    """Duration, resolution, codecs, bitrate and frame rate (read with PyAV at upload)."""
    media = await media_service.get_visible(session, principal, media_id)
    return media_service.public(media, state.settings)


@router.head("/download/{media_id}", response_class=StreamingResponse)
@router.get(
    "/download/{media_id}",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The whole file"},
        206: {"description": "One byte range (``Range: bytes=…``), with Content-Range"},
        307: {"description": "With media_download_redirect: a presigned storage URL"},
        416: {"description": "RANGE_NOT_SATISFIABLE, with Content-Range: bytes */size"},
    },
)
async def download(
    media_id: uuid.UUID,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
) -> Response:
    """The file, as an attachment; one ``Range`` is answered with 206."""
    media = await media_service.get_visible(session, principal, media_id)
    size = media.size
    window = media_service.parse_range(request.headers.get("range"), size)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Disposition": media_service.content_disposition(media.filename),
        "Cache-Control": "private, max-age=0",
        "ETag": f'"{media.id.hex}"',
    }
    status_code = status.HTTP_200_OK
    offset, length = 0, size
    if window is not None:
        first, last = window
        offset, length = first, last - first + 1
        status_code = status.HTTP_206_PARTIAL_CONTENT
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    headers["Content-Length"] = str(length)
    key, mime = media.object_key, media.mime_type
    if request.method == "HEAD":
        await session.commit()
        return Response(status_code=status_code, headers=headers, media_type=mime)
    if await state.storage.stat(key) is None:
        raise media_service.not_found(media_id)
    await media_service.record_access(session, media, counted=offset == 0)
    state.metrics.media_downloads.labels("range" if window else "full").inc()
    if state.settings.media_download_redirect:
        # Storage answers the bytes (and the same Range) itself; the api only signs.
        overrides = {
            "response-content-disposition": headers["Content-Disposition"],
            "response-content-type": mime,
        }
        url = await state.storage.presigned_url(key, REDIRECT_SECONDS, overrides)
        if url is not None:
            return RedirectResponse(
                url, status.HTTP_307_TEMPORARY_REDIRECT, {"Cache-Control": "private, no-store"}
            )
    body = state.storage.read(key, offset, length) if length else _empty()
    return StreamingResponse(body, status_code=status_code, headers=headers, media_type=mime)


async def _empty() -> AsyncIterator[bytes]:
    if False:  # pragma: no cover - an empty async generator
        yield b""


@router.get(
    "/thumbnail/{media_id}",
    response_class=StreamingResponse,
    responses={200: {"content": {"image/jpeg": {}}}},
)
async def thumbnail(
    media_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> Response:
    """The item's preview picture (320x180 JPEG), made by the worker after upload; waits
    up to ``media_thumbnail_wait_seconds`` for it when it is still being made."""
    media = await media_service.get_visible(session, principal, media_id)
    if media.file_type not in ("video", "image"):
        raise NotFound("This media has no thumbnail", details={"media_id": str(media_id)})
    key = media.thumbnail_key
    if key is None:
        pending = (
            await session.execute(
                select(MediaJob.id)
                .where(
                    MediaJob.input_media_id == media.id,
                    MediaJob.kind == "thumbnail",
                    MediaJob.status.in_(jobs.ACTIVE),
                )
                .limit(1)
            )
        ).scalar_one_or_none()
        await session.commit()
        if pending is not None:
            await jobs.wait_finished(
                state.sessionmaker, pending, state.settings.media_thumbnail_wait_seconds
            )
            await session.refresh(media)
            key = media.thumbnail_key
        if key is None:
            raise NotFound(
                "The thumbnail is not ready yet" if pending else "This media has no thumbnail",
                details={"media_id": str(media_id)},
                headers={"Retry-After": "2"} if pending else None,
            )
    info = await state.storage.stat(key)
    if info is None:
        raise NotFound("This media has no thumbnail", details={"media_id": str(media_id)})
    return StreamingResponse(
        state.storage.read(key),
        media_type=info.content_type,
        headers={"Content-Length": str(info.size), "Cache-Control": "private, max-age=300"},
    )


@router.delete("/{media_id}", response_model=MediaDeleted)
async def delete_media(
    media_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> MediaDeleted:
    """Delete the item and its stored objects (uploader, meeting hosts, admins)."""
    media = await media_service.get_visible(session, principal, media_id)
    await media_service.ensure_may_delete(session, principal, media)
    await media_service.delete_media(session, state.storage, media)
    return MediaDeleted(message="Media file deleted successfully", media_id=media_id)


@router.post("/process", response_model=ProcessAccepted)
async def process(
    body: ProcessRequest, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> ProcessAccepted:
    """Queue several operations on one item as one job; each makes a new media item."""
    media = await media_service.get_visible(session, principal, body.media_id)
    steps = jobs.process_steps(media, body)
    params = {
        "steps": steps,
        "operations": list(body.operations),
        "output_format": body.output_format,
        "quality": body.quality,
    }
    estimated = sum(jobs.estimate(step["op"], [media]) for step in steps)
    job = await jobs.enqueue(
        session, state.settings, principal.user.id, "process", params, [media], len(steps)
    )
    state.metrics.media_jobs.labels("process").inc()
    return ProcessAccepted(
        job_id=job.id,
        status=job.status,
        estimated_time=estimated,
        message="Processing started",
        output_media_ids=[uuid.UUID(i) for i in job.output_media_ids],
    )
