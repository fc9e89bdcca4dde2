"""Socket chats stored by group commit: batched writes keep every rule and lose nothing."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from konfer.api.db.models import ChatMessage
from konfer.api.signaling.chatstore import ChatRefused, ChatWriter
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
    before = writer.batches
    senders = [uuid.UUID(host["user_id"]), uuid.UUID(guest["user_id"])]

    rows = await asyncio.gather(
        *(writer.post(meeting_id, senders[i % 2], f"m{i}") for i in range(60))
    )

    assert [r.message for r in rows] == [f"m{i}" for i in range(60)]
    assert len({r.id for r in rows}) == 60
    # Sixty messages offered at once cannot have needed sixty transactions.
    assert 1 <= writer.batches - before < 60
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
