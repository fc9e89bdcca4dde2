"""``/api/v1/meetings/*``: scheduling, lifecycle, joining, participants, roles and chat.

Thin: who may call is decided by the dependencies (``VisibleMeeting``: creator, members
and admins, everyone else gets 404; ``MeetingHost``: hosts and co-hosts; ``MeetingOwner``:
hosts and admins), the rest by ``services.meetings``. ``POST /{id}/join`` is the one
meeting route any signed-in user may call: it is how invitees arrive through ``join_url``.
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Query, Response, status

from konfer.api.deps import (
    CurrentPrincipal,
    CurrentUser,
    MeetingHost,
    MeetingOwner,
    SessionDep,
    StateDep,
    VisibleMeeting,
)
from konfer.api.schemas.common import ErrorEnvelope, PageParams, Pagination
from konfer.api.schemas.meetings import (
    IsoTime,
    JoinRequest,
    JoinResponse,
    LeaveResponse,
    MeetingCreate,
    MeetingList,
    MeetingPublic,
    MeetingStatusName,
    MeetingUpdate,
    MessageCreate,
    MessageList,
    MessagePublic,
    ParticipantAdd,
    ParticipantList,
    ParticipantPublic,
    RoleUpdate,
    SearchText,
)
from konfer.api.services import meetings, recordings, streaming
from konfer.api.signaling.protocol import chat_event
from konfer.api.state import AppState
from konfer.core.timeutil import isoformat, utcnow

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/api/v1/meetings",
    tags=["meetings"],
    responses={
        409: {
            "model": ErrorEnvelope,
            "description": "MEETING_ENDED, ROOM_FULL, or RESOURCE_CONFLICT (state forbids it)",
        }
    },
)

Page = Annotated[int, Query(ge=1, le=1_000_000)]
PageSize = Annotated[int, Query(ge=1, le=100)]


async def _close_room(state: AppState, meeting_id: uuid.UUID, reason: str) -> None:
    """Tell every socket in the room, on every replica, and take them out of it."""
    room = str(meeting_id)
    if state.sfu_runtime is not None:
        await state.sfu_runtime.stop(room)
    await state.hub.publish(
        room,
        {
            "type": "meeting-ended",
            "room_id": room,
            "reason": reason,
            "timestamp": isoformat(utcnow()),
        },
        remove=True,
    )


@router.get("/health", tags=["health"])
async def health() -> dict[str, str]:
    return {"service": "meeting-service", "status": "ok", "time": isoformat(utcnow())}


@router.post("", response_model=MeetingPublic, status_code=status.HTTP_201_CREATED)
async def create_meeting(
    body: MeetingCreate, user: CurrentUser, session: SessionDep, state: StateDep
) -> MeetingPublic:
    """Schedule a meeting; the caller becomes its host."""
    meeting = await meetings.create(session, state.passwords, state.settings, user, body)
    state.metrics.meeting_events.labels("created").inc()
    return meetings.public(meeting, state.settings, 0)


@router.get("", response_model=MeetingList)
async def list_meetings(
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    page: Page = 1,
    page_size: PageSize = 20,
    status: MeetingStatusName | None = None,
    start_from: Annotated[
        IsoTime | None, Query(alias="from", description="start_time at or after")
    ] = None,
    start_to: Annotated[
        IsoTime | None, Query(alias="to", description="start_time at or before")
    ] = None,
    search: Annotated[SearchText | None, Query(description="in the title")] = None,
    creator_id: uuid.UUID | None = None,
) -> MeetingList:
    """Meetings the caller created or belongs to (every meeting for admins), latest first."""
    filters = meetings.MeetingFilters(status, start_from, start_to, search, creator_id)
    params = PageParams(page=page, page_size=page_size)
    found, total = await meetings.list_meetings(
        session, principal.user, principal.is_admin, filters, params
    )
    return MeetingList(
        meetings=await meetings.publics(state.presence, state.settings, found),
        pagination=Pagination.of(page, page_size, total),
    )


@router.get("/{meeting_id}", response_model=MeetingPublic)
async def get_meeting(access: VisibleMeeting, state: StateDep) -> MeetingPublic:
    return (await meetings.publics(state.presence, state.settings, [access.meeting]))[0]


@router.put("/{meeting_id}", response_model=MeetingPublic)
async def update_meeting(
    body: MeetingUpdate, access: MeetingHost, session: SessionDep, state: StateDep
) -> MeetingPublic:
    """Change the fields given; an ended meeting cannot change (409 MEETING_ENDED)."""
    meeting = await meetings.update_meeting(
        session, state.passwords, state.settings, access.meeting, body
    )
    return (await meetings.publics(state.presence, state.settings, [meeting]))[0]


@router.delete("/{meeting_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_meeting(access: MeetingOwner, session: SessionDep, state: StateDep) -> Response:
    """Delete the meeting with its participants, chat, recordings and live-stream files
    (a host or an admin)."""
    files = await recordings.drop_meeting_recordings(session, state, access.meeting.id)
    folders = await streaming.drop_meeting_streams(session, state, access.meeting.id)
    await meetings.delete_meeting(session, access.meeting)
    await recordings.remove_files(state, files)
    await streaming.remove_folders(state, folders)
    state.metrics.meeting_events.labels("deleted").inc()
    await _close_room(state, access.meeting.id, "deleted")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{meeting_id}/start", response_model=MeetingPublic)
async def start_meeting(access: MeetingHost, session: SessionDep, state: StateDep) -> MeetingPublic:
    """scheduled → in_progress; 409 if it already runs or has ended.

    In the kubernetes runtime the meeting's SFU (a Meeting object) is made here and
    awaited: 503 ``SERVICE_UNAVAILABLE`` when it is not ready in time (the meeting stays
    started; joining tries again).
    """
    meeting = await meetings.start(session, access.meeting)
    state.metrics.meeting_events.labels("started").inc()
    if state.sfu_runtime is not None:
        await state.sfu_runtime.start(str(meeting.id))
    return (await meetings.publics(state.presence, state.settings, [meeting]))[0]


@router.post("/{meeting_id}/end", response_model=MeetingPublic)
async def end_meeting(access: MeetingHost, session: SessionDep, state: StateDep) -> MeetingPublic:
    """→ ended; everyone still in the meeting is marked left. 409 MEETING_ENDED if over."""
    meeting = await meetings.end(session, access.meeting)
    state.metrics.meeting_events.labels("ended").inc()
    await recordings.finalize_meeting(session, state, meeting.id)  # they keep what they have
    await streaming.stop_meeting(session, state, meeting.id)
    await _close_room(state, meeting.id, "ended")
    return (await meetings.publics(state.presence, state.settings, [meeting]))[0]


@router.post("/{meeting_id}/join", response_model=JoinResponse, response_model_exclude_none=True)
async def join_meeting(
    meeting_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    body: Annotated[JoinRequest | None, Body()] = None,
) -> JoinResponse:
    """Enter the meeting: any signed-in user with the password (if one is set).

    Answers the signaling URL, ICE servers (TURN with short-lived coturn credentials) and
    a media token for this meeting. Errors: 403 wrong or missing password, 409
    ``MEETING_ENDED``, 409 ``ROOM_FULL`` when ``max_participants`` users are connected.
    Joining a scheduled meeting does not start it.
    """
    joined = await meetings.join(session, state, meeting_id, user, body.password if body else None)
    state.metrics.meeting_events.labels("joined").inc()
    return joined


@router.post("/{meeting_id}/leave", response_model=LeaveResponse)
async def leave_meeting(
    access: VisibleMeeting, session: SessionDep, state: StateDep
) -> LeaveResponse:
    """Idempotent: leaving again answers the length of the last stay."""
    seconds = await meetings.leave(session, access.meeting, access.participant)
    state.metrics.meeting_events.labels("left").inc()
    return LeaveResponse(message="Left meeting successfully", duration=seconds)


@router.get("/{meeting_id}/participants", response_model=ParticipantList)
async def list_participants(
    access: VisibleMeeting, session: SessionDep, page: Page = 1, page_size: PageSize = 100
) -> ParticipantList:
    params = PageParams(page=page, page_size=page_size)
    found, total = await meetings.list_participants(session, access.meeting, params)
    return ParticipantList(participants=found, pagination=Pagination.of(page, page_size, total))


@router.post(
    "/{meeting_id}/participants",
    response_model=ParticipantPublic,
    status_code=status.HTTP_201_CREATED,
)
async def add_participant(
    body: ParticipantAdd, access: MeetingHost, session: SessionDep
) -> ParticipantPublic:
    """Invite a user (they then join without the password). Only hosts may add a host."""
    return await meetings.add_participant(
        session, access.meeting, access.role, body.user_id, body.role
    )


@router.delete("/{meeting_id}/participants/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_participant(
    user_id: uuid.UUID, access: MeetingHost, session: SessionDep, state: StateDep
) -> Response:
    """Co-hosts cannot remove a host; the last host cannot be removed (409).

    The removed user's sockets receive ``removed`` and leave the room at once.
    """
    await meetings.remove_participant(session, access.meeting, access.role, user_id)
    room = str(access.meeting.id)
    await state.hub.publish(
        room,
        {
            "type": "removed",
            "room_id": room,
            "user_id": str(user_id),
            "timestamp": isoformat(utcnow()),
        },
        to_user=str(user_id),
        remove=True,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/{meeting_id}/participants/{user_id}/role", response_model=ParticipantPublic)
async def update_participant_role(
    user_id: uuid.UUID, body: RoleUpdate, access: MeetingHost, session: SessionDep
) -> ParticipantPublic:
    """Co-hosts cannot promote to host or change a host; the last host stays (409)."""
    return await meetings.set_role(session, access.meeting, access.role, user_id, body.role)


@router.get("/{meeting_id}/messages", response_model=MessageList)
async def list_messages(
    access: VisibleMeeting,
    session: SessionDep,
    page: Page = 1,
    page_size: PageSize = 50,
    limit: Annotated[int | None, Query(ge=1, le=100, description="alias of page_size")] = None,
    before: Annotated[
        uuid.UUID | None, Query(description="only messages older than this message id")
    ] = None,
) -> MessageList:
    """Chat history, newest page first, each page oldest → newest."""
    size = limit or page_size
    params = PageParams(page=page, page_size=size)
    found, total, more = await meetings.list_messages(session, access.meeting, params, before)
    return MessageList(messages=found, pagination=Pagination.of(page, size, total), has_more=more)


@router.post(
    "/{meeting_id}/messages", response_model=MessagePublic, status_code=status.HTTP_201_CREATED
)
async def post_message(
    body: MessageCreate, access: VisibleMeeting, session: SessionDep, state: StateDep
) -> MessagePublic:
    """Only people in the meeting right now may post, and only when chat is enabled.

    The message is stored, then delivered live to the room's sockets as a signaling
    ``chat`` message, the same one a message sent over the socket produces.
    """
    user = access.user
    row = await meetings.post_message(
        session, access.meeting, access.participant, user.id, body.message
    )
    try:
        await state.hub.publish(
            str(row.meeting_id), chat_event(row, user.nickname or user.username)
        )
    except Exception:
        # Stored is what counts; clients that missed the push read it from the history.
        log.exception(
            "could not deliver a chat message live", extra={"meeting_id": str(row.meeting_id)}
        )
    return meetings.message_public(row, user)
