"""The media library: upload, listing, access rules, download ranges and deletion.

Called by ``routers.media`` (and by ``services.jobs`` for access checks on job inputs).

Who may do what (the API documents are silent, so decided here):

- See (list, info, download, thumbnail, use as a job input): the uploader, members of
  the item's meeting (a Participant row), and admins. Everyone else gets 404, the same
  answer as for an id that does not exist.
- Delete: the uploader, a host or co-host of the item's meeting, and admins.
- An upload may name a meeting only if the uploader belongs to it (admins: any).

Upload validation: the container is sniffed from the first bytes (``media.formats``),
then confirmed by reading the stored object with PyAV (audio/video: the streams must
parse and a frame must decode) or Pillow (images) in a child process (``media.probe``),
or by a trailer check (PDF). A declared
``file_type`` must match what the content is. Anything refused leaves nothing behind.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from konfer.api.db.models import (
    JobStatus,
    Media,
    MediaJob,
    MediaSource,
    MeetingRole,
    Participant,
    User,
)
from konfer.api.deps import Principal
from konfer.api.media.formats import FILE_TYPES, Sniffed, extension_for, mime_for
from konfer.api.media.probe import Inspected as Inspected
from konfer.api.media.probe import ProbeProcess, inspect_document, needs_child
from konfer.api.media.probe import inspect_media as inspect_media
from konfer.api.media.upload import Received, receive
from konfer.api.schemas.common import PageParams
from konfer.api.schemas.media import MediaPublic
from konfer.api.services import meetings as meeting_service
from konfer.core.errors import (
    InsufficientPermissions,
    NotFound,
    RangeNotSatisfiable,
    ValidationFailed,
)
from konfer.core.settings import Settings
from konfer.core.storage import Storage
from konfer.core.timeutil import utcnow

UPLOAD_FIELDS = {"meeting_id", "file_type", "description", "user_id"}
AUTO_THUMBNAIL = {"width": 320, "height": 180, "format": "jpg"}
MAX_DESCRIPTION = 1000


def not_found(media_id: uuid.UUID | str) -> NotFound:
    return NotFound("Media file not found", details={"media_id": str(media_id)})


def object_key(media_id: uuid.UUID, ext: str) -> str:
    """A fresh key per stored file: a retried job never overwrites an earlier attempt's."""
    return f"media/{media_id}/{uuid.uuid4().hex[:16]}.{ext}"


def public(media: Media, settings: Settings) -> MediaPublic:
    base = settings.resolved_public_url
    visual = media.file_type in ("video", "image")
    return MediaPublic(
        media_id=media.id,
        filename=media.filename,
        file_type=media.file_type,
        size=media.size,
        mime_type=media.mime_type,
        format=media.container,
        duration=media.duration,
        resolution=f"{media.width}x{media.height}" if media.width and media.height else None,
        width=media.width,
        height=media.height,
        bitrate=media.bitrate,
        codec=media.video_codec,
        audio_codec=media.audio_codec,
        frame_rate=media.frame_rate,
        sample_rate=media.sample_rate,
        channels=media.channels,
        meeting_id=media.meeting_id,
        description=media.description,
        url=f"{base}/api/v1/media/download/{media.id}",
        thumbnail_url=f"{base}/api/v1/media/thumbnail/{media.id}" if visual else None,
        source=media.source,
        source_job_id=media.source_job_id,
        uploaded_at=media.created_at,
        uploaded_by=media.owner_id,
        download_count=media.download_count,
        last_accessed=media.last_accessed_at,
    )


# --- access ----------------------------------------------------------------------------


def _member_meetings(user_id: uuid.UUID) -> Any:
    return select(Participant.meeting_id).where(Participant.user_id == user_id)


def visible_to(principal: Principal) -> Any:
    """A WHERE clause: media the caller may see."""
    if principal.is_admin:
        return True
    uid = principal.user.id
    return or_(Media.owner_id == uid, Media.meeting_id.in_(_member_meetings(uid)))


async def get_visible(session: AsyncSession, principal: Principal, media_id: uuid.UUID) -> Media:
    media = await session.get(Media, media_id)
    if media is None:
        raise not_found(media_id)
    if principal.is_admin or media.owner_id == principal.user.id:
        return media
    if media.meeting_id is not None and await meeting_service.membership(
        session, media.meeting_id, principal.user.id
    ):
        return media
    raise not_found(media_id)


async def ensure_may_delete(session: AsyncSession, principal: Principal, media: Media) -> None:
    if principal.is_admin or media.owner_id == principal.user.id:
        return
    if media.meeting_id is not None:
        member = await meeting_service.membership(session, media.meeting_id, principal.user.id)
        if member is not None and member.role in (
            MeetingRole.host.value,
            MeetingRole.co_host.value,
        ):
            return
    raise InsufficientPermissions(
        "Only the uploader, the meeting's hosts or an administrator can delete this file"
    )


