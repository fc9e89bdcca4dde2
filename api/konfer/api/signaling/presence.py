"""Who is connected where: signaling sessions and room membership, with expiry.

Every replica refreshes the expiry of the sessions it holds; a replica that dies stops
refreshing, its sessions expire, and whichever replica reaps an expired session first
(the removal is atomic, so exactly one does) announces ``user-left`` to the room.
Redis holds this for a cluster; a dictionary does for one process.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from redis.asyncio import Redis


@dataclass(slots=True)
class SessionInfo:
    session_id: str
    user_id: str
    username: str
    meeting_id: str
    replica_id: str
    connected_at: str
    last_activity: str
    avatar_url: str | None = None
    role: str = "participant"
    hidden: bool = False
    media_state: dict[str, bool] = field(
        default_factory=lambda: {
            "audio_enabled": False,
            "video_enabled": False,
            "screen_sharing": False,
        }
    )

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, data: str | bytes) -> SessionInfo:
        raw: dict[str, Any] = json.loads(data)
        return cls(**raw)


class Presence(Protocol):
    async def add(self, info: SessionInfo) -> None: ...
    async def update(self, info: SessionInfo) -> None: ...
    async def remove(self, session_id: str) -> SessionInfo | None: ...
    async def get(self, session_id: str) -> SessionInfo | None: ...
    async def room(self, meeting_id: str) -> list[SessionInfo]: ...
    async def rooms(self) -> dict[str, list[SessionInfo]]: ...
    async def refresh(self, session_ids: list[str]) -> None: ...
    async def reap(self) -> list[SessionInfo]: ...


async def room_user_count(presence: Presence, meeting_id: uuid.UUID | str) -> int:
    """Distinct visible users connected to a meeting (several tabs count once)."""
    return len({s.user_id for s in await presence.room(str(meeting_id)) if not s.hidden})


class MemoryPresence:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._sessions: dict[str, tuple[SessionInfo, float]] = {}

    async def add(self, info: SessionInfo) -> None:
        self._sessions[info.session_id] = (info, time.time() + self.ttl)

    async def update(self, info: SessionInfo) -> None:
        if info.session_id in self._sessions:
            self._sessions[info.session_id] = (info, self._sessions[info.session_id][1])

    async def remove(self, session_id: str) -> SessionInfo | None:
        entry = self._sessions.pop(session_id, None)
        return entry[0] if entry else None

    async def get(self, session_id: str) -> SessionInfo | None:
        entry = self._sessions.get(session_id)
        return entry[0] if entry and entry[1] > time.time() else None

    async def room(self, meeting_id: str) -> list[SessionInfo]:
        now = time.time()
        return [i for i, exp in self._sessions.values() if i.meeting_id == meeting_id and exp > now]

    async def rooms(self) -> dict[str, list[SessionInfo]]:
        out: dict[str, list[SessionInfo]] = {}
        now = time.time()
        for info, exp in self._sessions.values():
            if exp > now:
                out.setdefault(info.meeting_id, []).append(info)
        return out

    async def refresh(self, session_ids: list[str]) -> None:
        exp = time.time() + self.ttl
        for sid in session_ids:
            if sid in self._sessions:
                self._sessions[sid] = (self._sessions[sid][0], exp)

    async def reap(self) -> list[SessionInfo]:
        now = time.time()
        gone = [sid for sid, (_, exp) in self._sessions.items() if exp <= now]
        return [self._sessions.pop(sid)[0] for sid in gone]


_K_INFO = "konfer:presence:info"
_K_ROOM = "konfer:presence:room:"
_K_ALL = "konfer:presence:sessions"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisPresence:
    """Session JSON in one hash; sorted sets scored by expiry say who is still alive."""

    def __init__(self, redis: Redis, ttl: float) -> None:
        self.redis = redis
        self.ttl = ttl

    async def add(self, info: SessionInfo) -> None:
        exp = time.time() + self.ttl
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(_K_INFO, info.session_id, info.dumps())
            p.zadd(_K_ROOM + info.meeting_id, {info.session_id: exp})
            p.zadd(_K_ALL, {info.session_id: exp})
            await p.execute()

    async def update(self, info: SessionInfo) -> None:
        if await self.redis.zscore(_K_ALL, info.session_id) is not None:
            await self.redis.hset(_K_INFO, info.session_id, info.dumps())  # type: ignore[misc]

    async def _forget(self, session_id: str) -> SessionInfo | None:
        # ZREM on the global index is the claim: of all replicas only one sees 1.
        if not await self.redis.zrem(_K_ALL, session_id):
            return None
        raw = await self.redis.hget(_K_INFO, session_id)  # type: ignore[misc]
        if raw is None:
            return None
        info = SessionInfo.loads(raw)
        async with self.redis.pipeline(transaction=True) as p:
            p.zrem(_K_ROOM + info.meeting_id, session_id)
            p.hdel(_K_INFO, session_id)
            await p.execute()
        return info

    async def remove(self, session_id: str) -> SessionInfo | None:
        return await self._forget(session_id)

    async def get(self, session_id: str) -> SessionInfo | None:
        score = await self.redis.zscore(_K_ALL, session_id)
        if score is None or score <= time.time():
            return None
        raw = await self.redis.hget(_K_INFO, session_id)  # type: ignore[misc]
        return SessionInfo.loads(raw) if raw is not None else None

    async def _load(self, session_ids: list[str]) -> list[SessionInfo]:
        if not session_ids:
            return []
        raws = await self.redis.hmget(_K_INFO, session_ids)  # type: ignore[misc]
        return [SessionInfo.loads(r) for r in raws if r is not None]

    async def room(self, meeting_id: str) -> list[SessionInfo]:
        ids = await self.redis.zrangebyscore(_K_ROOM + meeting_id, time.time(), "+inf")
        return await self._load([_text(i) for i in ids])

    async def rooms(self) -> dict[str, list[SessionInfo]]:
        ids = await self.redis.zrangebyscore(_K_ALL, time.time(), "+inf")
        out: dict[str, list[SessionInfo]] = {}
        for info in await self._load([_text(i) for i in ids]):
            out.setdefault(info.meeting_id, []).append(info)
        return out

    async def refresh(self, session_ids: list[str]) -> None:
        if not session_ids:
            return
        exp = time.time() + self.ttl
        infos = await self._load(session_ids)
        async with self.redis.pipeline(transaction=False) as p:
            for info in infos:
                p.zadd(_K_ROOM + info.meeting_id, {info.session_id: exp}, xx=True)
                p.zadd(_K_ALL, {info.session_id: exp}, xx=True)
            await p.execute()

    async def reap(self) -> list[SessionInfo]:
        expired = await self.redis.zrangebyscore(_K_ALL, "-inf", time.time())
        gone = [await self._forget(_text(sid)) for sid in expired]
        return [g for g in gone if g is not None]
