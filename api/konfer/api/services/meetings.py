"""Meetings: scheduling, lifecycle, joining, participants, roles and chat history.

Called by the thin routers ``routers.meetings`` and ``routers.my_meetings``, and by
``deps`` for the membership lookup behind ``VisibleMeeting`` / ``MeetingHost``. The
database says who belongs to a meeting and who has joined it; who is connected right now
comes from the signaling presence (``signaling.presence``), shared by every replica.

Decisions where the API documents are silent:

- Status only moves forward: ``scheduled`` → ``in_progress`` (start) → ``ended`` (end;
  a scheduled meeting may be ended directly, which cancels it). An ended meeting is read
  only: changing, joining, chatting, adding or removing people answer 409
  ``MEETING_ENDED``. Starting twice answers 409 ``RESOURCE_CONFLICT``.
- Joining a scheduled meeting is allowed and does not start it.
- The password is asked only of people who are not members yet; the creator and anyone a
  host added skip it.
- ``ROOM_FULL`` is a 409: the request is valid, the room's current state refuses it. The
  count is of users connected live by WebSocket; signaling enforces the same cap again
  when the socket joins, which closes the window between the two.
- Leaving is idempotent: leaving again (or without ever having joined) answers 200 with
  the length of the last stay (0 when there was none).
- A meeting keeps at least one host: demoting or removing the last one is a 409.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Select, and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from konfer.api.db.models import (
    ChatMessage,
    Meeting,
    MeetingRole,
    MeetingStatus,
    Participant,
    User,
    UserStatus,
)
from konfer.api.schemas.common import PageParams
from konfer.api.schemas.meetings import (
    DEFAULT_DURATION_MINUTES,
    MAX_DURATION_MINUTES,
    IceServer,
    JoinResponse,
    MeetingCreate,
    MeetingPublic,
    MeetingSettings,
    MeetingUpdate,
    MessagePublic,
    ParticipantPublic,
)
from konfer.api.services.passwords import PasswordHasher
from konfer.api.signaling.presence import Presence, room_user_count
from konfer.api.state import AppState
from konfer.core.errors import (
    Conflict,
    InsufficientPermissions,
    MeetingEnded,
    NotFound,
    RoomFull,
    ValidationFailed,
)
from konfer.core.settings import Settings
from konfer.core.timeutil import utcnow
from konfer.core.tokens import MediaGrants

MANAGING_ROLES = frozenset({MeetingRole.host.value, MeetingRole.co_host.value})


# --- lookups ---------------------------------------------------------------------------


def not_found(meeting_id: uuid.UUID) -> NotFound:
    """The same answer for a meeting that does not exist and one the caller may not see."""
    return NotFound(f"Meeting with ID '{meeting_id}' not found")


async def membership(
    session: AsyncSession, meeting_id: uuid.UUID, user_id: uuid.UUID
) -> Participant | None:
    return (
        await session.execute(
            select(Participant).where(
                Participant.meeting_id == meeting_id, Participant.user_id == user_id
            )
        )
    ).scalar_one_or_none()


async def get_meeting(session: AsyncSession, meeting_id: uuid.UUID) -> Meeting:
    meeting = await session.get(Meeting, meeting_id)
    if meeting is None:
        raise not_found(meeting_id)
    return meeting


def ensure_not_ended(meeting: Meeting) -> None:
    if meeting.status == MeetingStatus.ended.value:
        raise MeetingEnded(f"Meeting '{meeting.title}' has ended")


# --- public shapes ---------------------------------------------------------------------


def meeting_settings(meeting: Meeting) -> MeetingSettings:
    stored = meeting.settings or {}
    return MeetingSettings(
        **{k: stored[k] for k in MeetingSettings.model_fields if isinstance(stored.get(k), bool)}
    )


def duration_minutes(meeting: Meeting) -> int:
    return max(1, round((meeting.end_time - meeting.start_time).total_seconds() / 60))


def join_url(settings: Settings, meeting_id: uuid.UUID) -> str:
    return f"{settings.resolved_public_url}/meetings/{meeting_id}/join"


def signaling_url(settings: Settings) -> str:
    """The public URL with ``ws``/``wss`` for ``http``/``https``, at ``/ws/signaling``."""
    base = settings.resolved_public_url
    scheme, sep, rest = base.partition("://")
    ws_scheme = {"https": "wss", "http": "ws"}.get(scheme.lower(), scheme)
    return f"{ws_scheme}{sep}{rest}/ws/signaling"


def public(meeting: Meeting, settings: Settings, live: int) -> MeetingPublic:
    return MeetingPublic(
        meeting_id=meeting.id,
        title=meeting.title,
        description=meeting.description,
        creator_id=meeting.creator_id,
        start_time=meeting.start_time,
        end_time=meeting.end_time,
        duration=duration_minutes(meeting),
        max_participants=meeting.max_participants,
        current_participants=live,
        meeting_type=meeting.meeting_type,
        has_password=meeting.password_hash is not None,
        settings=meeting_settings(meeting),
        status=meeting.status,
        join_url=join_url(settings, meeting.id),
        started_at=meeting.started_at,
        ended_at=meeting.ended_at,
        created_at=meeting.created_at,
        updated_at=meeting.updated_at,
    )


async def publics(
    presence: Presence, settings: Settings, meetings: Sequence[Meeting]
) -> list[MeetingPublic]:
    """Public shapes with live participant counts, fetched concurrently."""
    counts = await asyncio.gather(*(room_user_count(presence, m.id) for m in meetings))
    return [public(m, settings, n) for m, n in zip(meetings, counts, strict=True)]


def participant_public(row: Participant, user: User) -> ParticipantPublic:
    status: Literal["invited", "joined", "left"] = "invited"
    if row.joined_at is not None:
        status = "left" if row.left_at is not None else "joined"
    return ParticipantPublic(
        participant_id=row.id,
        meeting_id=row.meeting_id,
        user_id=row.user_id,
        username=user.username,
        nickname=user.nickname,
        avatar_url=user.avatar_url,
        role=row.role,
        status=status,
        joined_at=row.joined_at,
        left_at=row.left_at,
        created_at=row.created_at,
    )


def message_public(row: ChatMessage, user: User) -> MessagePublic:
    return MessagePublic(
        message_id=row.id,
        meeting_id=row.meeting_id,
        user_id=row.user_id,
        username=user.username,
        nickname=user.nickname,
        message=row.message,
        created_at=row.created_at,
    )


# --- scheduling ------------------------------------------------------------------------


def _schedule(
    start: datetime, end: datetime | None, duration: int | None
) -> tuple[datetime, datetime]:
    """Start and end from the start and either the end or a length in minutes."""
    if end is not None and end <= start:
        raise ValidationFailed(details={"end_time": "Must be after start_time"})
    if end is not None and duration is not None and end - start != timedelta(minutes=duration):
        raise ValidationFailed(
            details={"duration": "Does not match end_time - start_time; give one of the two"}
        )
    if end is None:
        end = start + timedelta(minutes=duration or DEFAULT_DURATION_MINUTES)
    if end - start > timedelta(minutes=MAX_DURATION_MINUTES):
        raise ValidationFailed(
            details={"end_time": f"A meeting lasts at most {MAX_DURATION_MINUTES} minutes"}
        )
    return start.astimezone(UTC), end.astimezone(UTC)


def _check_capacity(settings: Settings, value: int) -> None:
    cap = settings.meeting_max_participants
    if value > cap:
        raise ValidationFailed(details={"max_participants": f"Must be at most {cap}"})


async def create(
    session: AsyncSession,
    passwords: PasswordHasher,
    settings: Settings,
    creator: User,
    body: MeetingCreate,
) -> Meeting:
    """A scheduled meeting; its creator becomes its host (not joined until they join)."""
    max_participants = body.max_participants or settings.meeting_max_participants
    _check_capacity(settings, max_participants)
    start, end = _schedule(body.start_time, body.end_time, body.duration)
    meeting = Meeting(
        id=uuid.uuid4(),
        title=body.title,
        description=body.description or None,
        creator_id=creator.id,
        start_time=start,
        end_time=end,
        max_participants=max_participants,
        meeting_type=body.meeting_type,
        password_hash=await passwords.hash(body.password) if body.password else None,
        settings=body.settings.model_dump(),
        status=MeetingStatus.scheduled.value,
    )
    session.add(meeting)
    await session.flush()
    session.add(Participant(meeting_id=meeting.id, user_id=creator.id, role=MeetingRole.host.value))
    await session.commit()
    await session.refresh(meeting)
    return meeting


_NOT_NULL = ("title", "start_time", "end_time", "duration", "max_participants", "meeting_type")


async def update_meeting(
    session: AsyncSession,
    passwords: PasswordHasher,
    settings: Settings,
    meeting: Meeting,
    changes: MeetingUpdate,
) -> Meeting:
    """Apply the fields present; times keep the meeting's length unless it is given."""
    ensure_not_ended(meeting)
    data = changes.model_dump(exclude_unset=True)
    nulls = {f: "Cannot be null" for f in (*_NOT_NULL, "settings") if f in data and data[f] is None}
    switches: dict[str, Any] = {}
    if changes.settings is not None:
        switches = changes.settings.model_dump(exclude_unset=True)
        nulls.update({f"settings.{k}": "Cannot be null" for k, v in switches.items() if v is None})
    if nulls:
        raise ValidationFailed(details=nulls)
    if "max_participants" in data:
        _check_capacity(settings, data["max_participants"])
    if {"start_time", "end_time", "duration"} & data.keys():
        start = data.get("start_time") or meeting.start_time
        end, duration = data.get("end_time"), data.get("duration")
        if end is None and duration is None:
            end = start + (meeting.end_time - meeting.start_time)
        meeting.start_time, meeting.end_time = _schedule(start, end, duration)
    for field in ("title", "max_participants", "meeting_type"):
        if field in data:
            setattr(meeting, field, data[field])
    if "description" in data:
        meeting.description = data["description"] or None
    if "password" in data:
        password = data["password"]
        meeting.password_hash = await passwords.hash(password) if password else None
    if switches:
        # A new dict, so the JSON column sees the change.
        meeting.settings = {**meeting_settings(meeting).model_dump(), **switches}
    await session.commit()
    await session.refresh(meeting)
    return meeting