# --- upload ----------------------------------------------------------------------------


def clean_filename(raw: str, ext: str) -> str:
    """The client's file name without control characters or path parts, at most 255."""
    text = unicodedata.normalize("NFC", raw)
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C").strip(" .")
    text = re.sub(r"\s+", " ", text)
    if len(text) > 255:
        stem, dot, suffix = text.rpartition(".")
        text = (stem[: 250 - len(suffix)] + dot + suffix) if dot and len(suffix) < 10 else text
        text = text[:255]
    return text or f"upload.{ext}"


@dataclass(slots=True)
class UploadFields:
    meeting_id: uuid.UUID | None
    file_type: str | None
    description: str | None


async def _fields(session: AsyncSession, principal: Principal, raw: dict[str, str]) -> UploadFields:
    unknown = set(raw) - UPLOAD_FIELDS
    if unknown:
        raise ValidationFailed(details=dict.fromkeys(sorted(unknown), "Unknown field"))
    problems: dict[str, str] = {}
    meeting_id: uuid.UUID | None = None
    if raw.get("meeting_id", "").strip():
        try:
            meeting_id = uuid.UUID(raw["meeting_id"].strip())
        except ValueError:
            problems["meeting_id"] = "Must be a meeting id (UUID)"
    file_type = raw.get("file_type", "").strip().lower() or None
    if file_type is not None and file_type not in FILE_TYPES:
        problems["file_type"] = "Must be one of: video, audio, image, document"
    description = raw.get("description", "").strip() or None
    if description is not None and len(description) > MAX_DESCRIPTION:
        problems["description"] = f"At most {MAX_DESCRIPTION} characters"
    user_id = raw.get("user_id", "").strip()
    if user_id and user_id != str(principal.user.id):
        problems["user_id"] = "Uploads belong to the caller; omit it or give your own id"
    if problems:
        raise ValidationFailed(details=problems)
    if meeting_id is not None:
        if principal.is_admin:
            await meeting_service.get_meeting(session, meeting_id)
        elif await meeting_service.membership(session, meeting_id, principal.user.id) is None:
            raise meeting_service.not_found(meeting_id)
    return UploadFields(meeting_id, file_type, description)


def _limit_for(settings: Settings) -> Callable[[str], tuple[int, str]]:
    def limit(file_type: str) -> tuple[int, str]:
        return settings.media_max_bytes(
            file_type
        ), f"{getattr(settings, f'media_max_{file_type}_mb')}MB"

    return limit


async def upload(
    session: AsyncSession,
    storage: Storage,
    settings: Settings,
    principal: Principal,
    stream: AsyncIterator[bytes],
    content_type: str | None,
    keepalive: Callable[[], Awaitable[None]] | None = None,
) -> Media:
    """Stream a multipart upload into storage, validate it, and record it."""
    media_id = uuid.uuid4()
    prober = ProbeProcess()

    def key_for(sniffed: Sniffed) -> tuple[str, str]:
        if needs_child(sniffed):
            prober.spawn()  # PyAV's imports overlap the rest of the transfer
        return (
            object_key(media_id, extension_for(sniffed.container)),
            mime_for(sniffed.container, sniffed.file_type),
        )

    try:
        received: Received = await receive(
            stream, content_type, storage, key_for, _limit_for(settings), keepalive
        )
        return await _record(session, storage, settings, principal, media_id, received, prober)
    finally:
        await prober.close()


async def _record(
    session: AsyncSession,
    storage: Storage,
    settings: Settings,
    principal: Principal,
    media_id: uuid.UUID,
    received: Received,
    prober: ProbeProcess,
) -> Media:
    """Check a stored upload's content and fields, then add its row (or remove it)."""
    try:
        fields = await _fields(session, principal, received.fields)
        if needs_child(received.sniffed):
            facts = await prober.inspect(storage, received.key, received.size, received.sniffed)
        else:
            facts = await inspect_document(storage, received.key, received.size, received.sniffed)
        if fields.file_type is not None and fields.file_type != facts.file_type:
            raise ValidationFailed(
                details={
                    "file_type": f"Declared {fields.file_type}, but the file is {facts.file_type}"
                }
            )
        media = Media(
            id=media_id,
            owner_id=principal.user.id,
            meeting_id=fields.meeting_id,
            filename=clean_filename(received.filename, extension_for(facts.container)),
            description=fields.description,
            file_type=facts.file_type,
            container=facts.container,
            mime_type=facts.mime_type,
            size=received.size,
            object_key=received.key,
            duration=facts.duration,
            width=facts.width,
            height=facts.height,
            bitrate=facts.bitrate,
            video_codec=facts.video_codec,
            audio_codec=facts.audio_codec,
            frame_rate=facts.frame_rate,
            sample_rate=facts.sample_rate,
            channels=facts.channels,
            source=MediaSource.upload.value,
            download_count=0,
            created_at=utcnow(),
        )
        session.add(media)
        if media.file_type in ("video", "image"):
            session.add(auto_thumbnail_job(media, settings))
        await session.commit()
    except BaseException:
        await session.rollback()
        await storage.delete(received.key)
        raise
    await session.refresh(media)
    return media


