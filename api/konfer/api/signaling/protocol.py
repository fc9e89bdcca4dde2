"""Messages of the signaling WebSocket, as the API documentation defines them.

Client messages are validated with pydantic; anything the server sends is built here so
field names stay in one place. ``from_user_id`` is always set by the server from the
authenticated socket, never taken from the client.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from konfer.api.db.models import ChatMessage
from konfer.core.timeutil import isoformat, utcnow

ERROR_CODES = (
    "INVALID_MESSAGE",
    "INVALID_ROOM",
    "UNAUTHORIZED",
    "ROOM_FULL",
    "TARGET_NOT_FOUND",
    "RATE_LIMIT_EXCEEDED",
    "SFU_UNAVAILABLE",
    "CHAT_DISABLED",
)


class SignalingError(Exception):
    def __init__(self, code: str, message: str) -> None:
        assert code in ERROR_CODES
        self.code = code
        self.message = message
        super().__init__(message)


class _Client(BaseModel):
    # Clients echo fields the server ignores (user_id, timestamp); tolerate them.
    model_config = ConfigDict(extra="ignore")


class Join(_Client):
    type: Literal["join"]
    room_id: Annotated[str, Field(min_length=1, max_length=64)]
    user_info: dict[str, Any] | None = None


class Leave(_Client):
    type: Literal["leave"]
    room_id: str | None = None


class SessionDescription(BaseModel):
    type: Literal["offer", "answer", "pranswer", "rollback"]
    sdp: Annotated[str, Field(max_length=60_000)] = ""


class _Relay(_Client):
    room_id: str | None = None
    target_user_id: str | None = None
    pc: Literal["publisher", "subscriber"] = "publisher"


#: Which offer an answer is for: the SFU numbers its subscriber offers and ignores an
#: answer to one that an ICE restart or a renegotiation superseded; a client may number
#: its publisher offers and gets the number back in the SFU's answer.
OfferId = Annotated[int, Field(ge=0, le=2**53)]


class Offer(_Relay):
    type: Literal["offer"]
    # Which published track is camera, microphone or screen share (by track id or mid).
    track_sources: (
        dict[
            Annotated[str, Field(max_length=128)],
            Literal["camera", "microphone", "screen_share"],
        ]
        | None
    ) = None
    offer_id: OfferId | None = None
    sdp: SessionDescription | Annotated[str, Field(max_length=60_000)]


class Answer(_Relay):
    type: Literal["answer"]
    offer_id: OfferId | None = None  # echoes the offer's, when it had one
    sdp: SessionDescription | Annotated[str, Field(max_length=60_000)]


class IceCandidateInit(BaseModel):
    candidate: Annotated[str, Field(max_length=2000)] = ""
    sdpMid: str | None = None
    sdpMLineIndex: int | None = None
    usernameFragment: str | None = None


class IceCandidate(_Relay):
    type: Literal["ice-candidate"]
    candidate: IceCandidateInit | None  # null means end of candidates


class IceRestart(_Relay):
    """Ask the offering side for an ICE restart (the SFU offers on ``pc: subscriber``)."""

    type: Literal["ice-restart"]


class MediaState(_Client):
    type: Literal["media-state"]
    room_id: str | None = None
    audio_enabled: bool | None = None
    video_enabled: bool | None = None
    screen_sharing: bool | None = None


class Chat(_Client):
    type: Literal["chat"]
    room_id: str | None = None
    message: Annotated[str, Field(min_length=1, max_length=4000)]


class Ping(_Client):
    type: Literal["ping", "pong"]


ClientMessage = Join | Leave | Offer | Answer | IceCandidate | IceRestart | MediaState | Chat | Ping
_BY_TYPE: dict[str, type[BaseModel]] = {
    "join": Join,
    "leave": Leave,
    "offer": Offer,
    "answer": Answer,
    "ice-candidate": IceCandidate,
    "ice-restart": IceRestart,
    "media-state": MediaState,
    "chat": Chat,
    "ping": Ping,
    "pong": Ping,
}


def parse(text: str) -> ClientMessage:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise SignalingError("INVALID_MESSAGE", "Message is not valid JSON") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise SignalingError("INVALID_MESSAGE", "Message must be an object with a type")
    model = _BY_TYPE.get(raw["type"])
    if model is None:
        raise SignalingError("INVALID_MESSAGE", f"Unknown message type {raw['type']!r}")
    try:
        return model.model_validate(raw)  # type: ignore[return-value]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SignalingError("INVALID_MESSAGE", f"{where}: {first['msg']}") from exc


def now() -> str:
    return isoformat(utcnow())


def error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, "timestamp": now()}


def chat_event(row: ChatMessage, username: str) -> dict[str, Any]:
    """The ``chat`` message every participant receives, for socket and REST posts alike."""
    return {
        "type": "chat",
        "room_id": str(row.meeting_id),
        "user_id": str(row.user_id),
        "username": username,
        "message_id": str(row.id),
        "message": row.message,
        "timestamp": isoformat(row.created_at),
    }
