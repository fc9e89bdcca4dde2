"""``/api/v1/webrtc/*``: the meeting's SFU as its participants and hosts see it.

Peers and statistics come from the SFU itself (measured there, not estimated here). A
peer is a signaling session; only its own user or the meeting's hosts may change its
media state, so a host can mute a guest but a guest cannot mute the host.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path

from konfer.api.db.models import Meeting
from konfer.api.deps import CurrentPrincipal, SessionDep, StateDep, VisibleMeeting
from konfer.api.schemas.common import Strict
from konfer.api.services import meetings as meeting_service
from konfer.api.signaling.protocol import SignalingError
from konfer.api.signaling.sfu_router import SfuMediaRouter
from konfer.api.state import AppState
from konfer.core.errors import InsufficientPermissions, NotFound, ServiceUnavailable
from konfer.core.timeutil import isoformat, utcnow

router = APIRouter(prefix="/api/v1/webrtc", tags=["webrtc"])


class MediaUpdate(Strict):
    audio_enabled: bool | None = None
    video_enabled: bool | None = None
    screen_sharing: bool | None = None
    video_quality: Literal["low", "medium", "high"] | None = None


def _router(state: AppState) -> SfuMediaRouter | None:
    media = state.hub.media
    return media if isinstance(media, SfuMediaRouter) else None


async def _sfu(
    state: AppState, meeting_id: str, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    media = _router(state)
    if media is None:
        return None
    try:
        return await media.room_call(meeting_id, method, path, body)
    except SignalingError as exc:
        if exc.code == "TARGET_NOT_FOUND":
            raise NotFound(exc.message) from exc
        raise ServiceUnavailable(exc.message) from exc


@router.get("/room/{meeting_id}/peers")
async def room_peers(access: VisibleMeeting, state: StateDep) -> dict[str, Any]:
    room = str(access.meeting.id)
    found = await _sfu(state, room, "GET", "/v1/peers")
    peers: list[dict[str, Any]] = (found or {}).get("peers", [])
    return {"room_id": room, "peers": peers, "total_peers": len(peers)}


@router.get("/room/{meeting_id}/stats")
async def room_stats(access: VisibleMeeting, state: StateDep) -> dict[str, Any]:
    room = str(access.meeting.id)
    stats = await _sfu(state, room, "GET", "/v1/stats")
    if stats is None:  # no SFU running: an empty room, measured as such
        return {
            "room_id": room,
            "meeting_id": room,
            "created_at": None,
            "duration": 0,
            "statistics": {"total_peers": 0, "active_peers": 0, "total_tracks": 0},
            "quality_metrics": {"excellent": 0, "good": 0, "fair": 0, "poor": 0},
        }
    return stats


@router.post("/peer/{peer_id}/media")
async def peer_media(
    peer_id: Annotated[str, Path(max_length=64)],
    body: MediaUpdate,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
) -> dict[str, Any]:
    info = await state.presence.get(peer_id)
    if info is None:
        raise NotFound(f"Peer '{peer_id}' not found")
    meeting = await session.get(Meeting, uuid.UUID(info.meeting_id))
    member = (
        await meeting_service.membership(session, meeting.id, principal.user.id)
        if meeting is not None
        else None
    )
    if meeting is None or (member is None and not principal.is_admin):
        raise NotFound(f"Peer '{peer_id}' not found")
    manages = member is not None and member.role in meeting_service.MANAGING_ROLES
    if info.user_id != str(principal.user.id) and not (manages or principal.is_admin):
        raise InsufficientPermissions("Only the meeting's hosts may change another's media")
    changes = body.model_dump(exclude_none=True)
    result = await _sfu(state, info.meeting_id, "POST", f"/v1/peers/{peer_id}/media", changes)
    if result is None:
        raise ServiceUnavailable("The meeting has no media server running")
    for key in ("audio_enabled", "video_enabled", "screen_sharing"):
        if key in changes:
            info.media_state[key] = changes[key]
    await state.presence.update(info)
    await state.hub.publish(
        info.meeting_id,
        {
            "type": "media-state",
            "room_id": info.meeting_id,
            "user_id": info.user_id,
            **info.media_state,
            "changed_by": str(principal.user.id),
            "timestamp": isoformat(utcnow()),
        },
    )
    return result
