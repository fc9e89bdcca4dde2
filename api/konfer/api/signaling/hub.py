"""The signaling hub of one api replica: its sockets, their rooms, and cross-replica fan-out.

Every message for a room is published on the room's bus channel, also when all its
sockets are local, so one code path serves one replica and fifty. A replica subscribes to
a room's channel while it holds a socket in that room. Each socket has its own bounded
send queue and writer task: a slow client can never stall delivery to the others.

A message is encoded into a WebSocket frame once per replica and written straight to each
socket (``signaling.wire``) while that socket has nothing queued and its transport takes
more; otherwise it waits in the socket's queue, behind what is already there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket

from konfer.api.metrics import ApiMetrics
from konfer.api.signaling.media import MediaRouter
from konfer.api.signaling.presence import Presence, SessionInfo
from konfer.api.signaling.protocol import now
from konfer.api.signaling.wire import FrameWriter, encode_text_frame
from konfer.core.bus import Bus

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "konfer:room:"
SEND_QUEUE_LIMIT = 1024
SLOW_CONSUMER_CLOSE = 1013  # "try again later": the client could not keep up


@dataclass(eq=False, slots=True)
class Connection:
    websocket: WebSocket
    session_id: str
    user_id: str
    username: str
    avatar_url: str | None
    info: SessionInfo | None = None
    last_seen: float = field(default_factory=time.monotonic)
    queue: asyncio.Queue[str | int] = field(default_factory=lambda: asyncio.Queue(SEND_QUEUE_LIMIT))
    frames: FrameWriter | None = None  # set when the server can take pre-encoded frames
    sending: bool = False  # the writer task holds a message it took from the queue

    @property
    def meeting_id(self) -> str | None:
        return self.info.meeting_id if self.info else None

    def send(self, payload: dict[str, Any] | str, frame: bytes | None = None) -> None:
        """Write at once when nothing is ahead of this message, else queue it.

        ``frame`` is ``payload`` already encoded (``wire.encode_text_frame``), shared by
        every socket a message goes to.
        """
        text = payload if isinstance(payload, str) else json.dumps(payload)
        if (
            self.frames is not None
            and not self.sending
            and self.queue.empty()
            and self.frames.write(frame if frame is not None else encode_text_frame(text))
        ):
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            log.warning("closing slow signaling client", extra={"session_id": self.session_id})
            self.close_soon(SLOW_CONSUMER_CLOSE, force=True)

    def close_soon(self, code: int = 1000, *, force: bool = False) -> None:
        """Close after what is queued has been sent (or at once, dropping it, when forced)."""
        if force:
            while not self.queue.empty():
                self.queue.get_nowait()
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(code)

    async def write_loop(self) -> None:
        while True:
            item = await self.queue.get()
            if isinstance(item, int):
                with contextlib.suppress(Exception):
                    await self.websocket.close(item)
                return
            self.sending = True
            try:
                await self.websocket.send_text(item)
            finally:
                self.sending = False


class SignalingHub:
    def __init__(
        self,
        bus: Bus,
        presence: Presence,
        media: MediaRouter,
        metrics: ApiMetrics,
        presence_ttl: float,
    ) -> None:
        self.bus = bus
        self.presence = presence
        self.media = media
        self.metrics = metrics
        self.presence_ttl = presence_ttl
        self.connections: set[Connection] = set()
        self.rooms: dict[str, set[Connection]] = {}
        self._housekeeper: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Begin presence upkeep; the app routes room channels of the bus to ``deliver``."""
        self._housekeeper = asyncio.create_task(self._housekeeping(), name="signaling-presence")

    async def stop(self) -> None:
        if self._housekeeper is not None:
            self._housekeeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeper

    # -- connections -------------------------------------------------------------------

    def connected(self, conn: Connection) -> None:
        self.connections.add(conn)
        self.metrics.ws_connections.set(len(self.connections))

    async def disconnected(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self.metrics.ws_connections.set(len(self.connections))
        await self.exit(conn)

    async def enter(self, conn: Connection, info: SessionInfo) -> None:
        conn.info = info
        await self.presence.add(info)
        members = self.rooms.get(info.meeting_id)
        if members is None:
            members = self.rooms[info.meeting_id] = set()
            await self.bus.subscribe(CHANNEL_PREFIX + info.meeting_id)
        members.add(conn)
        self._count_rooms()

    async def exit(self, conn: Connection) -> None:
        """Take a socket out of its room and tell the room, once, that its user left."""
        info, conn.info = conn.info, None
        if info is None:
            return
        try:
            await self.media.disconnect(info)
        except Exception:
            log.exception("media server did not take the peer's leave")
        members = self.rooms.get(info.meeting_id)
        if members is not None:
            members.discard(conn)
        claimed = await self.presence.remove(info.session_id)
        if claimed is not None:
            await self.announce_left(info)
        if members is not None and not members:
            del self.rooms[info.meeting_id]
            await self.bus.unsubscribe(CHANNEL_PREFIX + info.meeting_id)
        self._count_rooms()

    async def announce_left(self, info: SessionInfo) -> None:
        """``user-left`` unless the same user is still present through another socket."""
        others = await self.presence.room(info.meeting_id)
        if any(s.user_id == info.user_id for s in others):
            return
        await self.publish(
            info.meeting_id,
            {
                "type": "user-left",
                "room_id": info.meeting_id,
                "user_id": info.user_id,
                "timestamp": now(),
            },
        )

    def _count_rooms(self) -> None:
        self.metrics.signaling_sessions.set(sum(len(m) for m in self.rooms.values()))
        self.metrics.active_meetings.set(len(self.rooms))

    # -- fan-out -----------------------------------------------------------------------

    async def publish(
        self,
        meeting_id: str,
        payload: dict[str, Any],
        *,
        to_user: str | None = None,
        exclude_session: str | None = None,
        remove: bool = False,
    ) -> None:
        """Send to a room's sockets on every replica; ``remove`` also takes them out of it."""
        # The routing header travels in front of the JSON so receivers never re-parse it.
        action = "remove" if remove else ""
        data = f"{to_user or ''}|{exclude_session or ''}|{action}|{json.dumps(payload)}"
        await self.bus.publish(CHANNEL_PREFIX + meeting_id, data)

    def deliver(self, channel: str, data: str) -> None:
        members = self.rooms.get(channel.removeprefix(CHANNEL_PREFIX))
        if not members:
            return
        to_user, exclude, action, body = data.split("|", 3)
        frame = encode_text_frame(body)
        for conn in tuple(members):
            if conn.session_id == exclude or (to_user and conn.user_id != to_user):
                continue
            conn.send(body, frame)
            if action == "remove":
                task = asyncio.create_task(self.exit(conn))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

    # -- presence upkeep ---------------------------------------------------------------

    async def _housekeeping(self) -> None:
        period = max(0.2, self.presence_ttl / 3)
        while True:
            await asyncio.sleep(period)
            try:
                ids = [c.info.session_id for m in self.rooms.values() for c in m if c.info]
                await self.presence.refresh(ids)
                for info in await self.presence.reap():
                    # A replica died (or stalled) holding this socket; its room learns now.
                    await self.announce_left(info)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("presence upkeep failed")
