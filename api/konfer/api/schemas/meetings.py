"""The meeting resource: request bodies and public shapes of meetings, joins, participants, chat.

Used by ``routers.meetings`` and ``routers.my_meetings``; the services build the public
models. Field names follow the API documents (the English one where they differ).

Meeting types (the documents name ``video`` and leave the rest open):

- ``video``: everyone who may publish sends camera and microphone, plus the screen when
  ``enable_screen_share`` is on.
- ``audio``: microphone only (and no screen), for calls without video.
- ``webinar``: people who arrive through ``/join`` without an invitation become
  ``viewer`` (receive only); hosts, co-hosts and invited participants present.

Numbers and switches are strict (``"10"`` or ``"yes"`` is a validation error, not a
guess), times must be ISO 8601 strings with a timezone.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
)

from konfer.api.schemas.common import Pagination, Strict

MeetingType = Literal["video", "audio", "webinar"]
MeetingStatusName = Literal["scheduled", "in_progress", "ended"]
MeetingRoleName = Literal["host", "co-host", "participant", "viewer"]

MAX_DURATION_MINUTES = 1440
DEFAULT_DURATION_MINUTES = 60
PARTICIPANTS_CEILING = 1000  # settings.meeting_max_participants is the real, lower cap


def _iso_string(value: Any) -> Any:
    """Times arrive as ISO 8601 text; a bare number is not a time the documents allow."""
    if not isinstance(value, str | datetime):
        raise ValueError("must be an ISO 8601 date-time string with a timezone")
    return value


def _utc(value: datetime) -> datetime:
    """UTC, within years 1970..9998 so a day can always be added to it."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("is out of range") from exc
    if not 1970 <= utc.year <= 9998:
        raise ValueError("must lie between the years 1970 and 9998")
    return utc


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it on every backend alike.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


NoNul = AfterValidator(_no_nul)
IsoTime = Annotated[AwareDatetime, BeforeValidator(_iso_string), AfterValidator(_utc)]
Title = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), NoNul
]
Description = Annotated[str, StringConstraints(max_length=2000), NoNul]
MeetingPassword = Annotated[str, Field(min_length=4, max_length=128), NoNul]
Duration = Annotated[StrictInt, Field(ge=1, le=MAX_DURATION_MINUTES)]
MaxParticipants = Annotated[StrictInt, Field(ge=2, le=PARTICIPANTS_CEILING)]
ChatText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000), NoNul
]
SearchText = Annotated[str, StringConstraints(max_length=200), NoNul]


class MeetingSettings(Strict):
    """Switches of one meeting. Recording, chat and screen share default to on;
    transcription of its completed recordings (speech model needed) to off, since it costs
    a model server's CPU for as long as the recording lasts."""

    enable_recording: StrictBool = True
    enable_chat: StrictBool = True
    enable_screen_share: StrictBool = True
    enable_transcription: StrictBool = False


class MeetingSettingsUpdate(Strict):
    """A partial change of the switches: absent ones stay as they are."""

    enable_recording: StrictBool | None = None
    enable_chat: StrictBool | None = None
    enable_screen_share: StrictBool | None = None
    enable_transcription: StrictBool | None = None


class MeetingCreate(Strict):
    """``end_time`` or ``duration`` (minutes) fixes the end; neither means 60 minutes."""

    title: Title
    description: Description | None = None
    start_time: IsoTime
    end_time: IsoTime | None = None
    duration: Duration | None = None
    max_participants: MaxParticipants | None = None
    meeting_type: MeetingType = "video"
    password: MeetingPassword | None = None
    settings: MeetingSettings = Field(default_factory=MeetingSettings)


class MeetingUpdate(Strict):
    """Partial: only fields present change. ``description: null`` clears the description,
    ``password: null`` removes the password; other fields cannot be null."""

    title: Title | None = None
    description: Description | None = None
    start_time: IsoTime | None = None
    end_time: IsoTime | None = None
    duration: Duration | None = None
    max_participants: MaxParticipants | None = None
    meeting_type: MeetingType | None = None
    password: MeetingPassword | None = None
    settings: MeetingSettingsUpdate | None = None


class MeetingPublic(BaseModel):
    meeting_id: uuid.UUID
    title: str
    description: str | None
    creator_id: uuid.UUID
    start_time: datetime
    end_time: datetime
    duration: int = Field(description="Planned length in minutes")
    max_participants: int
    current_participants: int = Field(description="Users connected live right now")
    meeting_type: MeetingType
    has_password: bool
    settings: MeetingSettings
    status: MeetingStatusName
    join_url: str
    started_at: datetime | None
    ended_at: datetime | None
    created_at: datetime
    updated_at: datetime


class MeetingList(BaseModel):
    meetings: list[MeetingPublic]
    pagination: Pagination


class JoinRequest(Strict):
    password: Annotated[str, Field(max_length=128)] | None = None


class IceServer(BaseModel):
    """The W3C ``RTCIceServer`` dictionary; TURN entries carry coturn REST credentials."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None


class JoinResponse(BaseModel):
    meeting_id: uuid.UUID
    participant_id: uuid.UUID
    role: MeetingRoleName
    signaling_url: str = Field(description="WebSocket URL; add ?token=<access token>")
    room_url: str = Field(description="signaling_url naming this meeting")
    ice_servers: list[IceServer]
    media_token: str = Field(description="Meeting-scoped media token (EdDSA JWT, LiveKit grants)")
    media_token_expires_in: int = Field(description="Seconds until media_token expires")
    joined_at: datetime


class LeaveResponse(BaseModel):
    message: str
    duration: int = Field(description="Seconds between joining and leaving")


class ParticipantAdd(Strict):
    user_id: uuid.UUID
    role: MeetingRoleName = "participant"


class RoleUpdate(Strict):
    role: MeetingRoleName


class ParticipantPublic(BaseModel):
    participant_id: uuid.UUID
    meeting_id: uuid.UUID
    user_id: uuid.UUID
    username: str
    nickname: str | None
    avatar_url: str | None
    role: MeetingRoleName
    status: Literal["invited", "joined", "left"] = Field(
        description="invited: never joined; joined: in the meeting now; left: was in it"
    )
    joined_at: datetime | None
    left_at: datetime | None
    created_at: datetime


class ParticipantList(BaseModel):
    participants: list[ParticipantPublic]
    pagination: Pagination


class MessageCreate(Strict):
    message: ChatText


class MessagePublic(BaseModel):
    message_id: uuid.UUID
    meeting_id: uuid.UUID
    user_id: uuid.UUID
    username: str
    nickname: str | None
    message: str
    created_at: datetime


class MessageList(BaseModel):
    """One page of chat, oldest first (newest last); ``has_more``: older messages exist."""

    messages: list[MessagePublic]
    pagination: Pagination
    has_more: bool