async def delete_meeting(session: AsyncSession, meeting: Meeting) -> None:
    """The meeting with its participants and chat; one transaction."""
    await session.execute(delete(ChatMessage).where(ChatMessage.meeting_id == meeting.id))
    await session.execute(delete(Participant).where(Participant.meeting_id == meeting.id))
    await session.execute(delete(Meeting).where(Meeting.id == meeting.id))
    await session.commit()


async def _transition(
    session: AsyncSession, meeting: Meeting, allowed: set[str], values: dict[str, Any]
) -> bool:
    """Compare-and-set on status, so two replicas cannot both start or end a meeting."""
    result = await session.execute(
        update(Meeting)
        .where(Meeting.id == meeting.id, Meeting.status.in_(allowed))
        .values(**values, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def start(session: AsyncSession, meeting: Meeting) -> Meeting:
    now = utcnow()
    changed = await _transition(
        session,
        meeting,
        {MeetingStatus.scheduled.value},
        {"status": MeetingStatus.in_progress.value, "started_at": now},
    )
    if not changed:
        await session.rollback()
        await session.refresh(meeting)
        ensure_not_ended(meeting)
        raise Conflict("Meeting is already in progress")
    await session.commit()
    await session.refresh(meeting)
    return meeting


async def end(session: AsyncSession, meeting: Meeting) -> Meeting:
    """End the meeting and mark everyone still in it as left."""
    now = utcnow()
    changed = await _transition(
        session,
        meeting,
        {MeetingStatus.scheduled.value, MeetingStatus.in_progress.value},
        {"status": MeetingStatus.ended.value, "ended_at": now},
    )
    if not changed:
        await session.rollback()
        await session.refresh(meeting)
        ensure_not_ended(meeting)
        raise Conflict("Meeting cannot be ended")  # pragma: no cover - no other state exists
    await session.execute(
        update(Participant)
        .where(
            Participant.meeting_id == meeting.id,
            Participant.joined_at.is_not(None),
            Participant.left_at.is_(None),
        )
        .values(left_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    await session.refresh(meeting)
    return meeting


# --- listing ---------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class MeetingFilters:
    status: str | None = None
    start_from: datetime | None = None
    start_to: datetime | None = None
    search: str | None = None
    creator_id: uuid.UUID | None = None


def _like_literal(text: str) -> str:
    """A LIKE pattern matching ``text`` literally anywhere (``%``/``_`` escaped)."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _member_of(user_id: uuid.UUID) -> Any:
    return or_(
        Meeting.creator_id == user_id,
        Meeting.id.in_(select(Participant.meeting_id).where(Participant.user_id == user_id)),
    )


async def _page(
    session: AsyncSession, query: Select[tuple[Meeting]], page: PageParams
) -> tuple[list[Meeting], int]:
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    found = (await session.execute(query.offset(page.offset).limit(page.page_size))).scalars()
    return list(found.all()), int(total)


async def list_meetings(
    session: AsyncSession,
    viewer: User,
    is_admin: bool,
    filters: MeetingFilters,
    page: PageParams,
) -> tuple[list[Meeting], int]:
    """Meetings the viewer may see (all of them for admins), latest start first."""
    if filters.start_from and filters.start_to and filters.start_from > filters.start_to:
        raise ValidationFailed(details={"to": "Must not be before from"})
    query = select(Meeting)
    if not is_admin:
        query = query.where(_member_of(viewer.id))
    if filters.status:
        query = query.where(Meeting.status == filters.status)
    if filters.start_from:
        query = query.where(Meeting.start_time >= filters.start_from)
    if filters.start_to:
        query = query.where(Meeting.start_time <= filters.start_to)
    if filters.search:
        query = query.where(func.lower(Meeting.title).like(_like_literal(filters.search), "\\"))
    if filters.creator_id:
        query = query.where(Meeting.creator_id == filters.creator_id)
    return await _page(session, query.order_by(Meeting.start_time.desc(), Meeting.id), page)


MineScope = Literal["all", "upcoming", "history"]


async def list_mine(
    session: AsyncSession,
    user: User,
    scope: MineScope,
    page: PageParams,
    status: str | None = None,
) -> tuple[list[Meeting], int]:
    """Meetings the user created or belongs to.

    ``upcoming``: scheduled and not yet begun, soonest first. ``history``: ended, or
    scheduled with the end time passed (never held), newest first. ``all``: latest start
    first, optionally of one status.
    """
    now = utcnow()
    query = select(Meeting).where(_member_of(user.id))
    if scope == "upcoming":
        query = query.where(
            Meeting.status == MeetingStatus.scheduled.value, Meeting.start_time >= now
        ).order_by(Meeting.start_time.asc(), Meeting.id)
    elif scope == "history":
        query = query.where(
            or_(
                Meeting.status == MeetingStatus.ended.value,
                and_(Meeting.status == MeetingStatus.scheduled.value, Meeting.end_time < now),
            )
        ).order_by(Meeting.start_time.desc(), Meeting.id)
    else:
        if status:
            query = query.where(Meeting.status == status)
        query = query.order_by(Meeting.start_time.desc(), Meeting.id)
    return await _page(session, query, page)


# --- joining ---------------------------------------------------------------------------


def ice_servers(settings: Settings, user_id: uuid.UUID) -> list[IceServer]:
    """STUN as configured, and TURN with coturn REST-API credentials when a secret is set.

    coturn's ``use-auth-secret`` scheme: username ``<expiry unix time>:<user id>``,
    credential ``base64(HMAC-SHA1(secret, username))``.
    """
    servers: list[IceServer] = []
    if settings.stun_urls:
        servers.append(IceServer(urls=list(settings.stun_urls)))
    if settings.turn_urls and settings.turn_secret is not None:
        username = f"{int(time.time()) + settings.turn_credential_ttl_seconds}:{user_id}"
        digest = hmac.new(
            settings.turn_secret.get_secret_value().encode(), username.encode(), hashlib.sha1
        ).digest()
        servers.append(
            IceServer(
                urls=list(settings.turn_urls),
                username=username,
                credential=base64.b64encode(digest).decode(),
            )
        )
    return servers


def media_grants(meeting: Meeting, role: str) -> MediaGrants:
    """What the role may do with media in this meeting (see ``schemas.meetings`` for types)."""
    can_publish = role != MeetingRole.viewer.value
    sources: list[str] = []
    if can_publish:
        sources = ["microphone"] if meeting.meeting_type == "audio" else ["camera", "microphone"]
        if meeting.meeting_type != "audio" and meeting_settings(meeting).enable_screen_share:
            sources.append("screen_share")
    return MediaGrants(
        room=str(meeting.id),
        can_publish=can_publish,
        can_subscribe=True,
        can_publish_sources=sources,
        room_admin=role in MANAGING_ROLES,
    )


async def _check_room(presence: Presence, meeting: Meeting, user_id: uuid.UUID) -> None:
    present = await presence.room(str(meeting.id))
    users = {s.user_id for s in present if not s.hidden}
    if str(user_id) not in users and len(users) >= meeting.max_participants:
        raise RoomFull(
            f"Meeting is full: {meeting.max_participants} participants are already connected"
        )


async def _enter(
    session: AsyncSession, meeting: Meeting, user: User, existing: Participant | None
) -> Participant:
    now = utcnow()
    for _ in range(2):
        if existing is None:
            newcomer = (
                MeetingRole.viewer if meeting.meeting_type == "webinar" else MeetingRole.participant
            )
            existing = Participant(
                meeting_id=meeting.id, user_id=user.id, role=newcomer.value, joined_at=now
            )
            session.add(existing)
        elif existing.joined_at is None or existing.left_at is not None:
            existing.joined_at, existing.left_at = now, None
        # else: already in (another tab, a rejoin after a dropped socket): keep joined_at.
        try:
            await session.commit()
        except IntegrityError:
            # The same user joined concurrently from elsewhere; take their row.
            await session.rollback()
            existing = await membership(session, meeting.id, user.id)
            continue
        await session.refresh(existing)
        return existing
    raise Conflict("Could not join the meeting; please retry")  # pragma: no cover


async def _admit(
    session: AsyncSession, state: AppState, meeting: Meeting, user: User, password: str | None
) -> Participant | None:
    """Raise why the user may not enter; return their membership if they have one."""
    ensure_not_ended(meeting)
    existing = await membership(session, meeting.id, user.id)
    if meeting.password_hash is not None and existing is None:
        valid = False
        if password:
            valid, _ = await state.passwords.verify(password, meeting.password_hash)
        if not valid:
            raise InsufficientPermissions(
                "This meeting requires a password: "
                + ("the password is incorrect" if password else "none was given")
            )
    await _check_room(state.presence, meeting, user.id)
    return existing


async def join(
    session: AsyncSession,
    state: AppState,
    meeting_id: uuid.UUID,
    user: User,
    password: str | None,
) -> JoinResponse:
    """Admit the user (password, capacity) and hand out everything to connect media."""
    meeting = await get_meeting(session, meeting_id)
    try:
        existing = await _admit(session, state, meeting, user, password)
    except (MeetingEnded, InsufficientPermissions, RoomFull) as exc:
        reason = (
            "ended"
            if isinstance(exc, MeetingEnded)
            else "room_full"
            if isinstance(exc, RoomFull)
            else "password"
        )
        state.metrics.meeting_join_refusals.labels(reason).inc()
        raise
    participant = await _enter(session, meeting, user, existing)
    assert participant.joined_at is not None
    settings = state.settings
    ws = signaling_url(settings)
    ttl = settings.media_token_ttl_seconds
    token = state.tokens.issue_media(
        user.id, user.nickname or user.username, media_grants(meeting, participant.role), ttl
    )
    return JoinResponse(
        meeting_id=meeting.id,
        participant_id=participant.id,
        role=participant.role,
        signaling_url=ws,
        room_url=f"{ws}?meeting_id={meeting.id}",
        ice_servers=ice_servers(settings, user.id),
        media_token=token,
        media_token_expires_in=ttl,
        joined_at=participant.joined_at,
    )


async def leave(session: AsyncSession, meeting: Meeting, participant: Participant | None) -> int:
    """Mark the participant left; seconds of the (last) stay, 0 if they never joined."""
    if participant is None:
        raise NotFound(f"You are not a participant of meeting '{meeting.id}'")
    if participant.joined_at is None:
        return 0
    if participant.left_at is None:
        participant.left_at = utcnow()
        await session.commit()
        await session.refresh(participant)
    assert participant.left_at is not None
    return max(0, int((participant.left_at - participant.joined_at).total_seconds()))


# --- participants and roles ------------------------------------------------------------


async def list_participants(
    session: AsyncSession, meeting: Meeting, page: PageParams
) -> tuple[list[ParticipantPublic], int]:
    query = (
        select(Participant, User)
        .join(User, User.id == Participant.user_id)
        .where(Participant.meeting_id == meeting.id)
    )
    total = (
        await session.execute(select(func.count()).where(Participant.meeting_id == meeting.id))
    ).scalar_one()
    rows = await session.execute(
        query.order_by(Participant.created_at, Participant.id)
        .offset(page.offset)
        .limit(page.page_size)
    )
    return [participant_public(p, u) for p, u in rows.tuples()], int(total)


async def _target(session: AsyncSession, meeting: Meeting, user_id: uuid.UUID) -> Participant:
    row = await membership(session, meeting.id, user_id)
    if row is None:
        raise NotFound(f"User with ID '{user_id}' is not a participant of this meeting")
    return row


async def _host_count(session: AsyncSession, meeting_id: uuid.UUID) -> int:
    # FOR UPDATE (PostgreSQL) so two hosts cannot demote each other at the same time.
    rows = await session.execute(
        select(Participant.id)
        .where(Participant.meeting_id == meeting_id, Participant.role == MeetingRole.host.value)
        .with_for_update()
    )
    return len(rows.all())


def _ensure_may_touch_host(actor_role: str | None, target_role: str, new_role: str) -> None:
    if actor_role != MeetingRole.host.value and MeetingRole.host.value in (target_role, new_role):
        raise InsufficientPermissions("Only a host can make someone a host or change a host")


async def add_participant(
    session: AsyncSession, meeting: Meeting, actor_role: str | None, user_id: uuid.UUID, role: str
) -> ParticipantPublic:
    ensure_not_ended(meeting)
    _ensure_may_touch_host(actor_role, MeetingRole.participant.value, role)
    user = await session.get(User, user_id)
    if user is None or user.status != UserStatus.active.value:
        raise NotFound(f"User with ID '{user_id}' not found")
    if await membership(session, meeting.id, user_id) is not None:
        raise Conflict(f"User with ID '{user_id}' is already a participant of this meeting")
    row = Participant(meeting_id=meeting.id, user_id=user_id, role=role)
    session.add(row)
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict(
            f"User with ID '{user_id}' is already a participant of this meeting"
        ) from exc
    await session.refresh(row)
    return participant_public(row, user)


async def remove_participant(
    session: AsyncSession, meeting: Meeting, actor_role: str | None, user_id: uuid.UUID
) -> None:
    ensure_not_ended(meeting)
    row = await _target(session, meeting, user_id)
    _ensure_may_touch_host(actor_role, row.role, row.role)
    if row.role == MeetingRole.host.value and await _host_count(session, meeting.id) <= 1:
        raise Conflict("A meeting must keep a host: make someone else host first")
    await session.delete(row)
    await session.commit()


async def set_role(
    session: AsyncSession, meeting: Meeting, actor_role: str | None, user_id: uuid.UUID, role: str
) -> ParticipantPublic:
    """Change a member's role. Takes effect in media tokens issued from now on."""
    ensure_not_ended(meeting)
    row = await _target(session, meeting, user_id)
    _ensure_may_touch_host(actor_role, row.role, role)
    if (
        row.role == MeetingRole.host.value
        and role != MeetingRole.host.value
        and await _host_count(session, meeting.id) <= 1
    ):
        raise Conflict("The last host cannot be demoted: make someone else host first")
    row.role = role
    await session.commit()
    await session.refresh(row)
    user = await session.get(User, row.user_id)
    assert user is not None
    return participant_public(row, user)


# --- chat ------------------------------------------------------------------------------


async def list_messages(
    session: AsyncSession, meeting: Meeting, page: PageParams, before: uuid.UUID | None
) -> tuple[list[MessagePublic], int, bool]:
    """A page of chat counted from the newest, returned oldest first.

    With ``before`` (a message id) only older messages count, so a client pages back
    through history with ``before=<oldest id it has>``. Returns (messages, total, has_more).
    """
    query = (
        select(ChatMessage, User)
        .join(User, User.id == ChatMessage.user_id)
        .where(ChatMessage.meeting_id == meeting.id)
    )
    if before is not None:
        cursor = await session.get(ChatMessage, before)
        if cursor is None or cursor.meeting_id != meeting.id:
            raise ValidationFailed(details={"before": "No such message in this meeting"})
        query = query.where(
            or_(
                ChatMessage.created_at < cursor.created_at,
                and_(ChatMessage.created_at == cursor.created_at, ChatMessage.id < cursor.id),
            )
        )
    total = int(
        (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    )
    rows = await session.execute(
        query.order_by(ChatMessage.created_at.desc(), ChatMessage.id.desc())
        .offset(page.offset)
        .limit(page.page_size)
    )
    found = [message_public(m, u) for m, u in rows.tuples()]
    found.reverse()
    return found, total, page.offset + len(found) < total


def check_can_post(meeting: Meeting, participant: Participant | None) -> None:
    """Only people in the meeting right now (joined, not left) may talk, and only if chat is
    on."""
    ensure_not_ended(meeting)
    if not meeting_settings(meeting).enable_chat:
        raise InsufficientPermissions("Chat is disabled in this meeting")
    if participant is None or participant.joined_at is None or participant.left_at is not None:
        raise InsufficientPermissions("Join the meeting to send messages")


async def post_message(
    session: AsyncSession,
    meeting: Meeting,
    participant: Participant | None,
    user_id: uuid.UUID,
    text: str,
) -> ChatMessage:
    """Store one chat posted through REST (socket chats go through ``ChatWriter``)."""
    check_can_post(meeting, participant)
    row = ChatMessage(meeting_id=meeting.id, user_id=user_id, message=text, created_at=utcnow())
    session.add(row)
    await session.commit()  # every column is set here: no refresh round trip
    return row
