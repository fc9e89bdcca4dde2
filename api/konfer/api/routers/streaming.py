"""``/api/v1/streaming/*``: live streams of a meeting, their files, and the workers' reports.

Thin: ``services.streaming`` decides. HLS/DASH files are public to whoever holds the
stream's URL (players send no bearer token); everything else needs a signed-in member,
and start/stop the meeting's hosts.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse

from konfer.api.db.models import LiveStream
from konfer.api.deps import CurrentPrincipal, SessionDep, StateDep
from konfer.api.schemas.common import PageParams, Pagination
from konfer.api.schemas.streaming import (
    StreamerAnswer,
    StreamerReport,
    StreamList,
    StreamPublic,
    StreamStart,
    StreamStatusName,
    StreamStop,
    StreamType,
)
from konfer.api.services import recordings as recording_service
from konfer.api.services import streaming as service
from konfer.core.errors import NotFound
from konfer.core.storage import live_stream_folder

router = APIRouter(prefix="/api/v1/streaming", tags=["streaming"])
internal_router = APIRouter(prefix="/api/v1/internal/streams", tags=["internal"])

Page = Annotated[int, Query(ge=1, le=1_000_000)]
PageSize = Annotated[int, Query(ge=1, le=100)]
_FILE = re.compile(r"^[A-Za-z0-9_.-]{1,64}\.(m3u8|ts|mpd|webm|m4s|mp4)$")
_TYPES = {
    "m3u8": "application/vnd.apple.mpegurl",
    "ts": "video/mp2t",
    "mpd": "application/dash+xml",
    "webm": "video/webm",
    "m4s": "video/iso.segment",
    "mp4": "video/mp4",
}


@router.post("/start", response_model=StreamPublic)
async def start_stream(
    body: StreamStart, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> StreamPublic:
    """Start a live stream of the meeting (hosts and co-hosts)."""
    stream = await service.start(session, state, principal, body)
    return await service.public(state, stream)


@router.post("/stop", response_model=StreamPublic)
async def stop_stream(
    body: StreamStop, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> StreamPublic:
    stream, role = await service.get_visible(session, principal, body.stream_id)
    recording_service.ensure_manages(role)
    stream = await service.stop(session, state, stream)
    return await service.public(state, stream)


@router.get("/list", response_model=StreamList)
async def list_streams(
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    status: StreamStatusName | None = None,
    stream_type: StreamType | None = None,
    meeting_id: uuid.UUID | None = None,
    page: Page = 1,
    page_size: PageSize = 20,
) -> StreamList:
    params = PageParams(page=page, page_size=page_size)
    rows, total = await service.list_streams(
        session, principal, params, status, stream_type, meeting_id
    )
    return StreamList(
        filters={
            "status": status or "",
            "stream_type": stream_type or "",
            "user_id": "",
        },
        message="Streams retrieved successfully",
        pagination=Pagination.of(page, page_size, total),
        streams=[await service.public(state, s) for s in rows],
    )


@router.get("/status/{stream_id}", response_model=StreamPublic)
async def stream_status(
    stream_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> StreamPublic:
    stream, _role = await service.get_visible(session, principal, stream_id)
    return await service.public(state, stream)


@router.get("/{stream_id}/status", response_model=StreamPublic)
async def stream_status_alias(
    stream_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> StreamPublic:
    """The same as ``/streaming/status/{id}`` (the second API document's path)."""
    stream, _role = await service.get_visible(session, principal, stream_id)
    return await service.public(state, stream)


@router.get("/{kind}/{stream_id}/{name}", response_class=StreamingResponse)
async def stream_file(
    kind: str,
    stream_id: uuid.UUID,
    name: str,
    request: Request,
    session: SessionDep,
    state: StateDep,
) -> Response:
    """A playlist, manifest or segment of an HLS or DASH stream (public by its URL)."""
    match = _FILE.match(name)
    if kind not in ("hls", "dash") or match is None:
        raise NotFound("No such stream file")
    stream = await session.get(LiveStream, stream_id)
    if stream is None or stream.stream_type != kind:
        raise service.not_found(stream_id)
    await session.commit()
    key = f"{live_stream_folder(str(stream_id))}{name}"
    stored = await state.storage.stat(key)
    if stored is None:
        raise NotFound(f"'{name}' is not (yet) part of stream '{stream_id}'")
    media_type = _TYPES[match.group(1)]
    if match.group(1) in ("m3u8", "mpd"):
        client = request.client.host if request.client else "unknown"
        viewer = service.Viewers.key_of(client, request.headers.get("user-agent", ""))
        await service.viewers(state).seen(str(stream_id), viewer)
        # The streamer replaces the playlist or manifest every segment, so the object
        # read may be newer than the one stat saw: send what was read, with its length.
        index = b"".join([chunk async for chunk in state.storage.read(key)])
        return Response(index, media_type=media_type, headers={"Cache-Control": "no-cache"})
    # A segment is stored once, complete, before the playlist or manifest names it.
    headers = {"Content-Length": str(stored.size), "Cache-Control": "max-age=3600"}
    return StreamingResponse(state.storage.read(key), headers=headers, media_type=media_type)


@internal_router.post("/{stream_id}/report", response_model=StreamerAnswer)
async def streamer_report(
    stream_id: uuid.UUID,
    report: StreamerReport,
    session: SessionDep,
    state: StateDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Any:
    stream = await session.get(LiveStream, stream_id)
    if stream is None:
        raise service.not_found(stream_id)
    service.verify_streamer(state, authorization, stream)
    stream = await service.apply_report(session, state, stream, report)
    return StreamerAnswer(stop=stream.stop_requested)
