"""Socket chats stored by group commit: batched writes keep every rule and lose nothing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from konfer.api.db.models import ChatMessage, Meeting, Participant
from konfer.api.signaling.chatstore import ChatRefused, ChatWriter
from konfer.core.timeutil import utcnow
from tests.conftest import ApiClient

pytestmark = pytest.mark.integration

MEETINGS = "/api/v1/meetings"


async def _meeting(client: ApiClient, host: dict[str, Any], **settings: bool) -> uuid.UUID:
    r = await client.post(
        MEETINGS,
        headers=host["headers"],
        json={
            "title": "Chat batch",
            "start_time": "2030-01-01T10:00:00Z",
            "duration": 30,
            "settings": settings,
        },
    )
    assert r.status_code == 201, r.text
    return uuid.UUID(r.json()["meeting_id"])


async def _join(client: ApiClient, user: dict[str, Any], meeting_id: uuid.UUID) -> None:
    r = await client.post(f"{MEETINGS}/{meeting_id}/join", headers=user["headers"])
    assert r.status_code == 200, r.text


def _writer(client: ApiClient) -> ChatWriter:
    writer = client.app.state.konfer.chat
    assert isinstance(writer, ChatWriter)
    return writer


async def test_concurrent_chats_share_commits_and_are_all_stored(client: ApiClient) -> None:
    host, guest = await client.signup(), await client.signup()
    meeting_id = await _meeting(client, host)
    await _join(client, host, meeting_id)
    await _join(client, guest, meeting_id)
    writer = _writer(client)
    before, checked = writer.batches, writer.checked
    senders = [uuid.UUID(host["user_id"]), uuid.UUID(guest["user_id"])]

    rows = await asyncio.gather(
        *(writer.post(meeting_id, senders[i % 2], f"m{i}") for i in range(60))
    )

    assert [r.message for r in rows] == [f"m{i}" for i in range(60)]
    assert len({r.id for r in rows}) == 60
    # Sixty messages offered at once cannot have needed sixty transactions.
    assert 1 <= writer.batches - before < 60
    # Every one is allowed, so the one statement stored them all: none was left to the
    # rules in Python.
    assert writer.checked == checked
    async with client.app.state.konfer.sessionmaker() as session:
        stored = await session.scalar(
            select(func.count()).where(ChatMessage.meeting_id == meeting_id)
        )
    assert stored == 60
    r = await client.get(
        f"{MEETINGS}/{meeting_id}/messages", headers=guest["headers"], params={"page_size": 100}
    )
    assert r.status_code == 200, r.text
    assert {m["message"] for m in r.json()["messages"]} == {f"m{i}" for i in range(60)}


async def test_a_refused_chat_in_a_batch_leaves_the_others_stored(client: ApiClient) -> None:
    host, outsider = await client.signup(), await client.signup()
    open_meeting = await _meeting(client, host)
    quiet = await _meeting(client, host, enable_chat=False)
    await _join(client, host, open_meeting)
    await _join(client, host, quiet)
    writer = _writer(client)
    host_id, outsider_id = uuid.UUID(host["user_id"]), uuid.UUID(outsider["user_id"])

    results = await asyncio.gather(
        writer.post(open_meeting, host_id, "kept 1"),
        writer.post(open_meeting, outsider_id, "not a member"),
        writer.post(quiet, host_id, "chat is off"),
        writer.post(uuid.uuid4(), host_id, "no such meeting"),
        writer.post(open_meeting, host_id, "kept 2"),
        return_exceptions=True,
    )

    kept = [r for r in results if isinstance(r, ChatMessage)]
    assert [r.message for r in kept] == ["kept 1", "kept 2"]
    codes = [r.code for r in results if isinstance(r, ChatRefused)]
    assert codes == ["UNAUTHORIZED", "CHAT_DISABLED", "INVALID_ROOM"]
    async with client.app.state.konfer.sessionmaker() as session:
        messages = (
            await session.scalars(
                select(ChatMessage.message).where(ChatMessage.meeting_id.in_([open_meeting, quiet]))
            )
        ).all()
    assert sorted(messages) == ["kept 1", "kept 2"]


async def test_chat_in_an_ended_meeting_is_refused_as_invalid_room(client: ApiClient) -> None:
    host = await client.signup()
    meeting_id = await _meeting(client, host)
    await _join(client, host, meeting_id)
    r = await client.post(f"{MEETINGS}/{meeting_id}/end", headers=host["headers"])
    assert r.status_code == 200, r.text

    with pytest.raises(ChatRefused) as refused:
        await _writer(client).post(meeting_id, uuid.UUID(host["user_id"]), "too late")
    assert refused.value.code == "INVALID_ROOM"


# -- the one-statement path against the rules in Python ----------------------------------

STATUSES = ("scheduled", "in_progress", "ended")
# What a meeting's stored settings may hold for chat: absent, the booleans the api writes,
# and values only a hand-edited row holds (the rules read anything but a boolean as on).
CHAT_SETTINGS: tuple[tuple[str, Any], ...] = (
    ("absent", None),
    ("on", True),
    ("off", False),
    ("text false", "false"),
    ("zero", 0),
    ("json null", "null"),
    ("unreadable", "maybe"),
)
MEMBERSHIPS = ("none", "invited", "joined", "left")


def _expected(status: str, chat: Any, membership: str) -> str | None:
    """The code ``meetings.check_can_post`` gives a socket chat, or None when it allows it."""
    if status == "ended":
        return "INVALID_ROOM"
    if chat is False:
        return "CHAT_DISABLED"
    if membership != "joined":
        return "UNAUTHORIZED"
    return None


async def _combinations(
    client: ApiClient, user_id: uuid.UUID
) -> list[tuple[uuid.UUID, str | None, str]]:
    """One meeting per combination of what the rules look at: (id, expected code, label)."""
    now = utcnow()
    made: list[tuple[uuid.UUID, str | None, str]] = []
    async with client.app.state.konfer.sessionmaker() as session:
        for status in STATUSES:
            for chat_label, chat in CHAT_SETTINGS:
                for membership in MEMBERSHIPS:
                    settings: dict[str, Any] = {}
                    if chat_label == "json null":
                        settings["enable_chat"] = None
                    elif chat_label != "absent":
                        settings["enable_chat"] = chat
                    meeting = Meeting(
                        id=uuid.uuid4(),
                        title=f"{status}/{chat_label}/{membership}",
                        creator_id=user_id,
                        start_time=now,
                        end_time=now + timedelta(hours=1),
                        settings=settings,
                        status=status,
                    )
                    session.add(meeting)
                    if membership != "none":
                        session.add(
                            Participant(
                                meeting_id=meeting.id,
                                user_id=user_id,
                                joined_at=None if membership == "invited" else now,
                                left_at=now if membership == "left" else None,
                            )
                        )
                    made.append((meeting.id, _expected(status, chat, membership), meeting.title))
        await session.commit()
    return made


async def test_batches_of_any_size_share_a_few_statements(client: ApiClient) -> None:
    host, guest = await client.signup(), await client.signup()
    meeting_id = await _meeting(client, host)
    await _join(client, host, meeting_id)
    await _join(client, guest, meeting_id)
    writer = _writer(client)
    senders = [uuid.UUID(host["user_id"]), uuid.UUID(guest["user_id"])]
    texts: list[str] = []

    for size in (3, 5, 6, 9):  # each gather is one batch: the writer drains after them
        batch = [f"{size}-{i}" for i in range(size)]
        await asyncio.gather(
            *(writer.post(meeting_id, senders[i % 2], t) for i, t in enumerate(batch))
        )
        texts += batch

    # Padded to 4, 8, 8 and 16 rows: one statement per power of two, none per odd size,
    # and the padding rows stored nothing.
    assert {4, 8, 16} <= set(writer.statement_sizes)
    assert all(size & (size - 1) == 0 for size in writer.statement_sizes)
    assert await _stored(client, meeting_id) == sorted(texts)


async def _stored(client: ApiClient, meeting_id: uuid.UUID) -> list[str]:
    async with client.app.state.konfer.sessionmaker() as session:
        found = await session.scalars(
            select(ChatMessage.message).where(ChatMessage.meeting_id == meeting_id)
        )
        return sorted(found.all())


def _outcome(result: ChatMessage | BaseException) -> str | None:
    if isinstance(result, ChatRefused):
        return result.code
    assert isinstance(result, ChatMessage), repr(result)
    return None


@pytest.mark.parametrize("together", [False, True], ids=["one by one", "one batch"])
async def test_every_combination_the_rules_look_at_is_stored_or_refused_as_they_say(
    client: ApiClient, together: bool
) -> None:
    user = await client.signup()
    user_id = uuid.UUID(user["user_id"])
    combos = await _combinations(client, user_id)
    writer = _writer(client)

    async def post(meeting_id: uuid.UUID) -> ChatMessage | BaseException:
        try:
            return await writer.post(meeting_id, user_id, "hello")
        except ChatRefused as refused:
            return refused

    if together:
        # Without the setting PostgreSQL cannot read, which sends a whole batch to the
        # rules in Python (tested below): here the statement judges a mixed batch.
        combos = [c for c in combos if "/unreadable/" not in c[2]]
        results = await asyncio.gather(*(post(m) for m, _, _ in combos))
    else:
        results = [await post(m) for m, _, _ in combos]

    for (meeting_id, expected, label), result in zip(combos, results, strict=True):
        assert _outcome(result) == expected, label
        assert await _stored(client, meeting_id) == ([] if expected else ["hello"]), label


async def test_a_setting_the_statement_cannot_read_leaves_the_batch_to_the_rules(
    client: ApiClient,
) -> None:
    """PostgreSQL cannot cast "maybe" to a boolean: the whole batch is judged in Python,
    which reads it as on, and nothing of the batch is lost or stored twice."""
    user = await client.signup()
    user_id = uuid.UUID(user["user_id"])
    combos = await _combinations(client, user_id)
    odd = next(m for m, _, label in combos if label == "in_progress/unreadable/joined")
    plain = next(m for m, _, label in combos if label == "in_progress/on/joined")
    writer = _writer(client)
    checked = writer.checked

    rows = await asyncio.gather(
        writer.post(odd, user_id, "odd"), writer.post(plain, user_id, "plain")
    )

    assert [r.message for r in rows] == ["odd", "plain"]
    if client.app.state.konfer.engine.dialect.name == "postgresql":
        assert writer.checked - checked == 2  # SQLite's JSON reads it as a value, not a cast
    assert await _stored(client, odd) == ["odd"]
    assert await _stored(client, plain) == ["plain"]
