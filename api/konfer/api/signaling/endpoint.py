"""``/ws/signaling``: the WebSocket a client keeps open while it is in a meeting.

The socket authenticates with the access token in the query string, then joins one
meeting at a time. Relayed messages carry the sender as the server knows it; a socket may
only join a meeting its user has joined through ``POST /api/v1/meetings/{id}/join``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

from fastapi import APIRouter, WebSocket
from sqlalchemy import select
from starlette.websockets import WebSocketDisconnect, WebSocketState

from konfer.api.db.models import Meeting, MeetingStatus, Participant
from konfer.api.deps import load_principal
from konfer.api.services import meetings
from konfer.api.signaling import protocol as p
from konfer.api.signaling.chatstore import ChatRefused
from konfer.api.signaling.hub import Connection, SignalingHub
from konfer.api.signaling.presence import SessionInfo
from konfer.api.signaling.protocol import SignalingError
from konfer.api.signaling.wire import frame_writer
from konfer.api.state import AppState
from konfer.core.errors import InvalidToken

router = APIRouter(tags=["signaling"])

CLOSE_UNAUTHORIZED = 4401
CLOSE_RATE_LIMITED = 4429
CLOSE_HEARTBEAT = 4408
CLOSE_TOO_BIG = 1009


@router.websocket("/ws/signaling")
async def signaling(websocket: WebSocket, token: str | None = None) -> None:
    state: AppState = websocket.app.state.konfer
    hub: SignalingHub = websocket.app.state.hub
    await websocket.accept()
    if getattr(websocket.state, "rate_limited", False):
        await _refuse(
            websocket,
            "RATE_LIMIT_EXCEEDED",
            "Too many connections; retry later",
            CLOSE_RATE_LIMITED,
        )
        return
    try:
        if not token:
            raise InvalidToken("token query parameter is required")
        claims = state.tokens.verify_access(token)
        async with state.sessionmaker() as session:
            principal = await load_principal(session, claims, state.auth_cache)
    except InvalidToken as exc:
        await _refuse(websocket, "UNAUTHORIZED", exc.message, CLOSE_UNAUTHORIZED)
        return
    user = principal.user
    conn = Connection(
        websocket=websocket,
        session_id=uuid.uuid4().hex,
        user_id=str(user.id),
        username=user.nickname or user.username,
        avatar_url=user.avatar_url,
        frames=frame_writer(websocket.scope),
    )
    hub.connected(conn)
    writer = asyncio.create_task(conn.write_loop(), name=f"ws-writer-{conn.session_id}")
    heartbeat = asyncio.create_task(_heartbeat(state, conn), name=f"ws-ping-{conn.session_id}")
    try:
        await _read_loop(state, hub, conn, writer)
    finally:
        heartbeat.cancel()
        await hub.disconnected(conn)
        conn.close_soon()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(writer, 2)
        if websocket.application_state != WebSocketState.DISCONNECTED:
            with contextlib.suppress(Exception):
                await websocket.close()


async def _refuse(websocket: WebSocket, code: str, message: str, close_code: int) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_json(p.error(code, message))
        await websocket.close(close_code, reason=code)


async def _read_loop(
    state: AppState, hub: SignalingHub, conn: Connection, writer: asyncio.Task[None]
) -> None:
    cap = state.settings.ws_max_message_bytes
    while not writer.done():
        try:
            message = await conn.websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            data = message.get("bytes") or b""
            text = data.decode("utf-8", "replace")
        if len(text) > cap or len(text.encode()) > cap:
            conn.send(p.error("INVALID_MESSAGE", f"Message exceeds {cap // 1024} KB"))
            conn.close_soon(CLOSE_TOO_BIG)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, 2)
            return
        conn.last_seen = time.monotonic()
        try:
            parsed = p.parse(text)
            state.metrics.signaling_messages.labels(parsed.type).inc()
            await _handle(state, hub, conn, parsed)
        except SignalingError as exc:
            conn.send(p.error(exc.code, exc.message))


async def _heartbeat(state: AppState, conn: Connection) -> None:
    interval = state.settings.ws_heartbeat_interval_seconds
    timeout = state.settings.ws_heartbeat_timeout_seconds
    while True:
        await asyncio.sleep(interval)
        if time.monotonic() - conn.last_seen > timeout:
            with contextlib.suppress(Exception):
                await conn.websocket.close(CLOSE_HEARTBEAT, reason="heartbeat timeout")
            return
        conn.send({"type": "ping", "timestamp": p.now()})


async def _handle(
    state: AppState, hub: SignalingHub, conn: Connection, msg: p.ClientMessage
) -> None:
    if isinstance(msg, p.Ping):
        if msg.type == "ping":
            conn.send({"type": "pong", "timestamp": p.now()})
        return
    if isinstance(msg, p.Join):
        await _join(state, hub, conn, msg)
        return
    info = _joined(conn, getattr(msg, "room_id", None))
    if isinstance(msg, p.Leave):
        conn.send(
            {
                "type": "left",
                "room_id": info.meeting_id,
                "user_id": conn.user_id,
                "timestamp": p.now(),
            }
        )
        await hub.exit(conn)
    elif isinstance(msg, p.Offer | p.Answer | p.IceCandidate | p.IceRestart):
        await _relay(hub, conn, info, msg)
    elif isinstance(msg, p.MediaState):
        for key in ("audio_enabled", "video_enabled", "screen_sharing"):
            value = getattr(msg, key)
            if value is not None:
                info.media_state[key] = value
        await hub.presence.update(info)
        await hub.publish(
            info.meeting_id,
            {
                "type": "media-state",
                "room_id": info.meeting_id,
                "user_id": conn.user_id,
                **info.media_state,
                "timestamp": p.now(),
            },
            exclude_session=conn.session_id,
        )
    elif isinstance(msg, p.Chat):
        await _chat(state, hub, conn, info, msg.message)


def _joined(conn: Connection, room_id: str | None) -> SessionInfo:
    if conn.info is None:
        raise SignalingError("INVALID_ROOM", "Join a meeting room first")
    if room_id is not None and room_id != conn.info.meeting_id:
        raise SignalingError("INVALID_ROOM", "This socket has not joined that room")
    return conn.info


async def _join(state: AppState, hub: SignalingHub, conn: Connection, msg: p.Join) -> None:
    try:
        meeting_id = uuid.UUID(msg.room_id)
    except ValueError as exc:
        raise SignalingError("INVALID_ROOM", "Meeting room does not exist") from exc
    async with state.sessionmaker() as session:
        meeting = await session.get(Meeting, meeting_id)
        if meeting is None:
            raise SignalingError("INVALID_ROOM", "Meeting room does not exist")
        if meeting.status == MeetingStatus.ended.value:
            raise SignalingError("INVALID_ROOM", "Meeting has ended")
        member = (
            await session.execute(
                select(Participant).where(
                    Participant.meeting_id == meeting_id,
                    Participant.user_id == uuid.UUID(conn.user_id),
                )
            )
        ).scalar_one_or_none()
    if member is None or member.joined_at is None or member.left_at is not None:
        raise SignalingError(
            "UNAUTHORIZED",
            f"Join the meeting first with POST /api/v1/meetings/{meeting_id}/join",
        )
    room_id = str(meeting_id)
    if conn.info is not None:
        await hub.exit(conn)
    present = await hub.presence.room(room_id)
    users = {s.user_id for s in present if not s.hidden}
    if conn.user_id not in users and len(users) >= meeting.max_participants:
        raise SignalingError("ROOM_FULL", "Maximum participants reached")
    stamp = p.now()
    info = SessionInfo(
        session_id=conn.session_id,
        user_id=conn.user_id,
        username=conn.username,
        meeting_id=room_id,
        replica_id=state.replica_id,
        connected_at=stamp,
        last_activity=stamp,
        avatar_url=conn.avatar_url,
        role=member.role,
    )
    await hub.enter(conn, info)
    conn.send(
        {
            "type": "joined",
            "room_id": room_id,
            "user_id": conn.user_id,
            "role": member.role,
            "participants": [
                _participant(s) for s in present if s.user_id != conn.user_id and not s.hidden
            ],
            "timestamp": stamp,
        }
    )
    await hub.publish(
        room_id,
        {
            "type": "user-joined",
            "room_id": room_id,
            "user_id": conn.user_id,
            "user_info": {
                "username": conn.username,
                "avatar_url": conn.avatar_url,
                "role": member.role,
            },
            "timestamp": stamp,
        },
        exclude_session=conn.session_id,
    )
    try:
        await hub.media.join(info, meetings.media_grants(meeting, member.role), conn.send)
    except SignalingError as exc:
        # Signaling (and mesh media) still works; the client learns why the SFU does not.
        conn.send(p.error(exc.code, exc.message))


def _participant(s: SessionInfo) -> dict[str, Any]:
    return {
        "user_id": s.user_id,
        "username": s.username,
        "avatar_url": s.avatar_url,
        "role": s.role,
        "joined_at": s.connected_at,
        "media_state": s.media_state,
    }


async def _relay(
    hub: SignalingHub,
    conn: Connection,
    info: SessionInfo,
    msg: p.Offer | p.Answer | p.IceCandidate | p.IceRestart,
) -> None:
    skip = {"room_id"}
    if isinstance(msg, p.Offer) and msg.track_sources is None:
        skip.add("track_sources")
    if isinstance(msg, p.Offer | p.Answer) and msg.offer_id is None:
        skip.add("offer_id")
    body = msg.model_dump(mode="json", exclude=skip)
    body.update(room_id=info.meeting_id, from_user_id=conn.user_id, timestamp=p.now())
    target = msg.target_user_id
    if target is None or target == "sfu":
        for reply in await hub.media.handle(info, body):
            conn.send(reply)
        return
    present = await hub.presence.room(info.meeting_id)
    if not any(s.user_id == target for s in present):
        raise SignalingError("TARGET_NOT_FOUND", "Target user not in room")
    await hub.publish(info.meeting_id, body, to_user=target)


async def _chat(
    state: AppState, hub: SignalingHub, conn: Connection, info: SessionInfo, text: str
) -> None:
    """Store (batched with other sockets' chats, see ``ChatWriter``), then fan out."""
    try:
        row = await state.chat.post(uuid.UUID(info.meeting_id), uuid.UUID(conn.user_id), text)
    except ChatRefused as refused:
        raise SignalingError(refused.code, refused.message) from refused
    await hub.publish(info.meeting_id, p.chat_event(row, conn.username))
