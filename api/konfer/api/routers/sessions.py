"""Signaling sessions, message history and room statistics (REST side of signaling).

Presence is cluster-wide (Redis), so any replica answers for every socket. Callers see
the meetings they belong to; admins see all.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from konfer.api.db.models import ChatMessage, Meeting, Participant, Role, User
from konfer.api.deps import AdminUser, CurrentUser, SessionDep, StateDep
from konfer.api.signaling.presence import SessionInfo
from konfer.core.errors import NotFound
from konfer.core.timeutil import isoformat, utcnow

router = APIRouter(tags=["signaling"])


async def _member_meetings(session: AsyncSession, user: User) -> set[str] | None:
    """Meeting ids the user belongs to; None means all (admin)."""
    if user.role == Role.admin.value:
        return None
    rows = await session.execute(
        select(Participant.meeting_id).where(Participant.user_id == user.id)
    )
    created = await session.execute(select(Meeting.id).where(Meeting.creator_id == user.id))
    return {str(r) for r in rows.scalars()} | {str(r) for r in created.scalars()}


async def _require_member(session: AsyncSession, user: User, meeting_id: uuid.UUID) -> None:
    allowed = await _member_meetings(session, user)
    if allowed is not None and str(meeting_id) not in allowed:
        raise NotFound(f"Meeting with ID '{meeting_id}' not found")


def _session_public(s: SessionInfo) -> dict[str, Any]:
    return {
        "session_id": s.session_id,
        "user_id": s.user_id,
        "username": s.username,
        "meeting_id": s.meeting_id,
        "connected_at": s.connected_at,
        "last_activity": s.last_activity,
        "status": "active",
        "role": s.role,
        "peer_connections": 0,
        "media_state": s.media_state,
    }


@router.get("/api/v1/sessions/room/{meeting_id}")
async def room_sessions(
    meeting_id: uuid.UUID, user: CurrentUser, session: SessionDep, state: StateDep
) -> dict[str, Any]:
    await _require_member(session, user, meeting_id)
    members = await state.presence.room(str(meeting_id))
    return {"data": [_session_public(s) for s in members if not s.hidden]}


@router.get("/api/v1/sessions/{session_id}")
async def get_session(
    session_id: str,
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
) -> dict[str, Any]:
    info = await state.presence.get(session_id)
    if info is None:
        raise NotFound(f"Session '{session_id}' not found")
    allowed = await _member_meetings(session, user)
    if allowed is not None and info.meeting_id not in allowed:
        raise NotFound(f"Session '{session_id}' not found")
    return {"data": _session_public(info)}


@router.get("/api/v1/messages/history/{meeting_id}")
async def message_history(
    meeting_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    await _require_member(session, user, meeting_id)
    rows = (
        (
            await session.execute(
                select(ChatMessage)
                .where(ChatMessage.meeting_id == meeting_id)
                .order_by(ChatMessage.created_at.desc(), ChatMessage.id)
                .limit(limit)
            )
        )
        .scalars()
        .all()
    )
    return {
        "data": [
            {
                "message_id": str(m.id),
                "type": "chat",
                "from_user_id": str(m.user_id),
                "to_user_id": None,
                "meeting_id": str(m.meeting_id),
                "payload": {"message": m.message},
                "created_at": isoformat(m.created_at),
            }
            for m in reversed(rows)
        ]
    }


async def _visible_rooms(
    session: AsyncSession, user: User, state: Any
) -> dict[str, list[SessionInfo]]:
    rooms: dict[str, list[SessionInfo]] = await state.presence.rooms()
    allowed = await _member_meetings(session, user)
    return {k: v for k, v in rooms.items() if allowed is None or k in allowed}


def _earliest(infos: list[SessionInfo]) -> str:
    return min(s.connected_at for s in infos)


@router.get("/api/v1/stats/overview")
async def stats_overview(user: CurrentUser, session: SessionDep, state: StateDep) -> dict[str, Any]:
    rooms = await _visible_rooms(session, user, state)
    return {
        "active_sessions": sum(len(v) for v in rooms.values()),
        "connected_clients": len({s.user_id for v in rooms.values() for s in v}),
        "active_rooms": len(rooms),
        "room_details": {
            k: {"participant_count": len({s.user_id for s in v}), "created_at": _earliest(v)}
            for k, v in rooms.items()
        },
    }


@router.get("/api/v1/stats/rooms")
async def stats_rooms(user: CurrentUser, session: SessionDep, state: StateDep) -> dict[str, Any]:
    rooms = await _visible_rooms(session, user, state)
    counts: dict[str, int] = {}
    if rooms:
        ids = [uuid.UUID(k) for k in rooms]
        result = await session.execute(
            select(ChatMessage.meeting_id, func.count())
            .where(ChatMessage.meeting_id.in_(ids))
            .group_by(ChatMessage.meeting_id)
        )
        counts = {str(mid): int(n) for mid, n in result.all()}
    now = utcnow()
    data = {}
    for k, v in rooms.items():
        since = _earliest(v)
        started = datetime.fromisoformat(since.replace("Z", "+00:00"))
        data[k] = {
            "room_id": k,
            "participant_count": len({s.user_id for s in v}),
            "created_at": since,
            "duration": int((now - started).total_seconds()),
            "total_messages": counts.get(k, 0),
            "active_connections": len(v),
        }
    return {"data": data}


@router.get("/admin/sessions", tags=["admin"])
@router.get("/api/v1/admin/sessions", tags=["admin"])
async def admin_sessions(_: AdminUser, state: StateDep) -> dict[str, Any]:
    rooms = await state.presence.rooms()
    sessions = [_session_public(s) for v in rooms.values() for s in v]
    return {"data": sessions, "total": len(sessions), "active": len(sessions), "inactive": 0}


@router.post("/admin/cleanup/sessions", tags=["admin"])
@router.post("/api/v1/admin/cleanup/sessions", tags=["admin"])
async def cleanup_sessions(_: AdminUser, state: StateDep) -> dict[str, Any]:
    """Reap sessions whose replica stopped refreshing them (normally done every few seconds)."""
    hub = state.hub
    gone = await state.presence.reap()
    for info in gone:
        await hub.announce_left(info)
    return {
        "message": "Cleanup completed",
        "cleaned_sessions": len(gone),
        "timestamp": isoformat(utcnow()),
    }


@router.get("/ws/signaling/health", tags=["health"])
async def signaling_health(state: StateDep) -> dict[str, Any]:
    rooms = await state.presence.rooms()
    return {
        "active_rooms": len(rooms),
        "active_sessions": sum(len(v) for v in rooms.values()),
        "connected_clients": len(state.hub.connections),
        "service": "signaling-service",
        "status": "ok",
        "time": isoformat(utcnow()),
    }
