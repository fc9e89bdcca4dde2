"""``/api/v1/ffmpeg/*``: transcode, extract-audio, extract-video, merge, thumbnail, and
job status / cancellation.

Every operation is a durable job in the database, run by ``konfer worker``; the routes
only check access and the request against the input (``services.jobs``) and queue it.
The answer names the job and the id its output will have as a media item once it
completes. ``/thumbnail`` waits (up to ``media_thumbnail_wait_seconds``) for its quick job
so it can answer with the picture's size as the API document shows.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter

from konfer.api.db.models import JobStatus, Media
from konfer.api.deps import CurrentPrincipal, SessionDep, StateDep
from konfer.api.schemas.media import (
    ExtractAudioRequest,
    ExtractVideoRequest,
    JobAccepted,
    JobStatusPublic,
    MergeRequest,
    ThumbnailAnswer,
    ThumbnailRequest,
    TranscodeAccepted,
    TranscodeRequest,
)
from konfer.api.services import jobs
from konfer.api.services import media as media_service
from konfer.core.timeutil import isoformat, utcnow

router = APIRouter(prefix="/api/v1/ffmpeg", tags=["ffmpeg"])


@router.get("/health", tags=["health"])
async def health() -> dict[str, str]:
    return {"service": "ffmpeg-service", "status": "ok", "time": isoformat(utcnow())}


@router.post("/transcode", response_model=TranscodeAccepted)
async def transcode(
    body: TranscodeRequest, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> TranscodeAccepted:
    """Re-encode to another container/codecs, size (``WxH`` or ``720p``), bitrate, rate."""
    media = await media_service.get_visible(session, principal, body.input_media_id)
    plan = jobs.transcode_plan(media, body)
    job = await jobs.enqueue(
        session,
        state.settings,
        principal.user.id,
        "transcode",
        {"plan": jobs.plan_to_json(plan)},
        [media],
    )
    state.metrics.media_jobs.labels("transcode").inc()
    assert job.output_media_id is not None
    return TranscodeAccepted(
        job_id=job.id,
        status=job.status,
        input_media_id=media.id,
        output_media_id=job.output_media_id,
        output_format=plan.container,
        estimated_time=jobs.estimate("transcode", [media]),
        created_at=job.created_at,
    )


async def _queued(
    state: StateDep,
    session: SessionDep,
    principal: CurrentPrincipal,
    kind: str,
    params: dict[str, Any],
    inputs: list[Media],
) -> JobAccepted:
    job = await jobs.enqueue(session, state.settings, principal.user.id, kind, params, inputs)
    state.metrics.media_jobs.labels(kind).inc()
    assert job.output_media_id is not None
    return JobAccepted(
        job_id=job.id,
        status=job.status,
        output_media_id=job.output_media_id,
        estimated_time=jobs.estimate(kind, inputs),
    )


@router.post("/extract-audio", response_model=JobAccepted)
async def extract_audio(
    body: ExtractAudioRequest, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> JobAccepted:
    """The audio track as mp3, wav, ogg, flac, aac or m4a (copied when already that codec)."""
    media = await media_service.get_visible(session, principal, body.video_media_id)
    params = jobs.extract_audio_plan(media, body)
    return await _queued(state, session, principal, "extract_audio", params, [media])


@router.post("/extract-video", response_model=JobAccepted)
async def extract_video(
    body: ExtractVideoRequest, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> JobAccepted:
    """The video without its audio, in the same container (stream copy, no re-encode)."""
    media = await media_service.get_visible(session, principal, body.media_id)
    params = jobs.extract_video_params(media)
    return await _queued(state, session, principal, "extract_video", params, [media])


@router.post("/merge", response_model=JobAccepted)
async def merge(
    body: MergeRequest, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> JobAccepted:
    """Join 2 to 10 items end to end, with no transition, a cross-fade or a dissolve."""
    inputs = [await media_service.get_visible(session, principal, i) for i in body.media_ids]
    plan = jobs.merge_plan(inputs, body)
    params = {
        "plan": jobs.plan_to_json(plan),
        "transition": body.transition,
        "transition_duration": body.transition_duration,
    }
    return await _queued(state, session, principal, "merge", params, inputs)


@router.post("/thumbnail", response_model=ThumbnailAnswer)
async def thumbnail(
    body: ThumbnailRequest, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> ThumbnailAnswer:
    """A picture of the frame at ``timestamp``, letterboxed to ``width`` x ``height``; it
    becomes a media item (image)."""
    media = await media_service.get_visible(session, principal, body.media_id)
    params = jobs.thumbnail_params(media, body)
    job = await jobs.enqueue(
        session, state.settings, principal.user.id, "thumbnail", params, [media]
    )
    state.metrics.media_jobs.labels("thumbnail").inc()
    assert job.output_media_id is not None
    seen = await jobs.wait_finished(
        state.sessionmaker, job.id, state.settings.media_thumbnail_wait_seconds
    )
    size = None
    if seen is not None and seen.status == JobStatus.completed.value:
        made = await session.get(Media, job.output_media_id)
        size = made.size if made is not None else None
    return ThumbnailAnswer(
        thumbnail_id=job.output_media_id,
        url=f"{state.settings.resolved_public_url}/api/v1/media/download/{job.output_media_id}",
        width=body.width,
        height=body.height,
        format=body.format,
        size=size,
        job_id=job.id,
        status=seen.status if seen is not None else job.status,
    )


@router.get("/job/{job_id}/status", response_model=JobStatusPublic)
async def job_status(
    job_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep
) -> JobStatusPublic:
    """queued, processing (with progress percent), completed, failed or cancelled."""
    job = await jobs.get_visible_job(session, job_id, principal.user.id, principal.is_admin)
    return jobs.status_public(job)


@router.post("/job/{job_id}/cancel", response_model=JobStatusPublic)
async def cancel_job(
    job_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep
) -> JobStatusPublic:
    """Cancel a queued or running job (409 once it has finished); a running job stops
    within about a second and leaves nothing behind."""
    job = await jobs.get_visible_job(session, job_id, principal.user.id, principal.is_admin)
    return jobs.status_public(await jobs.cancel(session, job))
