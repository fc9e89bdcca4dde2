"""Group commit for chat sent over signaling sockets; used by ``signaling.endpoint``.

Storing each socket chat in a transaction of its own (a session, a membership query, an
INSERT and a COMMIT per message) was the largest share of a replica's CPU under chat
load. Here messages that arrive while a batch is being written wait and go together in
the next one. A lone message is written at once (no timer), so low rates keep their
latency. A message is handed back, and so fanned out, only after it is stored: what a
participant has seen is stored.

A batch is stored by one statement in autocommit: an INSERT of the batch's rows that
joins each row to its meeting and to its sender's membership and keeps only those the
rules allow. One round trip and no ORM objects to load cost about a third of the CPU of
a query, an INSERT and a COMMIT through a session (docs/benchmarks.md, Signaling), and
PostgreSQL runs one statement instead of four. Rows that statement leaves out (or a
batch it cannot run, such as a stored setting it cannot read as a boolean) go through
the rules in Python, which are authoritative: they give the sender the right error code,
and store what the SQL was stricter about. The rules are those of
``POST /meetings/{id}/messages`` (``meetings.check_can_post``); the SQL form may refuse
more but never allows more, which ``tests/integration/test_chat_writer.py`` checks for
every combination the rules look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Insert, Table, bindparam, insert, select, union_all
from sqlalchemy.exc import DataError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from konfer.api.db.models import ChatMessage, Meeting, MeetingStatus, Participant
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
_CHATS = cast(Table, ChatMessage.__table__)
_MEETINGS = cast(Table, Meeting.__table__)
_PARTICIPANTS = cast(Table, Participant.__table__)
_INSERT = insert(_CHATS)
_COLUMNS = ("id", "meeting_id", "user_id", "message", "created_at")


def _insert_allowed(size: int) -> Insert:
    """INSERT of ``size`` rows (parameters ``<column>_<i>``), keeping the allowed ones.

    The conditions mirror ``meetings.check_can_post``: the meeting exists and has not
    ended, chat is not switched off (absent means on, the setting's default), and the
    sender has joined and not left.
    """
    rows = [
        select(*(bindparam(f"{c}_{i}", type_=_CHATS.c[c].type).label(c) for c in _COLUMNS))
        for i in range(size)
    ]
    given = (rows[0] if size == 1 else union_all(*rows)).subquery("given")
    allowed = (
        select(*(given.c[c] for c in _COLUMNS))
        .select_from(
            given.join(_MEETINGS, _MEETINGS.c.id == given.c.meeting_id).join(
                _PARTICIPANTS,
                (_PARTICIPANTS.c.meeting_id == given.c.meeting_id)
                & (_PARTICIPANTS.c.user_id == given.c.user_id),
            )
        )
        .where(
            _MEETINGS.c.status != MeetingStatus.ended.value,
            _MEETINGS.c.settings["enable_chat"].as_boolean().is_not(False),
            _PARTICIPANTS.c.joined_at.is_not(None),
            _PARTICIPANTS.c.left_at.is_(None),
        )
    )
    return insert(_CHATS).from_select(_COLUMNS, allowed).returning(_CHATS.c.id)


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
        self,
        engine: AsyncEngine,
        sessionmaker: async_sessionmaker[AsyncSession],
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._sessionmaker = sessionmaker
        self._max_batch = max_batch
        self._statements: dict[int, Insert] = {}  # by padded batch size, built on first use
        self._pending: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # written batches, for tests and diagnostics
        self.checked = 0  # messages that went through the rules in Python, likewise

    @property
    def statement_sizes(self) -> list[int]:
        """The batch sizes this writer has built an INSERT for, for tests and diagnostics."""
        return sorted(self._statements)

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
        rows = [_row(item) for item in batch]
        try:
            stored = await self._store_allowed(rows)
        except DataError:
            log.warning("chat batch left to the rules in Python", exc_info=True)
            stored = set()
        rest = [item for item, row in zip(batch, rows, strict=True) if row.id not in stored]
        if rest:
            self.checked += len(rest)
            await self._check_and_store(rest)
        else:
            self.batches += 1
        for item, row in zip(batch, rows, strict=True):
            if row.id in stored and not item.done.done():
                item.done.set_result(row)

    async def _store_allowed(self, rows: list[ChatMessage]) -> set[uuid.UUID]:
        """Ids of the rows the one-statement path stored (committed on return)."""
        # Sizes are rounded up to a power of two, so that a replica builds, compiles and
        # has PostgreSQL prepare at most nine statements (1 to 256 rows), not one per
        # batch size it meets: a new size costs milliseconds, paid just as load rises.
        # The padding rows name no meeting, so the join leaves them out.
        size = 1 << (len(rows) - 1).bit_length()
        statement = self._statements.get(size)
        if statement is None:
            statement = self._statements[size] = _insert_allowed(size)
        params: dict[str, Any] = {
            f"{c}_{i}": getattr(row, c) for i, row in enumerate(rows) for c in _COLUMNS
        }
        params.update((f"{c}_{i}", None) for i in range(len(rows), size) for c in _COLUMNS)
        async with self._autocommit.connect() as conn:
            return set((await conn.execute(statement, params)).scalars())

    async def _check_and_store(self, batch: list[_Pending]) -> None:
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
                accepted.append((item, _row(item)))
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


def _row(item: _Pending) -> ChatMessage:
    return ChatMessage(
        id=uuid.uuid4(),
        meeting_id=item.meeting_id,
        user_id=item.user_id,
        message=item.text,
        created_at=utcnow(),
    )


def _check(meeting: Meeting, member: Participant | None) -> None:
    try:
        meetings.check_can_post(meeting, member)
    except MeetingEnded as exc:
        raise ChatRefused("INVALID_ROOM", exc.message) from exc
    except KonferError as exc:
        chat_on = meetings.meeting_settings(meeting).enable_chat
        raise ChatRefused("UNAUTHORIZED" if chat_on else "CHAT_DISABLED", exc.message) from exc
