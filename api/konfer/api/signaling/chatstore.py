"""Group commit for chat sent over signaling sockets; used by ``signaling.endpoint``.

Storing each socket chat in a transaction of its own (a session, a membership query, an
INSERT and a COMMIT per message) was the largest share of a replica's CPU under chat
load. Here messages that arrive while a batch is being written wait and go together in
the next one: one query loads every meeting and sender of the batch, one INSERT stores
the accepted messages, one COMMIT makes them durable. A lone message is written at once
(no timer), so low rates keep their latency. A message is handed back, and so fanned
out, only after its commit: what a participant has seen is stored.

The rules are those of ``POST /meetings/{id}/messages`` (``meetings.check_can_post``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from konfer.api.db.models import ChatMessage, Meeting, Participant
from konfer.api.services import meetings
from konfer.core.errors import KonferError, MeetingEnded
from konfer.core.timeutil import utcnow

log = logging.getLogger(__name__)

MAX_BATCH = 256

# Built once: constructing the statements per batch cost as much CPU as running them.
# Each meeting of the batch with those of the batch's senders who belong to it.
_MEMBERS = (
    select(Meeting, Participant)
    .outerjoin(
        Participant,
        (Participant.meeting_id == Meeting.id)
        & Participant.user_id.in_(bindparam("users", expanding=True)),
    )
    .where(Meeting.id.in_(bindparam("meetings", expanding=True)))
)
_INSERT = insert(cast(Table, ChatMessage.__table__))
_COLUMNS = ("id", "meeting_id", "user_id", "message", "created_at")


class ChatRefused(Exception):
    """A chat the rules refuse, with the signaling error code the sender gets."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class _Pending:
    meeting_id: uuid.UUID
    user_id: uuid.UUID
    text: str
    done: asyncio.Future[ChatMessage]


class ChatWriter:
    """Stores socket chats of one replica, batching those that arrive together."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], max_batch: int = MAX_BATCH
    ) -> None:
        self._sessionmaker = sessionmaker
        self._max_batch = max_batch
        self._pending: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # written batches, for tests and diagnostics

    async def post(self, meeting_id: uuid.UUID, user_id: uuid.UUID, text: str) -> ChatMessage:
        """Store one chat; raises ``ChatRefused`` when the rules forbid it."""
        done: asyncio.Future[ChatMessage] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(meeting_id, user_id, text, done))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="konfer-chat-writer")
        # A sender that goes away mid-write does not take its message back.
        return await asyncio.shield(done)

    async def close(self) -> None:
        """Finish what was accepted before the replica stops."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                await self._write(batch)
            except Exception as exc:
                log.exception("storing chat messages failed", extra={"messages": len(batch)})
                for item in batch:
                    if not item.done.done():
                        item.done.set_exception(exc)

    async def _write(self, batch: list[_Pending]) -> None:
        meeting_ids = {item.meeting_id for item in batch}
        user_ids = {item.user_id for item in batch}
        async with self._sessionmaker() as session:
            # One round trip: each meeting with the batch's senders who belong to it.
            found = await session.execute(
                _MEMBERS, {"meetings": list(meeting_ids), "users": list(user_ids)}
            )
            by_id: dict[uuid.UUID, Meeting] = {}
            by_pair: dict[tuple[uuid.UUID, uuid.UUID], Participant] = {}
            for found_meeting, member in found.tuples():
                by_id[found_meeting.id] = found_meeting
                if member is not None:
                    by_pair[(member.meeting_id, member.user_id)] = member
            accepted: list[tuple[_Pending, ChatMessage]] = []
            for item in batch:
                try:
                    meeting = by_id.get(item.meeting_id)
                    if meeting is None:
                        raise ChatRefused("INVALID_ROOM", "Meeting room does not exist")
                    _check(meeting, by_pair.get((item.meeting_id, item.user_id)))
                except ChatRefused as refused:
                    item.done.set_exception(refused)
                    continue
                row = ChatMessage(
                    id=uuid.uuid4(),
                    meeting_id=item.meeting_id,
                    user_id=item.user_id,
                    message=item.text,
                    created_at=utcnow(),
                )
                accepted.append((item, row))
            if accepted:
                # A plain multi-row INSERT: the rows are never read back through this
                # session, so the ORM's unit of work would only add CPU per message.
                await session.execute(
                    _INSERT,
                    [{c: getattr(row, c) for c in _COLUMNS} for _, row in accepted],
                )
                await session.commit()
        self.batches += 1
        for item, row in accepted:
            if not item.done.done():
                item.done.set_result(row)


def _check(meeting: Meeting, member: Participant | None) -> None:
    try:
        meetings.check_can_post(meeting, member)
    except MeetingEnded as exc:
        raise ChatRefused("INVALID_ROOM", exc.message) from exc
    except KonferError as exc:
        chat_on = meetings.meeting_settings(meeting).enable_chat
        raise ChatRefused("UNAUTHORIZED" if chat_on else "CHAT_DISABLED", exc.message) from exc
