"""Durable media-processing jobs: planning and queueing (api side), claiming under a
lease and finishing (worker side).

Called by ``routers.ffmpeg`` / ``routers.media`` to queue and inspect jobs, and by
``media.worker`` to run them. The database is the queue, so jobs survive restarts of
the api and of workers, on SQLite and PostgreSQL alike:

- ``claim`` is a compare-and-set ``UPDATE … WHERE status='queued' OR (status='processing'
  AND lease_expires_at < now)``; only the worker whose update matched a row owns the job,
  so a job never runs twice at once. Each claim increments ``attempts``, which together
  with ``claimed_by`` fences every later write: a worker that lost its lease (and so its
  job) can no longer report progress or complete it.
- A running job's worker renews the lease with each progress write; a worker that dies
  stops renewing, and once the lease has expired the next claim retries the job, up to
  ``max_attempts`` claims, after which it fails.
- Cancelling sets ``cancelled``; the worker notices when its next progress write matches
  nothing, stops, and deletes what it had made.
- A completed job's outputs become media items in the same transaction that marks it
  completed, with the ids reserved when it was queued.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from konfer.api.db.models import JobStatus, Media, MediaJob
from konfer.api.media import plans
from konfer.api.media.formats import AUDIO_CONTAINERS
from konfer.api.schemas.media import (
    ExtractAudioRequest,
    JobStatusPublic,
    MergeRequest,
    ProcessRequest,
    ThumbnailRequest,
    TranscodeRequest,
    parse_bitrate,
    parse_resolution,
)
from konfer.core.errors import Conflict, NotFound, ValidationFailed
from konfer.core.settings import Settings
from konfer.core.timeutil import utcnow

ACTIVE = (JobStatus.queued.value, JobStatus.processing.value)
FINISHED = (JobStatus.completed.value, JobStatus.failed.value, JobStatus.cancelled.value)
QUALITY_CRF = {"low": 32, "medium": 28, "high": 23}
QUALITY_AUDIO = {"low": 64_000, "medium": 96_000, "high": 160_000}


def job_not_found(job_id: uuid.UUID) -> NotFound:
    return NotFound(f"Job with ID '{job_id}' not found")


# --- plans as JSON ---------------------------------------------------------------------


def plan_to_json(plan: plans.OutputPlan) -> dict[str, Any]:
    return {
        "container": plan.container,
        "video": asdict(plan.video) if plan.video else None,
        "audio": asdict(plan.audio) if plan.audio else None,
    }


def plan_from_json(data: dict[str, Any]) -> plans.OutputPlan:
    return plans.OutputPlan(
        container=data["container"],
        video=plans.VideoPlan(**data["video"]) if data.get("video") else None,
        audio=plans.AudioPlan(**data["audio"]) if data.get("audio") else None,
    )


# --- planning (validation against the input) -------------------------------------------


def _require_av(media: Media, field: str) -> None:
    if media.file_type not in ("video", "audio"):
        raise ValidationFailed(
            details={field: f"Needs a video or audio file, not {media.file_type}"}
        )


def transcode_plan(media: Media, body: TranscodeRequest) -> plans.OutputPlan:
    """The output of a transcode request, or a 400 naming the field that cannot be met."""
    _require_av(media, "input_media_id")
    container = body.output_format
    vcodecs, acodecs = plans.CONTAINER_CODECS[container]
    has_video, has_audio = media.video_codec is not None, media.audio_codec is not None
    problems: dict[str, str] = {}
    if body.video_codec is not None:
        if not vcodecs:
            problems["video_codec"] = f"{container} is an audio format"
        elif body.video_codec not in vcodecs:
            problems["video_codec"] = f"{container} carries {', '.join(vcodecs)}"
        elif not has_video:
            problems["video_codec"] = "The input has no video"
    if body.audio_codec is not None:
        if body.audio_codec not in acodecs:
            problems["audio_codec"] = f"{container} carries {', '.join(acodecs)}"
        elif not has_audio:
            problems["audio_codec"] = "The input has no audio"
    video_out = has_video and bool(vcodecs)
    if not video_out:
        for name in ("resolution", "frame_rate"):
            if getattr(body, name) is not None:
                problems[name] = "The output has no video"
    if not has_audio and not video_out:
        problems["output_format"] = "The input has no audio to write into an audio format"
    if problems:
        raise ValidationFailed(details=problems)
    bitrate = parse_bitrate(body.bitrate) if body.bitrate is not None else None
    video = None
    if video_out:
        width, height = parse_resolution(body.resolution) if body.resolution else (None, None)
        video = plans.VideoPlan(
            codec=body.video_codec or vcodecs[0],
            width=width,
            height=height,
            fps=body.frame_rate,
            bitrate=bitrate,
            preset=body.preset,
        )
    audio = None
    if has_audio:
        audio = plans.AudioPlan(
            codec=body.audio_codec or acodecs[0], bitrate=None if video_out else bitrate
        )
    return plans.OutputPlan(container, video, audio)


def extract_audio_plan(media: Media, body: ExtractAudioRequest) -> dict[str, Any]:
    _require_av(media, "video_media_id")
    if media.audio_codec is None:
        raise ValidationFailed(details={"video_media_id": "The input has no audio stream"})
    plan = plans.default_plan(body.audio_format)
    bitrate = parse_bitrate(body.audio_bitrate) if body.audio_bitrate is not None else None
    audio = plans.AudioPlan(codec=plan.audio.codec if plan.audio else "aac", bitrate=bitrate)
    # Copy the stream as it is when it already is the target codec and no bitrate is asked.
    copy = bitrate is None and media.audio_codec == audio.codec
    return {"plan": plan_to_json(plans.OutputPlan(body.audio_format, None, audio)), "copy": copy}


def extract_video_params(media: Media) -> dict[str, Any]:
    if media.file_type != "video" or media.video_codec is None:
        raise ValidationFailed(details={"media_id": "Needs a video file"})
    return {"container": media.container}


def merge_plan(inputs: list[Media], body: MergeRequest) -> plans.OutputPlan:
    problems: dict[str, str] = {}
    for index, media in enumerate(inputs):
        if media.file_type not in ("video", "audio"):
            problems[f"media_ids.{index}"] = f"Needs a video or audio file, not {media.file_type}"
    if problems:
        raise ValidationFailed(details=problems)
    kinds = {m.file_type for m in inputs}
    if len(kinds) > 1:
        raise ValidationFailed(
            details={"media_ids": "Merge inputs must all be video or all be audio"}
        )
    if body.transition != "none":
        short = [str(m.id) for m in inputs if (m.duration or 0) <= body.transition_duration * 2]
        if short:
            raise ValidationFailed(
                details={
                    "transition_duration": "Every input must last more than twice the "
                    f"transition; too short: {', '.join(short)}"
                }
            )
    plan = plans.default_plan(body.output_format)
    if "video" in kinds and plan.video is None:
        return plans.OutputPlan(body.output_format, None, plan.audio)
    if "audio" in kinds and plan.video is not None:
        raise ValidationFailed(details={"output_format": "Audio inputs merge into an audio format"})
    return plan


def thumbnail_params(media: Media, body: ThumbnailRequest) -> dict[str, Any]:
    if media.file_type not in ("video", "image"):
        raise ValidationFailed(details={"media_id": "Needs a video or an image"})
    return {
        "timestamp": body.timestamp,
        "width": body.width,
        "height": body.height,
        "format": body.format,
    }


def process_steps(media: Media, body: ProcessRequest) -> list[dict[str, Any]]:
    """The steps of a ``/media/process`` request, one output each, in the given order."""
    quality = body.quality or "medium"
    fmt = (body.output_format or "").lower().lstrip(".") or None
    if fmt == "jpeg":
        fmt = "jpg"
    steps: list[dict[str, Any]] = []
    problems: dict[str, str] = {}
    for index, op in enumerate(body.operations):
        where = f"operations.{index}"
        if op in [s["op"] for s in steps]:
            problems[where] = "Each operation at most once"
            continue
        if op == "generate_thumbnail":
            if media.file_type not in ("video", "image"):
                problems[where] = "Thumbnails need a video or an image"
                continue
            image = fmt if fmt in ("jpg", "png", "webp") else "jpg"
            steps.append(
                {
                    "op": op,
                    "params": {
                        "timestamp": min(1.0, (media.duration or 0) * 0.1),
                        "width": 320,
                        "height": 180,
                        "format": image,
                    },
                }
            )
            continue
        if media.file_type not in ("video", "audio"):
            problems[where] = f"{op} needs a video or audio file"
            continue
        if op == "extract_audio":
            if media.audio_codec is None:
                problems[where] = "The input has no audio stream"
                continue
            target = fmt if fmt in AUDIO_CONTAINERS else "mp3"
            audio = plans.default_plan(target).audio
            assert audio is not None
            bitrate = QUALITY_AUDIO[body.quality] if body.quality else None
            plan = plans.OutputPlan(target, None, plans.AudioPlan(audio.codec, bitrate))
            copy = bitrate is None and media.audio_codec == audio.codec
            steps.append({"op": op, "params": {"plan": plan_to_json(plan), "copy": copy}})
        elif op == "extract_video":
            if media.video_codec is None:
                problems[where] = "The input has no video stream"
                continue
            steps.append({"op": op, "params": {"container": media.container}})
        else:  # compress, convert_format
            if op == "convert_format":
                if fmt is None or fmt not in plans.CONTAINER_CODECS:
                    problems["output_format"] = (
                        "convert_format needs an output_format: "
                        + ", ".join(plans.CONTAINER_CODECS)
                    )
                    continue
                target = fmt
            else:
                target = fmt if fmt in plans.CONTAINER_CODECS else media.container
                if target not in plans.CONTAINER_CODECS:
                    target = "mp4" if media.video_codec else "mp3"
            vcodecs, acodecs = plans.CONTAINER_CODECS[target]
            video = None
            if vcodecs and media.video_codec is not None:
                video = plans.VideoPlan(codec=vcodecs[0], crf=QUALITY_CRF[quality], preset="medium")
            audio_plan = None
            if media.audio_codec is not None:
                audio_plan = plans.AudioPlan(
                    codec=acodecs[0], bitrate=QUALITY_AUDIO[quality] if op == "compress" else None
                )
            if video is None and audio_plan is None:
                problems[where] = f"Nothing in the input can go into {target}"
                continue
            plan = plans.OutputPlan(target, video, audio_plan)
            steps.append({"op": op, "params": {"plan": plan_to_json(plan)}})
    if problems:
        raise ValidationFailed(details=problems)
    return steps


def estimate(kind: str, inputs: list[Media]) -> int:
    duration = sum(m.duration or 0 for m in inputs) or None
    pixels = max(((m.width or 0) * (m.height or 0) for m in inputs), default=0) or None
    return plans.estimate_seconds(duration, pixels, kind)


# --- api side --------------------------------------------------------------------------


async def enqueue(
    session: AsyncSession,
    settings: Settings,
    owner_id: uuid.UUID,
    kind: str,
    params: dict[str, Any],
    inputs: list[Media],
    outputs: int = 1,
) -> MediaJob:
    now = utcnow()
    output_ids = [uuid.uuid4() for _ in range(outputs)]
    job = MediaJob(
        id=uuid.uuid4(),
        owner_id=owner_id,
        kind=kind,
        status=JobStatus.queued.value,
        params=params,
        input_media_id=inputs[0].id,
        input_media_ids=[str(m.id) for m in inputs],
        output_media_id=output_ids[0] if output_ids else None,
        output_media_ids=[str(i) for i in output_ids],
        progress=0.0,
        attempts=0,
        max_attempts=settings.worker_max_attempts,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    await session.commit()
    await session.refresh(job)
    return job


def status_public(job: MediaJob) -> JobStatusPublic:
    processing_time = None
    if job.started_at is not None:
        end = job.completed_at or utcnow()
        processing_time = round(max(0.0, (end - job.started_at).total_seconds()), 3)
    return JobStatusPublic(
        job_id=job.id,
        kind=job.kind,
        status=job.status,
        progress=100 if job.status == JobStatus.completed.value else int(job.progress),
        input_media_id=job.input_media_id,
        input_media_ids=[uuid.UUID(i) for i in job.input_media_ids],
        output_media_id=job.output_media_id if job.status == JobStatus.completed.value else None,
        output_media_ids=[uuid.UUID(i) for i in job.output_media_ids]
        if job.status == JobStatus.completed.value
        else [],
        attempts=job.attempts,
        created_at=job.created_at,
        started_at=job.started_at,
        completed_at=job.completed_at,
        processing_time=processing_time,
        error=job.error,
    )


async def get_visible_job(
    session: AsyncSession, job_id: uuid.UUID, user_id: uuid.UUID, is_admin: bool
) -> MediaJob:
    job = await session.get(MediaJob, job_id)
    if job is None or not (is_admin or job.owner_id == user_id):
        raise job_not_found(job_id)
    return job


async def cancel(session: AsyncSession, job: MediaJob) -> MediaJob:
    now = utcnow()
    result = await session.execute(
        update(MediaJob)
        .where(MediaJob.id == job.id, MediaJob.status.in_(ACTIVE))
        .values(status=JobStatus.cancelled.value, completed_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    await session.refresh(job)
    if not getattr(result, "rowcount", 0):
        raise Conflict(f"Job has already finished ({job.status})")
    return job


async def wait_finished(
    sessionmaker: async_sessionmaker[AsyncSession], job_id: uuid.UUID, within: float
) -> MediaJob | None:
    """Poll until the job finishes or ``within`` seconds pass; the job as last seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    delay = 0.05
    while True:
        async with sessionmaker() as session:
            job = await session.get(MediaJob, job_id)
        if job is None or job.status in FINISHED or loop.time() >= deadline:
            return job
        await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
        delay = min(delay * 1.5, 0.5)


