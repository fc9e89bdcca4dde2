"""Remembers, per sign-in session, that the caller is still allowed in.

Without it every authenticated request costs a database round trip just to learn that
nothing changed. Entries are dropped the moment a transaction that changes a user or
revokes their sessions commits (see ``db.engine``), on this replica at once and on the
others through the bus; a short TTL bounds staleness should a bus message be lost.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from sqlalchemy.orm import make_transient_to_detached

from konfer.api.db.models import User
from konfer.core.bus import Bus

CHANNEL = "konfer:auth-invalidate"
_COLUMNS = tuple(c.name for c in User.__table__.columns)


class AuthCache:
    def __init__(self, ttl: float = 30.0, max_entries: int = 50_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.bus: Bus | None = None
        self._entries: dict[tuple[uuid.UUID, uuid.UUID], tuple[float, User]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, user_id: uuid.UUID, session_id: uuid.UUID) -> User | None:
        """A detached snapshot of the user; shared between requests, so read-only."""
        entry = self._entries.get((user_id, session_id))
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, user: User, session_id: uuid.UUID) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        snapshot = User(**{name: getattr(user, name) for name in _COLUMNS})
        make_transient_to_detached(snapshot)
        self._entries[(user.id, session_id)] = (time.monotonic() + self.ttl, snapshot)

    def forget(self, user_ids: set[uuid.UUID]) -> None:
        if user_ids:
            for key in [k for k in self._entries if k[0] in user_ids]:
                del self._entries[key]

    def invalidate(self, user_ids: set[uuid.UUID]) -> None:
        """Drop here now and tell the other replicas."""
        self.forget(user_ids)
        if self.bus is None or not user_ids:
            return
        data = ",".join(str(u) for u in user_ids)
        try:
            task = asyncio.get_running_loop().create_task(self.bus.publish(CHANNEL, data))
        except RuntimeError:  # no loop: a CLI command, nothing cached elsewhere to reach
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def on_bus(self, data: str) -> None:
        self.forget({uuid.UUID(part) for part in data.split(",") if part})