def auto_thumbnail_job(media: Media, settings: Settings) -> MediaJob:
    """The job that makes an item's preview picture (``/media/thumbnail/{id}``)."""
    timestamp = min(1.0, (media.duration or 0) * 0.1)
    return MediaJob(
        id=uuid.uuid4(),
        owner_id=media.owner_id,
        kind="thumbnail",
        status=JobStatus.queued.value,
        params={**AUTO_THUMBNAIL, "timestamp": timestamp, "attach": True},
        input_media_id=media.id,
        input_media_ids=[str(media.id)],
        output_media_ids=[],
        progress=0.0,
        attempts=0,
        max_attempts=settings.worker_max_attempts,
        created_at=utcnow(),
        updated_at=utcnow(),
    )


# --- listing ---------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class MediaFilters:
    file_type: str | None = None
    meeting_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None


async def list_media(
    session: AsyncSession, principal: Principal, filters: MediaFilters, page: PageParams
) -> tuple[list[Media], int]:
    """Media the caller may see, newest first."""
    query = select(Media).where(visible_to(principal))
    if filters.file_type:
        query = query.where(Media.file_type == filters.file_type)
    if filters.meeting_id:
        query = query.where(Media.meeting_id == filters.meeting_id)
    if filters.user_id:
        query = query.where(Media.owner_id == filters.user_id)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = await session.execute(
        query.order_by(Media.created_at.desc(), Media.id).offset(page.offset).limit(page.page_size)
    )
    return list(rows.scalars().all()), int(total)


# --- download --------------------------------------------------------------------------


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range (first, last inclusive) a ``Range`` header asks for.

    None means "send everything": no header, another unit, or several ranges (allowed by
    RFC 9110, which lets a server ignore Range). A malformed or unsatisfiable single
    range raises ``RangeNotSatisfiable`` (416) carrying ``Content-Range: bytes */size``.
    """
    refuse = RangeNotSatisfiable(
        f"Range {header!r} cannot be satisfied for a file of {size} bytes",
        headers={"Content-Range": f"bytes */{size}"},
    )
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes":
        return None
    spec = spec.strip()
    if "," in spec:
        return None
    first_s, dash, last_s = spec.partition("-")
    first_s, last_s = first_s.strip(), last_s.strip()
    if not dash or not (first_s.isdigit() or last_s.isdigit()):
        raise refuse
    if (first_s and not first_s.isdigit()) or (last_s and not last_s.isdigit()):
        raise refuse
    if not first_s:  # suffix: the last N bytes
        suffix = int(last_s)
        if suffix == 0 or size == 0:
            raise refuse
        return max(0, size - suffix), size - 1
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if first >= size or last < first:
        raise refuse
    return first, min(last, size - 1)


async def record_access(session: AsyncSession, media: Media, counted: bool) -> None:
    """Bump the download counter (for a request from byte 0) and the last access time."""
    values: dict[str, Any] = {"last_accessed_at": utcnow()}
    if counted:
        values["download_count"] = Media.download_count + 1
    await session.execute(
        update(Media)
        .where(Media.id == media.id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    await session.commit()


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback name and the UTF-8 original (RFC 6266)."""
    from urllib.parse import quote

    fallback = filename.encode("ascii", "replace").decode().replace('"', "'").replace("?", "_")
    fallback = "".join(ch if 32 <= ord(ch) < 127 else "_" for ch in fallback) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


# --- deletion --------------------------------------------------------------------------


async def delete_media(session: AsyncSession, storage: Storage, media: Media) -> None:
    """Remove the row, its objects, and cancel jobs still waiting to read it."""
    keys = [k for k in (media.object_key, media.thumbnail_key) if k]
    now = utcnow()
    await session.execute(
        update(MediaJob)
        .where(
            MediaJob.input_media_id == media.id,
            MediaJob.status.in_([JobStatus.queued.value, JobStatus.processing.value]),
        )
        .values(
            status=JobStatus.cancelled.value,
            error="The input media was deleted",
            completed_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    await session.delete(media)
    await session.commit()
    for key in keys:
        await storage.delete(key)


async def owner_of(session: AsyncSession, media: Media) -> User | None:
    return await session.get(User, media.owner_id)