# --- worker side -----------------------------------------------------------------------


def _claimable(now: Any) -> Any:
    return or_(
        MediaJob.status == JobStatus.queued.value,
        and_(MediaJob.status == JobStatus.processing.value, MediaJob.lease_expires_at < now),
    )


async def claim(
    session: AsyncSession, worker_id: str, lease_seconds: float, scan: int = 8
) -> MediaJob | None:
    """Take the oldest claimable job, or None. Safe against any number of workers."""
    now = utcnow()
    candidates = (
        await session.execute(
            select(MediaJob.id, MediaJob.attempts, MediaJob.max_attempts, MediaJob.status)
            .where(_claimable(now))
            .order_by(MediaJob.created_at, MediaJob.id)
            .limit(scan)
        )
    ).all()
    await session.rollback()
    for job_id, attempts, max_attempts, status in candidates:
        if status == JobStatus.processing.value and attempts >= max_attempts:
            await session.execute(
                update(MediaJob)
                .where(MediaJob.id == job_id, _claimable(now))
                .values(
                    status=JobStatus.failed.value,
                    error=f"The job stopped its worker {attempts} times; giving up",
                    completed_at=now,
                    updated_at=now,
                    claimed_by=None,
                    lease_expires_at=None,
                )
                .execution_options(synchronize_session=False)
            )
            await session.commit()
            continue
        result = await session.execute(
            update(MediaJob)
            .where(MediaJob.id == job_id, MediaJob.attempts == attempts, _claimable(now))
            .values(
                status=JobStatus.processing.value,
                claimed_by=worker_id,
                attempts=attempts + 1,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                started_at=now,
                progress=0.0,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        await session.commit()
        if getattr(result, "rowcount", 0) == 1:
            job = await session.get(MediaJob, job_id, populate_existing=True)
            assert job is not None
            return job
    return None


def _owned(job_id: uuid.UUID, worker_id: str, attempt: int) -> Any:
    return and_(
        MediaJob.id == job_id,
        MediaJob.claimed_by == worker_id,
        MediaJob.attempts == attempt,
        MediaJob.status == JobStatus.processing.value,
    )


async def heartbeat(
    session: AsyncSession,
    job_id: uuid.UUID,
    worker_id: str,
    attempt: int,
    progress: float,
    lease_seconds: float,
) -> bool:
    """Write progress and renew the lease; False when the job is no longer this worker's
    (cancelled, or its lease expired and another worker took it)."""
    now = utcnow()
    result = await session.execute(
        update(MediaJob)
        .where(_owned(job_id, worker_id, attempt))
        .values(
            progress=round(max(0.0, min(99.0, progress * 100)), 1),
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    return getattr(result, "rowcount", 0) == 1


async def complete(
    session: AsyncSession,
    job_id: uuid.UUID,
    worker_id: str,
    attempt: int,
    outputs: list[Media],
    attach_thumbnail: tuple[uuid.UUID, str] | None = None,
) -> bool:
    """Mark the job completed and record its outputs, in one transaction; False (and
    nothing written) if the job is no longer this worker's."""
    now = utcnow()
    result = await session.execute(
        update(MediaJob)
        .where(_owned(job_id, worker_id, attempt))
        .values(
            status=JobStatus.completed.value,
            progress=100.0,
            completed_at=now,
            updated_at=now,
            lease_expires_at=None,
            error=None,
        )
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        await session.rollback()
        return False
    for media in outputs:
        session.add(media)
    if attach_thumbnail is not None:
        media_id, key = attach_thumbnail
        attached = await session.execute(
            update(Media)
            .where(Media.id == media_id)
            .values(thumbnail_key=key)
            .execution_options(synchronize_session=False)
        )
        if getattr(attached, "rowcount", 0) != 1:  # the item was deleted meanwhile
            await session.rollback()
            return False
    await session.commit()
    return True


async def fail(
    session: AsyncSession,
    job_id: uuid.UUID,
    worker_id: str,
    attempt: int,
    error: str,
    retry: bool,
) -> bool:
    """Record a failure: permanent (``failed``), or back to ``queued`` for another try
    while attempts remain."""
    now = utcnow()
    job = await session.get(MediaJob, job_id, populate_existing=True)
    if job is None:
        return False
    again = retry and job.attempts < job.max_attempts
    values: dict[str, Any] = {
        "status": JobStatus.queued.value if again else JobStatus.failed.value,
        "error": error[:2000],
        "claimed_by": None,
        "lease_expires_at": None,
        "updated_at": now,
    }
    if not again:
        values["completed_at"] = now
    result = await session.execute(
        update(MediaJob)
        .where(_owned(job_id, worker_id, attempt))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    return getattr(result, "rowcount", 0) == 1
