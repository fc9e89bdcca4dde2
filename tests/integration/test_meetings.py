"""Meetings over REST: lifecycle, shapes, permissions, limits, joining, roles and chat.

Every test runs on SQLite + local disk and on PostgreSQL + Redis + MinIO (the ``client``
fixture). Live presence is provoked without WebSockets by writing signaling sessions into
the app's presence store directly.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import func, select
from starlette.websockets import WebSocket

from konfer.api.db.models import ChatMessage, Meeting, Participant
from konfer.api.signaling.hub import Connection
from konfer.api.signaling.presence import SessionInfo
from konfer.core.timeutil import isoformat, utcnow
from tests.conftest import ApiClient, SettingsFactory
from tests.helpers import assert_error, same_error

MEETINGS = "/api/v1/meetings"
MY = "/api/v1/my/meetings"
USER_PUBLIC_FIELDS = {
    "meeting_id",
    "title",
    "description",
    "creator_id",
    "start_time",
    "end_time",
    "duration",
    "max_participants",
    "current_participants",
    "meeting_type",
    "has_password",
    "settings",
    "status",
    "join_url",
    "started_at",
    "ended_at",
    "created_at",
    "updated_at",
}
JOIN_FIELDS = {
    "meeting_id",
    "participant_id",
    "role",
    "signaling_url",
    "room_url",
    "ice_servers",
    "media_token",
    "media_token_expires_in",
    "joined_at",
}
PARTICIPANT_FIELDS = {
    "participant_id",
    "meeting_id",
    "user_id",
    "username",
    "nickname",
    "avatar_url",
    "role",
    "status",
    "joined_at",
    "left_at",
    "created_at",
}
MESSAGE_FIELDS = {
    "message_id",
    "meeting_id",
    "user_id",
    "username",
    "nickname",
    "message",
    "created_at",
}
User = dict[str, Any]


# --- helpers ---------------------------------------------------------------------------


def at(**delta: float) -> str:
    """An ISO 8601 UTC time relative to now, second precision."""
    return isoformat((utcnow() + timedelta(**delta)).replace(microsecond=0))


def parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


async def create(client: ApiClient, owner: User, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"title": "Team Standup", "start_time": at(hours=1), **fields}
    r = await client.post(MEETINGS, json=body, headers=owner["headers"])
    assert r.status_code == 201, r.text
    meeting: dict[str, Any] = r.json()
    return meeting


async def join(client: ApiClient, user: User, meeting_id: str, **body: Any) -> httpx.Response:
    return await client.post(
        f"{MEETINGS}/{meeting_id}/join", json=body or None, headers=user["headers"]
    )


async def joined(client: ApiClient, user: User, meeting_id: str, **body: Any) -> dict[str, Any]:
    r = await join(client, user, meeting_id, **body)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def invite(
    client: ApiClient, host: User, meeting_id: str, user: User, role: str = "participant"
) -> None:
    r = await client.post(
        f"{MEETINGS}/{meeting_id}/participants",
        json={"user_id": user["user_id"], "role": role},
        headers=host["headers"],
    )
    assert r.status_code == 201, r.text


async def meeting_row(client: ApiClient, meeting_id: str) -> dict[str, Any] | None:
    async with client.app.state.konfer.sessionmaker() as s:
        row = await s.get(Meeting, uuid.UUID(meeting_id))
        if row is None:
            return None
        return {c.name: getattr(row, c.name) for c in Meeting.__table__.columns}


async def participant_rows(client: ApiClient, meeting_id: str) -> dict[str, dict[str, Any]]:
    """Participants by user id, every column."""
    async with client.app.state.konfer.sessionmaker() as s:
        rows = (
            await s.execute(
                select(Participant).where(Participant.meeting_id == uuid.UUID(meeting_id))
            )
        ).scalars()
        return {
            str(p.user_id): {c.name: getattr(p, c.name) for c in Participant.__table__.columns}
            for p in rows
        }


async def message_count(client: ApiClient, meeting_id: str) -> int:
    async with client.app.state.konfer.sessionmaker() as s:
        return int(
            (
                await s.execute(
                    select(func.count()).where(ChatMessage.meeting_id == uuid.UUID(meeting_id))
                )
            ).scalar_one()
        )


async def snapshot(client: ApiClient, meeting_id: str) -> tuple[Any, ...]:
    """Everything stored about a meeting, to prove a refused request wrote nothing."""
    return (
        await meeting_row(client, meeting_id),
        await participant_rows(client, meeting_id),
        await message_count(client, meeting_id),
    )


@asynccontextmanager
async def connected(
    client: ApiClient, meeting_id: str, user_ids: list[str], hidden: bool = False
) -> AsyncIterator[None]:
    """Users shown as connected by WebSocket, as a signaling replica would record them."""
    presence = client.app.state.konfer.presence
    stamp = isoformat(utcnow())
    sessions = [
        SessionInfo(
            session_id=uuid.uuid4().hex,
            user_id=uid,
            username=f"user-{uid[:6]}",
            meeting_id=meeting_id,
            replica_id="test",
            connected_at=stamp,
            last_activity=stamp,
            hidden=hidden,
        )
        for uid in user_ids
    ]
    for info in sessions:
        await presence.add(info)
    try:
        yield
    finally:
        for info in sessions:
            await presence.remove(info.session_id)


# --- health and lifecycle --------------------------------------------------------------


async def test_health_is_public_and_reports_ok(client: ApiClient) -> None:
    r = await client.get(f"{MEETINGS}/health")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"service", "status", "time"}
    assert body["service"] == "meeting-service"
    assert body["status"] == "ok"
    assert body["time"].endswith("Z")


async def test_full_lifecycle_from_scheduling_to_history(client: ApiClient) -> None:
    host, guest = await client.signup(), await client.signup()
    meeting = await create(client, host, duration=30, max_participants=10)
    mid = meeting["meeting_id"]
    assert meeting["status"] == "scheduled"

    r = await client.get(f"{MEETINGS}/{mid}", headers=host["headers"])
    assert r.status_code == 200
    assert r.json() == meeting

    entry = await joined(client, guest, mid)
    assert entry["role"] == "participant"
    await joined(client, host, mid)
    r = await client.post(f"{MEETINGS}/{mid}/start", headers=host["headers"])
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "in_progress"
    assert r.json()["started_at"].endswith("Z")

    r = await client.post(
        f"{MEETINGS}/{mid}/messages", json={"message": "hello"}, headers=guest["headers"]
    )
    assert r.status_code == 201, r.text
    r = await client.get(f"{MEETINGS}/{mid}/messages", headers=host["headers"])
    assert [m["message"] for m in r.json()["messages"]] == ["hello"]

    r = await client.post(f"{MEETINGS}/{mid}/leave", headers=guest["headers"])
    assert r.status_code == 200
    assert r.json()["message"] == "Left meeting successfully"
    assert r.json()["duration"] >= 0

    r = await client.post(f"{MEETINGS}/{mid}/end", headers=host["headers"])
    assert r.status_code == 200
    ended = r.json()
    assert ended["status"] == "ended"
    assert parse(ended["ended_at"]) >= parse(ended["started_at"])

    history = (await client.get(f"{MY}/history", headers=guest["headers"])).json()
    assert [m["meeting_id"] for m in history["meetings"]] == [mid]
    upcoming = (await client.get(f"{MY}/upcoming", headers=guest["headers"])).json()
    assert upcoming["meetings"] == []


# --- create ----------------------------------------------------------------------------


async def test_create_returns_the_documented_shape_and_makes_the_creator_host(
    client: ApiClient,
) -> None:
    host = await client.signup()
    start = at(hours=2)
    r = await client.post(
        MEETINGS,
        json={
            "title": "  Team Standup ",
            "description": "Daily standup meeting",
            "start_time": start,
            "duration": 30,
            "max_participants": 10,
        },
        headers=host["headers"],
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == USER_PUBLIC_FIELDS
    uuid.UUID(body["meeting_id"])
    assert body["title"] == "Team Standup"
    assert body["description"] == "Daily standup meeting"
    assert body["creator_id"] == host["user_id"]
    assert body["start_time"] == start
    assert parse(body["end_time"]) - parse(start) == timedelta(minutes=30)
    assert body["duration"] == 30
    assert body["max_participants"] == 10
    assert body["current_participants"] == 0
    assert body["meeting_type"] == "video"
    assert body["has_password"] is False
    assert body["settings"] == {
        "enable_recording": True,
        "enable_chat": True,
        "enable_screen_share": True,
        "enable_transcription": False,
    }
    assert body["status"] == "scheduled"
    assert body["join_url"] == f"http://testserver/meetings/{body['meeting_id']}/join"
    assert body["started_at"] is None
    assert body["ended_at"] is None
    for stamp in ("start_time", "end_time", "created_at", "updated_at"):
        assert body[stamp].endswith("Z")
    members = await participant_rows(client, body["meeting_id"])
    assert list(members) == [host["user_id"]]
    assert members[host["user_id"]]["role"] == "host"
    assert members[host["user_id"]]["joined_at"] is None


async def test_create_with_end_time_type_password_and_settings(client: ApiClient) -> None:
    host = await client.signup()
    start = utcnow().replace(microsecond=0) + timedelta(days=1)
    body = await create(
        client,
        host,
        start_time=isoformat(start),
        end_time=isoformat(start + timedelta(minutes=90)),
        meeting_type="webinar",
        password="s3cret-pass",
        settings={"enable_chat": False},
    )
    assert body["duration"] == 90
    assert body["meeting_type"] == "webinar"
    assert body["has_password"] is True
    assert body["settings"] == {
        "enable_recording": True,
        "enable_chat": False,
        "enable_screen_share": True,
        "enable_transcription": False,
    }
    assert "s3cret" not in str(body)
    row = await meeting_row(client, body["meeting_id"])
    assert row is not None
    assert row["password_hash"].startswith("$argon2")


async def test_create_without_end_or_duration_lasts_an_hour_with_the_default_cap(
    client: ApiClient,
) -> None:
    host = await client.signup()
    start = at(hours=3)
    body = await create(client, host, start_time=start)
    assert body["duration"] == 60
    assert parse(body["end_time"]) == parse(start) + timedelta(hours=1)
    assert body["max_participants"] == client.app.state.konfer.settings.meeting_max_participants


async def test_create_accepts_an_offset_and_answers_utc(client: ApiClient) -> None:
    host = await client.signup()
    body = await create(client, host, start_time="2031-10-05T22:00:00+08:00", duration=15)
    assert body["start_time"] == "2031-10-05T14:00:00Z"
    assert body["end_time"] == "2031-10-05T14:15:00Z"


BAD_CREATE: list[tuple[str, dict[str, Any], str]] = [
    ("missing-title", {"title": None}, "title"),
    ("empty-title", {"title": "   "}, "title"),
    ("long-title", {"title": "x" * 201}, "title"),
    ("title-number", {"title": 5}, "title"),
    ("nul-in-title", {"title": "a\x00b"}, "title"),
    ("long-description", {"description": "d" * 2001}, "description"),
    ("nul-in-description", {"description": "a\x00b"}, "description"),
    ("nul-in-password", {"password": "pass\x00word"}, "password"),
    ("year-9999", {"start_time": "9999-12-31T23:30:00Z"}, "start_time"),
    ("before-1970", {"start_time": "1969-12-31T23:59:59Z"}, "start_time"),
    ("offset-overflow", {"start_time": "0001-01-01T00:00:00+01:00"}, "start_time"),
    ("bad-offset", {"start_time": "2031-10-05T14:00:00+25:00"}, "start_time"),
    ("missing-start", {"start_time": None}, "start_time"),
    ("naive-start", {"start_time": "2031-10-05T14:00:00"}, "start_time"),
    ("date-only-start", {"start_time": "2031-10-05"}, "start_time"),
    ("garbage-start", {"start_time": "next tuesday"}, "start_time"),
    ("number-start", {"start_time": 1_900_000_000}, "start_time"),
    ("naive-end", {"end_time": "2031-10-05T15:00:00"}, "end_time"),
    ("end-before-start", {"end_time": "2031-10-05T13:00:00Z"}, "end_time"),
    ("end-equals-start", {"end_time": "2031-10-05T14:00:00Z"}, "end_time"),
    ("longer-than-a-day", {"end_time": "2031-10-06T14:00:01Z"}, "end_time"),
    ("end-and-duration-disagree", {"end_time": "2031-10-05T15:00:00Z", "duration": 30}, "duration"),
    ("zero-duration", {"duration": 0}, "duration"),
    ("huge-duration", {"duration": 1441}, "duration"),
    ("string-duration", {"duration": "30"}, "duration"),
    ("float-duration", {"duration": 30.5}, "duration"),
    ("one-participant", {"max_participants": 1}, "max_participants"),
    ("over-the-cap", {"max_participants": 101}, "max_participants"),
    ("way-over-the-cap", {"max_participants": 10**9}, "max_participants"),
    ("string-cap", {"max_participants": "10"}, "max_participants"),
    ("unknown-type", {"meeting_type": "zoom"}, "meeting_type"),
    ("short-password", {"password": "abc"}, "password"),
    ("long-password", {"password": "p" * 129}, "password"),
    ("number-password", {"password": 12345}, "password"),
    ("string-switch", {"settings": {"enable_chat": "yes"}}, "settings.enable_chat"),
    ("number-switch", {"settings": {"enable_chat": 1}}, "settings.enable_chat"),
    ("unknown-switch", {"settings": {"enable_whiteboard": True}}, "settings.enable_whiteboard"),
    ("settings-list", {"settings": [True]}, "settings"),
    ("unknown-field", {"status": "ended"}, "status"),
    ("creator-field", {"creator_id": str(uuid.uuid4())}, "creator_id"),
]


@pytest.mark.parametrize(
    ("changes", "field"),
    [(c, f) for _, c, f in BAD_CREATE],
    ids=[name for name, _, _ in BAD_CREATE],
)
async def test_create_rejects_bad_input_and_stores_nothing(
    client: ApiClient, changes: dict[str, Any], field: str
) -> None:
    host = await client.signup()
    body: dict[str, Any] = {"title": "Standup", "start_time": "2031-10-05T14:00:00Z", **changes}
    body = {k: v for k, v in body.items() if v is not None}
    r = await client.post(MEETINGS, json=body, headers=host["headers"])
    err = assert_error(r, 400, "VALIDATION_ERROR")
    assert field in err["details"], err
    mine = (await client.get(MY, headers=host["headers"])).json()
    assert mine["pagination"]["total"] == 0


@pytest.mark.parametrize(
    "content",
    [b"{", b"[]", b'"title"', b"null", b""],
    ids=["truncated", "array", "string", "null", "empty"],
)
async def test_create_rejects_malformed_json(client: ApiClient, content: bytes) -> None:
    host = await client.signup()
    r = await client.post(
        MEETINGS,
        content=content,
        headers={**host["headers"], "Content-Type": "application/json"},
    )
    assert_error(r, 400, "VALIDATION_ERROR")


async def test_create_refuses_an_oversized_body(client: ApiClient) -> None:
    host = await client.signup()
    limit = client.app.state.konfer.settings.max_json_body_bytes
    body = {"title": "x", "start_time": at(hours=1), "description": "d" * (limit + 1)}
    r = await client.post(MEETINGS, json=body, headers=host["headers"])
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")


async def test_cap_follows_settings(make_settings: SettingsFactory, open_client: Any) -> None:
    async with open_client(make_settings("sqlite", meeting_max_participants=5)) as c:
        host = await c.signup()
        r = await c.post(
            MEETINGS,
            json={"title": "t", "start_time": at(hours=1), "max_participants": 6},
            headers=host["headers"],
        )
        err = assert_error(r, 400, "VALIDATION_ERROR")
        assert "5" in err["details"]["max_participants"]
        body = await create(c, host)
        assert body["max_participants"] == 5


# --- auth on every route ---------------------------------------------------------------


def routes(mid: str, uid: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every meeting route that needs a caller, aimed at one meeting and user."""
    return [
        ("POST", MEETINGS, {"json": {"title": "t", "start_time": "2031-01-01T00:00:00Z"}}),
        ("GET", MEETINGS, {}),
        ("GET", f"{MEETINGS}/{mid}", {}),
        ("PUT", f"{MEETINGS}/{mid}", {"json": {"title": "changed"}}),
        ("DELETE", f"{MEETINGS}/{mid}", {}),
        ("POST", f"{MEETINGS}/{mid}/start", {}),
        ("POST", f"{MEETINGS}/{mid}/end", {}),
        ("POST", f"{MEETINGS}/{mid}/join", {}),
        ("POST", f"{MEETINGS}/{mid}/leave", {}),
        ("GET", f"{MEETINGS}/{mid}/participants", {}),
        ("POST", f"{MEETINGS}/{mid}/participants", {"json": {"user_id": uid}}),
        ("DELETE", f"{MEETINGS}/{mid}/participants/{uid}", {}),
        ("PUT", f"{MEETINGS}/{mid}/participants/{uid}/role", {"json": {"role": "viewer"}}),
        ("GET", f"{MEETINGS}/{mid}/messages", {}),
        ("POST", f"{MEETINGS}/{mid}/messages", {"json": {"message": "hi"}}),
        ("GET", MY, {}),
        ("GET", f"{MY}/upcoming", {}),
        ("GET", f"{MY}/history", {}),
    ]


ROUTE_IDS = [
    "create",
    "list",
    "get",
    "update",
    "delete",
    "start",
    "end",
    "join",
    "leave",
    "participants",
    "add",
    "remove",
    "role",
    "messages",
    "post-message",
    "my",
    "upcoming",
    "history",
]


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "MISSING_TOKEN"),
        ({"Authorization": "Bearer garbage"}, "INVALID_TOKEN"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "INVALID_TOKEN"),
    ],
    ids=["missing", "garbage", "wrong-scheme"],
)
async def test_every_route_refuses_bad_tokens_and_changes_nothing(
    client: ApiClient, headers: dict[str, str], code: str
) -> None:
    host, member = await client.signup(), await client.signup()
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    await invite(client, host, mid, member)
    before = await snapshot(client, mid)
    for method, path, kw in routes(mid, member["user_id"]):
        r = await client.request(method, path, headers=headers, **kw)
        assert_error(r, 401, code)
    assert await snapshot(client, mid) == before


async def test_a_revoked_session_cannot_use_meeting_routes(client: ApiClient) -> None:
    host = await client.signup()
    meeting = await create(client, host)
    assert (await client.post("/api/v1/auth/logout", headers=host["headers"])).status_code == 200
    r = await client.put(
        f"{MEETINGS}/{meeting['meeting_id']}", json={"title": "late"}, headers=host["headers"]
    )
    assert_error(r, 401, "INVALID_TOKEN")
    row = await meeting_row(client, meeting["meeting_id"])
    assert row is not None
    assert row["title"] == "Team Standup"


# --- visibility and permissions --------------------------------------------------------


async def test_strangers_get_the_same_404_as_for_a_missing_meeting_and_nothing_changes(
    client: ApiClient,
) -> None:
    host, stranger = await client.signup(), await client.signup()
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    await joined(client, host, mid)
    await client.post(f"{MEETINGS}/{mid}/messages", json={"message": "x"}, headers=host["headers"])
    before = await snapshot(client, mid)
    missing = str(uuid.uuid4())
    # every route but those that name no meeting, and join (open to all signed-in users)
    unscoped = {"create", "list", "join", "my", "upcoming", "history"}
    picked = [i for i, name in enumerate(ROUTE_IDS) if name not in unscoped]
    for i in picked:
        method, path, kw = routes(mid, host["user_id"])[i]
        r = await client.request(method, path, headers=stranger["headers"], **kw)
        assert_error(r, 404, "RESOURCE_NOT_FOUND")
        assert "Team Standup" not in r.text
        method, path, kw = routes(missing, host["user_id"])[i]
        other = await client.request(method, path, headers=stranger["headers"], **kw)
        assert same_error(r, other, id_segment=4), (r.text, other.text)
    assert await snapshot(client, mid) == before
    listing = (await client.get(MEETINGS, headers=stranger["headers"])).json()
    assert listing["meetings"] == []


@pytest.mark.parametrize("role", ["participant", "viewer"])
async def test_members_without_a_hosting_role_get_403_and_nothing_changes(
    client: ApiClient, role: str
) -> None:
    host, member, other = await client.signup(), await client.signup(), await client.signup()
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    await invite(client, host, mid, member, role)
    await invite(client, host, mid, other)
    before = await snapshot(client, mid)
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("PUT", f"{MEETINGS}/{mid}", {"json": {"title": "mine now"}}),
        ("DELETE", f"{MEETINGS}/{mid}", {}),
        ("POST", f"{MEETINGS}/{mid}/start", {}),
        ("POST", f"{MEETINGS}/{mid}/end", {}),
        ("POST", f"{MEETINGS}/{mid}/participants", {"json": {"user_id": str(uuid.uuid4())}}),
        ("DELETE", f"{MEETINGS}/{mid}/participants/{other['user_id']}", {}),
        ("DELETE", f"{MEETINGS}/{mid}/participants/{host['user_id']}", {}),
        (
            "PUT",
            f"{MEETINGS}/{mid}/participants/{other['user_id']}/role",
            {"json": {"role": "host"}},
        ),
        (
            "PUT",
            f"{MEETINGS}/{mid}/participants/{member['user_id']}/role",
            {"json": {"role": "host"}},
        ),
    ]
    for method, path, kw in attempts:
        r = await client.request(method, path, headers=member["headers"], **kw)
        assert_error(r, 403, "INSUFFICIENT_PERMISSIONS")
    assert await snapshot(client, mid) == before
    # but they can see it
    assert (await client.get(f"{MEETINGS}/{mid}", headers=member["headers"])).status_code == 200
    r = await client.get(f"{MEETINGS}/{mid}/participants", headers=member["headers"])
    assert r.status_code == 200


async def test_co_host_runs_the_meeting_but_cannot_touch_hosts_or_delete(
    client: ApiClient,
) -> None:
    host, co, member = await client.signup(), await client.signup(), await client.signup()
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    await invite(client, host, mid, co, "co-host")
    await invite(client, host, mid, member)

    r = await client.put(f"{MEETINGS}/{mid}", json={"title": "By co-host"}, headers=co["headers"])
    assert r.status_code == 200, r.text
    r = await client.put(
        f"{MEETINGS}/{mid}/participants/{member['user_id']}/role",
        json={"role": "co-host"},
        headers=co["headers"],
    )
    assert r.status_code == 200
    assert r.json()["role"] == "co-host"
    before = await snapshot(client, mid)
    refused: list[tuple[str, str, dict[str, Any]]] = [
        ("PUT", f"participants/{member['user_id']}/role", {"json": {"role": "host"}}),
        ("PUT", f"participants/{co['user_id']}/role", {"json": {"role": "host"}}),
        ("PUT", f"participants/{host['user_id']}/role", {"json": {"role": "participant"}}),
        ("DELETE", f"participants/{host['user_id']}", {}),
        (
            "POST",
            "participants",
            {"json": {"user_id": (await client.signup())["user_id"], "role": "host"}},
        ),
        ("DELETE", "", {}),
    ]
    for method, tail, kw in refused:
        path = f"{MEETINGS}/{mid}" + (f"/{tail}" if tail else "")
        r = await client.request(method, path, headers=co["headers"], **kw)
        assert_error(r, 403, "INSUFFICIENT_PERMISSIONS")
    assert await snapshot(client, mid) == before

    r = await client.post(f"{MEETINGS}/{mid}/start", headers=co["headers"])
    assert r.status_code == 200
    r = await client.post(f"{MEETINGS}/{mid}/end", headers=co["headers"])
    assert r.status_code == 200


async def test_the_last_host_cannot_be_demoted_or_removed_until_there_is_another(
    client: ApiClient,
) -> None:
    host, other = await client.signup(), await client.signup()
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    await invite(client, host, mid, other)
    before = await snapshot(client, mid)
    r = await client.put(
        f"{MEETINGS}/{mid}/participants/{host['user_id']}/role",
        json={"role": "co-host"},
        headers=host["headers"],
    )
    assert_error(r, 409, "RESOURCE_CONFLICT")
    r = await client.delete(
        f"{MEETINGS}/{mid}/participants/{host['user_id']}", headers=host["headers"]
    )
    assert_error(r, 409, "RESOURCE_CONFLICT")
    assert await snapshot(client, mid) == before

    r = await client.put(
        f"{MEETINGS}/{mid}/participants/{other['user_id']}/role",
        json={"role": "host"},
        headers=host["headers"],
    )
    assert r.status_code == 200
    r = await client.put(
        f"{MEETINGS}/{mid}/participants/{host['user_id']}/role",
        json={"role": "participant"},
        headers=host["headers"],
    )
    assert r.status_code == 200, r.text
    roles = {u: p["role"] for u, p in (await participant_rows(client, mid)).items()}
    assert roles == {host["user_id"]: "participant", other["user_id"]: "host"}
    # the creator handed the meeting over: they can no longer run it
    r = await client.post(f"{MEETINGS}/{mid}/start", headers=host["headers"])
    assert_error(r, 403, "INSUFFICIENT_PERMISSIONS")


async def test_admin_sees_and_deletes_any_meeting_but_does_not_run_it(client: ApiClient) -> None:
    host, admin = await client.signup(), await client.make_admin()
    tag = uuid.uuid4().hex[:8]
    meeting = await create(client, host, title=f"Secret {tag}")
    mid = meeting["meeting_id"]
    r = await client.get(f"{MEETINGS}/{mid}", headers=admin["headers"])
    assert r.status_code == 200
    listing = (await client.get(MEETINGS, params={"search": tag}, headers=admin["headers"])).json()
    assert [m["meeting_id"] for m in listing["meetings"]] == [mid]
    r = await client.get(f"{MEETINGS}/{mid}/participants", headers=admin["headers"])
    assert r.status_code == 200
    r = await client.put(f"{MEETINGS}/{mid}", json={"title": "admin"}, headers=admin["headers"])
    assert_error(r, 403, "INSUFFICIENT_PERMISSIONS")
    r = await client.delete(f"{MEETINGS}/{mid}", headers=admin["headers"])
    assert r.status_code == 204
    assert await meeting_row(client, mid) is None


async def test_host_delete_removes_meeting_participants_and_chat(client: ApiClient) -> None:
    host, guest = await client.signup(), await client.signup()
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    await joined(client, guest, mid)
    r = await client.post(
        f"{MEETINGS}/{mid}/messages", json={"message": "bye"}, headers=guest["headers"]
    )
    assert r.status_code == 201
    r = await client.delete(f"{MEETINGS}/{mid}", headers=host["headers"])
    assert r.status_code == 204
    assert r.content == b""
    assert await snapshot(client, mid) == (None, {}, 0)
    for who in (host, guest):
        r = await client.get(f"{MEETINGS}/{mid}", headers=who["headers"])
        assert_error(r, 404, "RESOURCE_NOT_FOUND")
    r = await client.delete(f"{MEETINGS}/{mid}", headers=host["headers"])
    assert_error(r, 404, "RESOURCE_NOT_FOUND")


@pytest.mark.parametrize(
    "path",
    ["not-a-uuid", "12345", "00000000-0000-0000-0000-00000000000g"],
)
async def test_malformed_meeting_ids_are_validation_errors(client: ApiClient, path: str) -> None:
    user = await client.signup()
    r = await client.get(f"{MEETINGS}/{path}", headers=user["headers"])
    err = assert_error(r, 400, "VALIDATION_ERROR")
    assert "meeting_id" in err["details"]


# --- update ----------------------------------------------------------------------------


async def test_update_changes_only_the_fields_given(client: ApiClient) -> None:
    host = await client.signup()
    start = utcnow().replace(microsecond=0) + timedelta(days=2)
    meeting = await create(
        client, host, start_time=isoformat(start), duration=30, description="keep me"
    )
    mid = meeting["meeting_id"]

    r = await client.put(
        f"{MEETINGS}/{mid}",
        json={"title": "Updated Team Standup", "duration": 45},
        headers=host["headers"],
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == USER_PUBLIC_FIELDS
    assert body["title"] == "Updated Team Standup"
    assert body["duration"] == 45
    assert body["description"] == "keep me"
    assert body["start_time"] == isoformat(start)
    assert parse(body["end_time"]) == start + timedelta(minutes=45)
    assert parse(body["updated_at"]) >= parse(meeting["updated_at"])

    later = start + timedelta(hours=3)
    body = (
        await client.put(
            f"{MEETINGS}/{mid}", json={"start_time": isoformat(later)}, headers=host["headers"]
        )
    ).json()
    assert body["start_time"] == isoformat(later)
    assert body["duration"] == 45  # moving the start keeps the length

    body = (
        await client.put(
            f"{MEETINGS}/{mid}",
            json={"end_time": isoformat(later + timedelta(minutes=20))},
            headers=host["headers"],
        )
    ).json()
    assert body["duration"] == 20

    body = (
        await client.put(
            f"{MEETINGS}/{mid}",
            json={
                "password": "open sesame",
                "description": None,
                "settings": {"enable_chat": False},
                "max_participants": 3,
                "meeting_type": "audio",
            },
            headers=host["headers"],
        )
    ).json()
    assert body["has_password"] is True
    assert body["description"] is None
    assert body["settings"] == {
        "enable_recording": True,
        "enable_chat": False,
        "enable_screen_share": True,
        "enable_transcription": False,
    }
    assert body["max_participants"] == 3
    assert body["meeting_type"] == "audio"

    body = (
        await client.put(f"{MEETINGS}/{mid}", json={"password": None}, headers=host["headers"])
    ).json()
    assert body["has_password"] is False
    body = (await client.put(f"{MEETINGS}/{mid}", json={}, headers=host["headers"])).json()
    assert body["title"] == "Updated Team Standup"
    got = (await client.get(f"{MEETINGS}/{mid}", headers=host["headers"])).json()
    assert got == body


BAD_UPDATE: list[tuple[str, dict[str, Any], str]] = [
    ("null-title", {"title": None}, "title"),
    ("empty-title", {"title": ""}, "title"),
    ("long-title", {"title": "t" * 201}, "title"),
    ("null-start", {"start_time": None}, "start_time"),
    ("naive-start", {"start_time": "2031-10-05T14:00:00"}, "start_time"),
    ("end-before-start", {"end_time": "2000-01-01T00:00:00Z"}, "end_time"),
    ("null-duration", {"duration": None}, "duration"),
    ("zero-duration", {"duration": 0}, "duration"),
    ("cap-101", {"max_participants": 101}, "max_participants"),
    ("cap-1", {"max_participants": 1}, "max_participants"),
    ("null-type", {"meeting_type": None}, "meeting_type"),
    ("bad-type", {"meeting_type": "hologram"}, "meeting_type"),
    ("short-password", {"password": "123"}, "password"),
    ("null-switch", {"settings": {"enable_chat": None}}, "settings.enable_chat"),
    ("string-switch", {"settings": {"enable_chat": "false"}}, "settings.enable_chat"),
    ("null-settings", {"settings": None}, "settings"),
    ("status", {"status": "ended"}, "status"),
    ("creator", {"creator_id": str(uuid.uuid4())}, "creator_id"),
]


@pytest.mark.parametrize(
    ("changes", "field"),
    [(c, f) for _, c, f in BAD_UPDATE],
    ids=[name for name, _, _ in BAD_UPDATE],
)
async def test_update_rejects_bad_input_and_changes_nothing(
    client: ApiClient, changes: dict[str, Any], field: str
) -> None:
    host = await client.signup()
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    before = await snapshot(client, mid)
    r = await client.put(f"{MEETINGS}/{mid}", json=changes, headers=host["headers"])
    err = assert_error(r, 400, "VALIDATION_ERROR")
    assert field in err["details"], err
    assert await snapshot(client, mid) == before


async def test_an_ended_meeting_cannot_be_updated(client: ApiClient) -> None:
    host = await client.signup()
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    assert (await client.post(f"{MEETINGS}/{mid}/end", headers=host["headers"])).status_code == 200
    before = await snapshot(client, mid)
    r = await client.put(f"{MEETINGS}/{mid}", json={"title": "again"}, headers=host["headers"])
    err = assert_error(r, 409, "MEETING_ENDED")
    assert "ended" in err["message"]
    assert await snapshot(client, mid) == before


# --- start and end ---------------------------------------------------------------------


async def test_start_and_end_move_status_forward_only(client: ApiClient) -> None:
    host = await client.signup()
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    started = (await client.post(f"{MEETINGS}/{mid}/start", headers=host["headers"])).json()
    assert started["status"] == "in_progress"
    assert started["ended_at"] is None
    r = await client.post(f"{MEETINGS}/{mid}/start", headers=host["headers"])
    assert_error(r, 409, "RESOURCE_CONFLICT")
    row = await meeting_row(client, mid)
    assert row is not None
    assert isoformat(row["started_at"]) == started["started_at"]

    ended = (await client.post(f"{MEETINGS}/{mid}/end", headers=host["headers"])).json()
    assert ended["status"] == "ended"
    assert ended["started_at"] == started["started_at"]
    before = await snapshot(client, mid)
    assert_error(
        await client.post(f"{MEETINGS}/{mid}/end", headers=host["headers"]), 409, "MEETING_ENDED"
    )
    assert_error(
        await client.post(f"{MEETINGS}/{mid}/start", headers=host["headers"]), 409, "MEETING_ENDED"
    )
    assert await snapshot(client, mid) == before


async def test_ending_a_scheduled_meeting_cancels_it(client: ApiClient) -> None:
    host = await client.signup()
    meeting = await create(client, host)
    ended = (
        await client.post(f"{MEETINGS}/{meeting['meeting_id']}/end", headers=host["headers"])
    ).json()
    assert ended["status"] == "ended"
    assert ended["started_at"] is None
    assert ended["ended_at"].endswith("Z")


async def test_end_marks_everyone_in_the_meeting_left(client: ApiClient) -> None:
    host, a, b, invited = [await client.signup() for _ in range(4)]
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    await invite(client, host, mid, invited)
    for who in (host, a, b):
        await joined(client, who, mid)
    await client.post(f"{MEETINGS}/{mid}/leave", headers=b["headers"])
    b_left = (await participant_rows(client, mid))[b["user_id"]]["left_at"]
    ended = (await client.post(f"{MEETINGS}/{mid}/end", headers=host["headers"])).json()
    rows = await participant_rows(client, mid)
    for who in (host, a):
        assert isoformat(rows[who["user_id"]]["left_at"]) == ended["ended_at"]
    assert rows[b["user_id"]]["left_at"] == b_left
    assert rows[invited["user_id"]]["joined_at"] is None
    assert rows[invited["user_id"]]["left_at"] is None
    listing = (await client.get(f"{MEETINGS}/{mid}/participants", headers=host["headers"])).json()
    states = {p["user_id"]: p["status"] for p in listing["participants"]}
    assert states == {
        host["user_id"]: "left",
        a["user_id"]: "left",
        b["user_id"]: "left",
        invited["user_id"]: "invited",
    }


# --- join ------------------------------------------------------------------------------


async def test_join_answers_everything_needed_to_connect(client: ApiClient) -> None:
    host, guest = await client.signup(), await client.signup()
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    body = await joined(client, guest, mid)
    assert set(body) == JOIN_FIELDS
    assert body["meeting_id"] == mid
    assert body["role"] == "participant"
    assert body["signaling_url"] == "ws://testserver/ws/signaling"
    assert body["room_url"] == f"ws://testserver/ws/signaling?meeting_id={mid}"
    assert body["ice_servers"] == []
    ttl = client.app.state.konfer.settings.media_token_ttl_seconds
    assert body["media_token_expires_in"] == ttl
    assert body["joined_at"].endswith("Z")
    rows = await participant_rows(client, mid)
    assert str(rows[guest["user_id"]]["id"]) == body["participant_id"]
    assert rows[guest["user_id"]]["left_at"] is None

    subject, grants = client.app.state.konfer.tokens.verify_media(body["media_token"])
    assert subject == guest["user_id"]
    assert grants.room == mid
    assert grants.can_publish is True
    assert grants.can_subscribe is True
    assert grants.can_publish_sources == ["camera", "microphone", "screen_share"]
    assert grants.room_admin is False
    assert grants.hidden is False
    assert grants.recorder is False
    # scoped to media: it is no access token
    r = await client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {body['media_token']}"}
    )
    assert_error(r, 401, "INVALID_TOKEN")
    # joining does not start the meeting
    got = (await client.get(f"{MEETINGS}/{mid}", headers=guest["headers"])).json()
    assert got["status"] == "scheduled"


async def test_media_grants_follow_role_type_and_settings(client: ApiClient) -> None:
    tokens = client.app.state.konfer.tokens
    host, co, viewer = await client.signup(), await client.signup(), await client.signup()
    meeting = await create(client, host, settings={"enable_screen_share": False})
    mid = meeting["meeting_id"]
    await invite(client, host, mid, co, "co-host")
    await invite(client, host, mid, viewer, "viewer")

    body = await joined(client, host, mid)
    assert body["role"] == "host"
    _, g = tokens.verify_media(body["media_token"])
    assert (g.can_publish, g.room_admin, g.can_publish_sources) == (
        True,
        True,
        ["camera", "microphone"],
    )
    _, g = tokens.verify_media((await joined(client, co, mid))["media_token"])
    assert (g.can_publish, g.room_admin) == (True, True)
    body = await joined(client, viewer, mid)
    assert body["role"] == "viewer"
    _, g = tokens.verify_media(body["media_token"])
    assert g.can_publish is False
    assert g.can_publish_sources == []
    assert g.can_subscribe is True
    assert g.room_admin is False

    audio = await create(client, host, meeting_type="audio")
    _, g = tokens.verify_media((await joined(client, co, audio["meeting_id"]))["media_token"])
    assert g.can_publish_sources == ["microphone"]

    webinar = await create(client, host, meeting_type="webinar")
    body = await joined(client, co, webinar["meeting_id"])
    assert body["role"] == "viewer"  # walked in through the link: audience
    _, g = tokens.verify_media(body["media_token"])
    assert g.can_publish is False
    _, g = tokens.verify_media((await joined(client, host, webinar["meeting_id"]))["media_token"])
    assert g.can_publish is True


async def test_a_role_change_applies_to_the_next_join(client: ApiClient) -> None:
    host, guest = await client.signup(), await client.signup()
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    await joined(client, guest, mid)
    r = await client.put(
        f"{MEETINGS}/{mid}/participants/{guest['user_id']}/role",
        json={"role": "viewer"},
        headers=host["headers"],
    )
    assert r.status_code == 200
    body = await joined(client, guest, mid)
    assert body["role"] == "viewer"
    _, g = client.app.state.konfer.tokens.verify_media(body["media_token"])
    assert g.can_publish is False


async def test_joining_twice_keeps_one_row_and_the_first_join_time(client: ApiClient) -> None:
    host, guest = await client.signup(), await client.signup()
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    first = await joined(client, guest, mid)
    second = await joined(client, guest, mid)
    assert second["participant_id"] == first["participant_id"]
    assert second["joined_at"] == first["joined_at"]
    assert len(await participant_rows(client, mid)) == 2
    await client.post(f"{MEETINGS}/{mid}/leave", headers=guest["headers"])
    third = await joined(client, guest, mid)
    assert third["participant_id"] == first["participant_id"]
    assert parse(third["joined_at"]) >= parse(first["joined_at"])
    row = (await participant_rows(client, mid))[guest["user_id"]]
    assert row["left_at"] is None


async def test_join_with_a_password(client: ApiClient) -> None:
    host, guest, invited = await client.signup(), await client.signup(), await client.signup()
    meeting = await create(client, host, password="correct horse")
    mid = meeting["meeting_id"]
    await invite(client, host, mid, invited)
    before = await snapshot(client, mid)
    for body in ({}, {"password": None}, {"password": ""}, {"password": "wrong horse"}):
        r = await join(client, guest, mid, **body)
        err = assert_error(r, 403, "INSUFFICIENT_PERMISSIONS")
        assert "password" in err["message"]
    assert await snapshot(client, mid) == before
    r = await join(client, guest, mid, password=123)
    assert_error(r, 400, "VALIDATION_ERROR")
    r = await join(client, guest, mid, password="correct horse", extra=1)
    assert_error(r, 400, "VALIDATION_ERROR")
    assert await snapshot(client, mid) == before

    assert (await join(client, guest, mid, password="correct horse")).status_code == 200
    # members need no password: the creator, invitees, and people who got in before
    assert (await join(client, host, mid)).status_code == 200
    assert (await join(client, invited, mid)).status_code == 200
    assert (await join(client, guest, mid)).status_code == 200


async def test_joining_an_ended_meeting_is_meeting_ended(client: ApiClient) -> None:
    host, guest = await client.signup(), await client.signup()
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    await client.post(f"{MEETINGS}/{mid}/end", headers=host["headers"])
    before = await snapshot(client, mid)
    for who in (guest, host):
        err = assert_error(await join(client, who, mid), 409, "MEETING_ENDED")
        assert "has ended" in err["message"]
    assert await snapshot(client, mid) == before


async def test_joining_a_missing_meeting_is_404(client: ApiClient) -> None:
    guest = await client.signup()
    assert_error(await join(client, guest, str(uuid.uuid4())), 404, "RESOURCE_NOT_FOUND")


async def test_a_full_room_refuses_newcomers_but_not_those_already_connected(
    client: ApiClient,
) -> None:
    host, a, b, late = [await client.signup() for _ in range(4)]
    meeting = await create(client, host, max_participants=2)
    mid = meeting["meeting_id"]
    await joined(client, a, mid)
    await joined(client, b, mid)
    async with connected(client, mid, [a["user_id"], b["user_id"], b["user_id"]]):
        got = (await client.get(f"{MEETINGS}/{mid}", headers=host["headers"])).json()
        assert got["current_participants"] == 2  # two tabs of b count once
        before = await snapshot(client, mid)
        for who in (late, host):
            err = assert_error(await join(client, who, mid), 409, "ROOM_FULL")
            assert "2" in err["message"]
        assert await snapshot(client, mid) == before
        assert (await join(client, a, mid)).status_code == 200  # reconnecting is fine
        async with connected(client, mid, [str(uuid.uuid4())], hidden=True):
            assert_error(await join(client, late, mid), 409, "ROOM_FULL")
    async with connected(client, mid, [a["user_id"]]):
        assert (await join(client, late, mid)).status_code == 200
    got = (await client.get(f"{MEETINGS}/{mid}", headers=host["headers"])).json()
    assert got["current_participants"] == 0


async def test_hidden_sessions_do_not_fill_the_room(client: ApiClient) -> None:
    host, guest = await client.signup(), await client.signup()
    meeting = await create(client, host, max_participants=2)
    mid = meeting["meeting_id"]
    recorders = [str(uuid.uuid4()), str(uuid.uuid4())]
    async with connected(client, mid, recorders, hidden=True):
        assert (await join(client, guest, mid)).status_code == 200
        got = (await client.get(f"{MEETINGS}/{mid}", headers=host["headers"])).json()
        assert got["current_participants"] == 0


async def test_turn_credentials_and_secure_urls(
    make_settings: SettingsFactory, open_client: Any
) -> None:
    settings = make_settings(
        "sqlite",
        turn_urls="turn:127.0.0.1:3478,turns:127.0.0.1:5349",
        turn_secret="s3cret",
        stun_urls="stun:127.0.0.1:3478",
        public_url="https://meet.example.com/",
    )
    async with open_client(settings) as c:
        host = await c.signup()
        meeting = await create(c, host)
        mid = meeting["meeting_id"]
        assert meeting["join_url"] == f"https://meet.example.com/meetings/{mid}/join"
        now = int(time.time())
        body = await joined(c, host, mid)
        assert body["signaling_url"] == "wss://meet.example.com/ws/signaling"
        assert body["room_url"] == f"wss://meet.example.com/ws/signaling?meeting_id={mid}"
        stun, turn = body["ice_servers"]
        assert stun == {"urls": ["stun:127.0.0.1:3478"]}
        assert set(turn) == {"urls", "username", "credential"}
        assert turn["urls"] == ["turn:127.0.0.1:3478", "turns:127.0.0.1:5349"]
        expiry, _, user_id = turn["username"].partition(":")
        assert user_id == host["user_id"]
        assert now + 3600 <= int(expiry) <= int(time.time()) + 3600
        digest = hmac.new(b"s3cret", turn["username"].encode(), hashlib.sha1).digest()
        assert turn["credential"] == base64.b64encode(digest).decode()
        assert "s3cret" not in str(body)


async def test_no_turn_entry_without_a_secret(
    make_settings: SettingsFactory, open_client: Any
) -> None:
    async with open_client(make_settings("sqlite", turn_urls="turn:127.0.0.1:3478")) as c:
        host = await c.signup()
        meeting = await create(c, host)
        assert (await joined(c, host, meeting["meeting_id"]))["ice_servers"] == []


# --- leave -----------------------------------------------------------------------------


async def test_leave_reports_the_stay_and_is_idempotent(client: ApiClient) -> None:
    host, guest, stranger = await client.signup(), await client.signup(), await client.signup()
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    entry = await joined(client, guest, mid)
    r = await client.post(f"{MEETINGS}/{mid}/leave", headers=guest["headers"])
    assert r.status_code == 200
    assert r.json() == {"message": "Left meeting successfully", "duration": r.json()["duration"]}
    row = (await participant_rows(client, mid))[guest["user_id"]]
    assert row["left_at"] is not None
    assert r.json()["duration"] == int((row["left_at"] - parse(entry["joined_at"])).total_seconds())
    again = await client.post(f"{MEETINGS}/{mid}/leave", headers=guest["headers"])
    assert again.status_code == 200
    assert again.json() == r.json()
    assert (await participant_rows(client, mid))[guest["user_id"]]["left_at"] == row["left_at"]

    never = await client.post(f"{MEETINGS}/{mid}/leave", headers=host["headers"])
    assert never.json()["duration"] == 0
    assert (await participant_rows(client, mid))[host["user_id"]]["left_at"] is None

    assert_error(
        await client.post(f"{MEETINGS}/{mid}/leave", headers=stranger["headers"]),
        404,
        "RESOURCE_NOT_FOUND",
    )


async def test_leave_after_the_meeting_ended_reports_the_stay(client: ApiClient) -> None:
    host, guest = await client.signup(), await client.signup()
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    await joined(client, guest, mid)
    await client.post(f"{MEETINGS}/{mid}/end", headers=host["headers"])
    r = await client.post(f"{MEETINGS}/{mid}/leave", headers=guest["headers"])
    assert r.status_code == 200
    assert r.json()["duration"] >= 0


# --- participants ----------------------------------------------------------------------


async def test_participants_list_add_and_remove(client: ApiClient) -> None:
    host = await client.signup(nickname="The Host")
    guest, invited = await client.signup(), await client.signup()
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    await joined(client, guest, mid)
    r = await client.post(
        f"{MEETINGS}/{mid}/participants",
        json={"user_id": invited["user_id"], "role": "co-host"},
        headers=host["headers"],
    )
    assert r.status_code == 201, r.text
    added = r.json()
    assert set(added) == PARTICIPANT_FIELDS
    assert added["role"] == "co-host"
    assert added["status"] == "invited"
    assert added["username"] == invited["username"]

    r = await client.get(f"{MEETINGS}/{mid}/participants", headers=guest["headers"])
    assert r.status_code == 200
    body = r.json()
    assert body["pagination"] == {"page": 1, "page_size": 100, "total": 3, "pages": 1}
    by_user = {p["user_id"]: p for p in body["participants"]}
    assert by_user[host["user_id"]]["role"] == "host"
    assert by_user[host["user_id"]]["nickname"] == "The Host"
    assert by_user[host["user_id"]]["status"] == "invited"
    assert by_user[guest["user_id"]]["status"] == "joined"
    assert by_user[guest["user_id"]]["joined_at"].endswith("Z")
    assert by_user[invited["user_id"]]["role"] == "co-host"
    for p in body["participants"]:
        assert set(p) == PARTICIPANT_FIELDS
        assert "email" not in p

    r = await client.get(
        f"{MEETINGS}/{mid}/participants",
        params={"page": 2, "page_size": 2},
        headers=host["headers"],
    )
    assert r.json()["pagination"] == {"page": 2, "page_size": 2, "total": 3, "pages": 2}
    assert len(r.json()["participants"]) == 1

    r = await client.delete(
        f"{MEETINGS}/{mid}/participants/{guest['user_id']}", headers=host["headers"]
    )
    assert r.status_code == 204
    assert guest["user_id"] not in await participant_rows(client, mid)
    # removed: the meeting is no longer theirs to see
    assert_error(
        await client.get(f"{MEETINGS}/{mid}", headers=guest["headers"]), 404, "RESOURCE_NOT_FOUND"
    )
    r = await client.delete(
        f"{MEETINGS}/{mid}/participants/{guest['user_id']}", headers=host["headers"]
    )
    assert_error(r, 404, "RESOURCE_NOT_FOUND")


async def test_add_participant_refuses_duplicates_unknown_users_and_bad_input(
    client: ApiClient,
) -> None:
    host, member = await client.signup(), await client.signup()
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    await invite(client, host, mid, member)
    before = await snapshot(client, mid)
    path = f"{MEETINGS}/{mid}/participants"
    r = await client.post(path, json={"user_id": member["user_id"]}, headers=host["headers"])
    assert_error(r, 409, "RESOURCE_CONFLICT")
    r = await client.post(path, json={"user_id": str(uuid.uuid4())}, headers=host["headers"])
    assert_error(r, 404, "RESOURCE_NOT_FOUND")
    for body, field in (
        ({}, "user_id"),
        ({"user_id": "nope"}, "user_id"),
        ({"user_id": 5}, "user_id"),
        ({"user_id": member["user_id"], "role": "owner"}, "role"),
        ({"user_id": member["user_id"], "role": None}, "role"),
        ({"user_id": member["user_id"], "admin": True}, "admin"),
    ):
        r = await client.post(path, json=body, headers=host["headers"])
        err = assert_error(r, 400, "VALIDATION_ERROR")
        assert field in err["details"], err
    assert await snapshot(client, mid) == before


async def test_deleted_users_cannot_be_added(client: ApiClient) -> None:
    host, gone = await client.signup(), await client.signup()
    r = await client.request(
        "DELETE",
        "/api/v1/users/account",
        json={"password": gone["password"]},
        headers=gone["headers"],
    )
    assert r.status_code == 204
    meeting = await create(client, host)
    r = await client.post(
        f"{MEETINGS}/{meeting['meeting_id']}/participants",
        json={"user_id": gone["user_id"]},
        headers=host["headers"],
    )
    assert_error(r, 404, "RESOURCE_NOT_FOUND")


async def test_role_update_validates_role_and_target(client: ApiClient) -> None:
    host, member = await client.signup(), await client.signup()
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    await invite(client, host, mid, member)
    before = await snapshot(client, mid)
    path = f"{MEETINGS}/{mid}/participants/{member['user_id']}/role"
    for body in ({}, {"role": "admin"}, {"role": "HOST"}, {"role": 1}, {"role": "viewer", "x": 1}):
        assert_error(
            await client.put(path, json=body, headers=host["headers"]), 400, "VALIDATION_ERROR"
        )
    r = await client.put(
        f"{MEETINGS}/{mid}/participants/{uuid.uuid4()}/role",
        json={"role": "viewer"},
        headers=host["headers"],
    )
    assert_error(r, 404, "RESOURCE_NOT_FOUND")
    r = await client.put(
        f"{MEETINGS}/{mid}/participants/not-a-uuid/role",
        json={"role": "viewer"},
        headers=host["headers"],
    )
    assert_error(r, 400, "VALIDATION_ERROR")
    assert await snapshot(client, mid) == before
    for role in ("viewer", "co-host", "host", "participant"):
        r = await client.put(path, json={"role": role}, headers=host["headers"])
        assert r.status_code == 200, r.text
        assert r.json()["role"] == role
        assert (await participant_rows(client, mid))[member["user_id"]]["role"] == role


async def test_membership_changes_are_refused_once_the_meeting_ended(client: ApiClient) -> None:
    host, member, other = await client.signup(), await client.signup(), await client.signup()
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    await invite(client, host, mid, member)
    await client.post(f"{MEETINGS}/{mid}/end", headers=host["headers"])
    before = await snapshot(client, mid)
    for method, path, kw in (
        ("POST", f"{MEETINGS}/{mid}/participants", {"json": {"user_id": other["user_id"]}}),
        ("DELETE", f"{MEETINGS}/{mid}/participants/{member['user_id']}", {}),
        (
            "PUT",
            f"{MEETINGS}/{mid}/participants/{member['user_id']}/role",
            {"json": {"role": "viewer"}},
        ),
    ):
        r = await client.request(method, path, headers=host["headers"], **kw)
        assert_error(r, 409, "MEETING_ENDED")
    assert await snapshot(client, mid) == before


# --- chat ------------------------------------------------------------------------------


async def test_chat_is_for_people_in_the_meeting(client: ApiClient) -> None:
    host, guest, invited, stranger = (
        await client.signup(nickname="Guesty"),
        await client.signup(nickname="Guesty"),
        await client.signup(),
        await client.signup(),
    )
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    await invite(client, host, mid, invited)
    await joined(client, guest, mid)
    path = f"{MEETINGS}/{mid}/messages"

    r = await client.post(path, json={"message": "  hello there  "}, headers=guest["headers"])
    assert r.status_code == 201, r.text
    msg = r.json()
    assert set(msg) == MESSAGE_FIELDS
    assert msg["message"] == "hello there"
    assert msg["user_id"] == guest["user_id"]
    assert msg["username"] == guest["username"]
    assert msg["meeting_id"] == mid
    assert msg["created_at"].endswith("Z")

    before = await snapshot(client, mid)
    for who in (host, invited):  # members who have not joined
        err = assert_error(
            await client.post(path, json={"message": "hi"}, headers=who["headers"]),
            403,
            "INSUFFICIENT_PERMISSIONS",
        )
        assert "Join" in err["message"]
    assert_error(
        await client.post(path, json={"message": "hi"}, headers=stranger["headers"]),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert_error(await client.get(path, headers=stranger["headers"]), 404, "RESOURCE_NOT_FOUND")
    await client.post(f"{MEETINGS}/{mid}/leave", headers=guest["headers"])
    before = (before[0], await participant_rows(client, mid), before[2])
    assert_error(
        await client.post(path, json={"message": "still here?"}, headers=guest["headers"]),
        403,
        "INSUFFICIENT_PERMISSIONS",
    )
    assert await snapshot(client, mid) == before
    # everyone who may see the meeting may read it
    for who in (host, invited, guest):
        r = await client.get(path, headers=who["headers"])
        assert [m["message"] for m in r.json()["messages"]] == ["hello there"]


async def test_a_message_posted_over_rest_reaches_sockets_in_the_room(client: ApiClient) -> None:
    host, guest = await client.signup(), await client.signup(nickname="Guesty")
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    await joined(client, guest, mid)
    hub = client.app.state.konfer.hub
    stamp = isoformat(utcnow())
    listener = Connection(
        websocket=cast(WebSocket, None),
        session_id=uuid.uuid4().hex,
        user_id=host["user_id"],
        username=host["username"],
        avatar_url=None,
    )
    info = SessionInfo(
        session_id=listener.session_id,
        user_id=host["user_id"],
        username=host["username"],
        meeting_id=mid,
        replica_id="test",
        connected_at=stamp,
        last_activity=stamp,
    )
    await hub.enter(listener, info)
    try:
        r = await client.post(
            f"{MEETINGS}/{mid}/messages", json={"message": "over rest"}, headers=guest["headers"]
        )
        assert r.status_code == 201
        while True:
            event = json.loads(cast(str, await asyncio.wait_for(listener.queue.get(), 5)))
            if event["type"] == "chat":
                break
        assert event == {
            "type": "chat",
            "room_id": mid,
            "user_id": guest["user_id"],
            "username": "Guesty",
            "message_id": r.json()["message_id"],
            "message": "over rest",
            "timestamp": r.json()["created_at"],
        }
    finally:
        await hub.exit(listener)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "message"),
        ({"message": ""}, "message"),
        ({"message": "   \n "}, "message"),
        ({"message": "x" * 4001}, "message"),
        ({"message": 42}, "message"),
        ({"message": None}, "message"),
        ({"message": "a\x00b"}, "message"),
        ({"message": "hi", "user_id": str(uuid.uuid4())}, "user_id"),
    ],
    ids=["missing", "empty", "blank", "too-long", "number", "null", "nul-char", "extra-field"],
)
async def test_post_message_rejects_bad_input(
    client: ApiClient, body: dict[str, Any], field: str
) -> None:
    host = await client.signup()
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    await joined(client, host, mid)
    r = await client.post(f"{MEETINGS}/{mid}/messages", json=body, headers=host["headers"])
    err = assert_error(r, 400, "VALIDATION_ERROR")
    assert field in err["details"]
    assert await message_count(client, mid) == 0


async def test_a_message_of_4000_characters_is_accepted(client: ApiClient) -> None:
    host = await client.signup()
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    await joined(client, host, mid)
    text = "é" * 4000
    r = await client.post(
        f"{MEETINGS}/{mid}/messages", json={"message": text}, headers=host["headers"]
    )
    assert r.status_code == 201
    assert r.json()["message"] == text


async def test_chat_disabled_or_meeting_ended_refuses_messages(client: ApiClient) -> None:
    host = await client.signup()
    quiet = await create(client, host, settings={"enable_chat": False})
    await joined(client, host, quiet["meeting_id"])
    r = await client.post(
        f"{MEETINGS}/{quiet['meeting_id']}/messages",
        json={"message": "hi"},
        headers=host["headers"],
    )
    err = assert_error(r, 403, "INSUFFICIENT_PERMISSIONS")
    assert "disabled" in err["message"]
    assert await message_count(client, quiet["meeting_id"]) == 0

    over = await create(client, host)
    await joined(client, host, over["meeting_id"])
    await client.post(f"{MEETINGS}/{over['meeting_id']}/end", headers=host["headers"])
    r = await client.post(
        f"{MEETINGS}/{over['meeting_id']}/messages",
        json={"message": "hi"},
        headers=host["headers"],
    )
    assert_error(r, 409, "MEETING_ENDED")
    assert await message_count(client, over["meeting_id"]) == 0


async def test_message_history_pages_from_the_newest_and_reads_oldest_first(
    client: ApiClient,
) -> None:
    host = await client.signup()
    meeting = await create(client, host)
    mid = meeting["meeting_id"]
    await joined(client, host, mid)
    path = f"{MEETINGS}/{mid}/messages"
    ids = []
    for n in range(1, 8):
        r = await client.post(path, json={"message": f"m{n}"}, headers=host["headers"])
        ids.append(r.json()["message_id"])

    def texts(r: httpx.Response) -> list[str]:
        return [m["message"] for m in r.json()["messages"]]

    r = await client.get(path, headers=host["headers"])
    assert texts(r) == [f"m{n}" for n in range(1, 8)]
    assert r.json()["pagination"] == {"page": 1, "page_size": 50, "total": 7, "pages": 1}
    assert r.json()["has_more"] is False

    pages = [
        await client.get(path, params={"page": p, "page_size": 3}, headers=host["headers"])
        for p in (1, 2, 3, 4)
    ]
    assert [texts(p) for p in pages] == [["m5", "m6", "m7"], ["m2", "m3", "m4"], ["m1"], []]
    assert pages[0].json()["pagination"] == {"page": 1, "page_size": 3, "total": 7, "pages": 3}
    assert [p.json()["has_more"] for p in pages] == [True, True, False, False]

    r = await client.get(path, params={"limit": 2}, headers=host["headers"])
    assert texts(r) == ["m6", "m7"]
    r = await client.get(path, params={"limit": 2, "before": ids[5]}, headers=host["headers"])
    assert texts(r) == ["m4", "m5"]
    assert r.json()["pagination"]["total"] == 5
    assert r.json()["has_more"] is True
    r = await client.get(path, params={"limit": 5, "before": ids[1]}, headers=host["headers"])
    assert texts(r) == ["m1"]
    assert r.json()["has_more"] is False

    other = await create(client, host)
    for params, field in (
        ({"before": str(uuid.uuid4())}, "before"),
        ({"before": "nope"}, "before"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"page_size": 101}, "page_size"),
        ({"page": 0}, "page"),
        ({"page": "x"}, "page"),
    ):
        r = await client.get(path, params=params, headers=host["headers"])
        err = assert_error(r, 400, "VALIDATION_ERROR")
        assert field in err["details"], (params, err)
    # a cursor from another meeting is not a cursor here
    r = await client.get(
        f"{MEETINGS}/{other['meeting_id']}/messages",
        params={"before": ids[0]},
        headers=host["headers"],
    )
    assert_error(r, 400, "VALIDATION_ERROR")


# --- listing ---------------------------------------------------------------------------


async def test_list_shows_only_meetings_the_caller_belongs_to(client: ApiClient) -> None:
    alice, bob, carol = await client.signup(), await client.signup(), await client.signup()
    own = await create(client, alice, start_time=at(hours=5))
    invited = await create(client, bob, start_time=at(hours=4))
    await invite(client, bob, invited["meeting_id"], alice)
    visited = await create(client, carol, start_time=at(hours=3))
    await joined(client, alice, visited["meeting_id"])
    await create(client, carol)  # not hers
    body = (await client.get(MEETINGS, headers=alice["headers"])).json()
    assert [m["meeting_id"] for m in body["meetings"]] == [
        own["meeting_id"],
        invited["meeting_id"],
        visited["meeting_id"],
    ]
    assert body["pagination"] == {"page": 1, "page_size": 20, "total": 3, "pages": 1}
    for m in body["meetings"]:
        assert set(m) == USER_PUBLIC_FIELDS


async def test_list_filters_by_status_time_search_and_creator(client: ApiClient) -> None:
    alice, bob = await client.signup(), await client.signup()
    base = utcnow().replace(microsecond=0) + timedelta(days=10)
    a1 = await create(client, alice, title="Design 100% review", start_time=isoformat(base))
    a2 = await create(
        client, alice, title="design_sync", start_time=isoformat(base + timedelta(days=1))
    )
    a3 = await create(client, alice, title="Retro", start_time=isoformat(base + timedelta(days=2)))
    b1 = await create(
        client, bob, title="Designers", start_time=isoformat(base + timedelta(days=3))
    )
    await invite(client, bob, b1["meeting_id"], alice)
    await client.post(f"{MEETINGS}/{a3['meeting_id']}/start", headers=alice["headers"])

    async def ids(**params: Any) -> list[str]:
        r = await client.get(MEETINGS, params=params, headers=alice["headers"])
        assert r.status_code == 200, r.text
        return [m["meeting_id"] for m in r.json()["meetings"]]

    assert await ids(status="in_progress") == [a3["meeting_id"]]
    assert await ids(status="scheduled") == [b1["meeting_id"], a2["meeting_id"], a1["meeting_id"]]
    assert await ids(status="ended") == []
    assert await ids(search="DESIGN") == [b1["meeting_id"], a2["meeting_id"], a1["meeting_id"]]
    assert await ids(search="100%") == [a1["meeting_id"]]
    assert await ids(search="n_s") == [a2["meeting_id"]]
    assert await ids(search="%") == [a1["meeting_id"]]
    assert await ids(creator_id=bob["user_id"]) == [b1["meeting_id"]]
    window = {
        "from": isoformat(base + timedelta(days=1)),
        "to": isoformat(base + timedelta(days=2)),
    }
    assert await ids(**window) == [a3["meeting_id"], a2["meeting_id"]]
    assert await ids(**{"from": isoformat(base + timedelta(days=3))}) == [b1["meeting_id"]]
    assert await ids(to=isoformat(base)) == [a1["meeting_id"]]
    assert await ids(search="design", to=isoformat(base + timedelta(days=1))) == [
        a2["meeting_id"],
        a1["meeting_id"],
    ]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "live"}, "status"),
        ({"from": "2031-01-01T00:00:00"}, "from"),
        ({"to": "yesterday"}, "to"),
        ({"from": "2031-02-01T00:00:00Z", "to": "2031-01-01T00:00:00Z"}, "to"),
        ({"creator_id": "me"}, "creator_id"),
        ({"search": "s" * 201}, "search"),
        ({"search": "a\x00"}, "search"),
        ({"from": "0001-01-01T00:00:00+01:00"}, "from"),
        ({"page": 0}, "page"),
        ({"page": "two"}, "page"),
        ({"page_size": 0}, "page_size"),
        ({"page_size": 101}, "page_size"),
    ],
    ids=[
        "status",
        "naive-from",
        "garbage-to",
        "to-before-from",
        "creator",
        "long-search",
        "nul-search",
        "from-overflow",
        "page-0",
        "page-text",
        "size-0",
        "size-101",
    ],
)
async def test_list_rejects_bad_query_parameters(
    client: ApiClient, params: dict[str, Any], field: str
) -> None:
    user = await client.signup()
    r = await client.get(MEETINGS, params=params, headers=user["headers"])
    err = assert_error(r, 400, "VALIDATION_ERROR")
    assert field in err["details"], err


async def test_list_pagination_math(client: ApiClient) -> None:
    user = await client.signup()
    base = utcnow().replace(microsecond=0) + timedelta(days=30)
    made = [
        (await create(client, user, start_time=isoformat(base + timedelta(hours=n))))["meeting_id"]
        for n in range(5)
    ]
    newest_first = list(reversed(made))
    seen: list[str] = []
    for page in (1, 2, 3):
        r = await client.get(
            MEETINGS, params={"page": page, "page_size": 2}, headers=user["headers"]
        )
        body = r.json()
        assert body["pagination"] == {"page": page, "page_size": 2, "total": 5, "pages": 3}
        seen += [m["meeting_id"] for m in body["meetings"]]
    assert seen == newest_first
    r = await client.get(MEETINGS, params={"page": 4, "page_size": 2}, headers=user["headers"])
    assert r.json()["meetings"] == []
    assert r.json()["pagination"]["total"] == 5
    r = await client.get(MEETINGS, params={"page_size": 100}, headers=user["headers"])
    assert r.json()["pagination"] == {"page": 1, "page_size": 100, "total": 5, "pages": 1}
    empty = await client.signup()
    r = await client.get(MEETINGS, headers=empty["headers"])
    assert r.json() == {
        "meetings": [],
        "pagination": {"page": 1, "page_size": 20, "total": 0, "pages": 0},
    }


async def test_list_reports_live_participant_counts(client: ApiClient) -> None:
    user = await client.signup()
    meeting = await create(client, user)
    mid = meeting["meeting_id"]
    async with connected(client, mid, [str(uuid.uuid4()) for _ in range(3)]):
        body = (await client.get(MEETINGS, headers=user["headers"])).json()
        assert body["meetings"][0]["current_participants"] == 3
        mine = (await client.get(MY, headers=user["headers"])).json()
        assert mine["meetings"][0]["current_participants"] == 3


# --- my meetings -----------------------------------------------------------------------


async def test_my_meetings_upcoming_and_history(client: ApiClient) -> None:
    me, other = await client.signup(), await client.signup()
    soon = await create(client, me, start_time=at(hours=1))
    later = await create(client, other, start_time=at(days=2))
    await invite(client, other, later["meeting_id"], me)
    soonest = await create(client, me, start_time=at(minutes=30))
    missed = await create(client, me, start_time=at(days=-2), duration=60)
    running = await create(client, me, start_time=at(minutes=-10))
    await client.post(f"{MEETINGS}/{running['meeting_id']}/start", headers=me["headers"])
    done = await create(client, me, start_time=at(days=-1))
    await client.post(f"{MEETINGS}/{done['meeting_id']}/start", headers=me["headers"])
    await client.post(f"{MEETINGS}/{done['meeting_id']}/end", headers=me["headers"])
    cancelled = await create(client, me, start_time=at(days=3))
    await client.post(f"{MEETINGS}/{cancelled['meeting_id']}/end", headers=me["headers"])
    visited = await create(client, other, start_time=at(days=-3))
    await joined(client, me, visited["meeting_id"])
    await client.post(f"{MEETINGS}/{visited['meeting_id']}/end", headers=other["headers"])
    await create(client, other, start_time=at(hours=2))  # not mine

    async def ids(path: str, **params: Any) -> list[str]:
        r = await client.get(path, params=params, headers=me["headers"])
        assert r.status_code == 200, r.text
        return [m["meeting_id"] for m in r.json()["meetings"]]

    def mids(*ms: dict[str, Any]) -> list[str]:
        return [m["meeting_id"] for m in ms]

    assert await ids(f"{MY}/upcoming") == mids(soonest, soon, later)
    assert await ids(f"{MY}/history") == mids(cancelled, done, missed, visited)
    assert await ids(MY) == mids(cancelled, later, soon, soonest, running, done, missed, visited)
    assert await ids(MY, status="in_progress") == mids(running)
    assert await ids(MY, status="ended") == mids(cancelled, done, visited)
    r = await client.get(
        f"{MY}/upcoming", params={"page": 2, "page_size": 2}, headers=me["headers"]
    )
    assert r.json()["pagination"] == {"page": 2, "page_size": 2, "total": 3, "pages": 2}
    assert [m["meeting_id"] for m in r.json()["meetings"]] == mids(later)
    for path in (MY, f"{MY}/upcoming", f"{MY}/history"):
        r = await client.get(path, params={"page_size": 101}, headers=me["headers"])
        assert_error(r, 400, "VALIDATION_ERROR")
    assert_error(
        await client.get(MY, params={"status": "over"}, headers=me["headers"]),
        400,
        "VALIDATION_ERROR",
    )
    # somebody else's lists are theirs alone
    r = await client.get(f"{MY}/history", headers=other["headers"])
    assert [m["meeting_id"] for m in r.json()["meetings"]] == mids(visited)


async def test_openapi_documents_the_meeting_routes(client: ApiClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path, methods in {
        "/api/v1/meetings": {"get", "post"},
        "/api/v1/meetings/{meeting_id}": {"get", "put", "delete"},
        "/api/v1/meetings/{meeting_id}/join": {"post"},
        "/api/v1/meetings/{meeting_id}/participants/{user_id}/role": {"put"},
        "/api/v1/my/meetings/history": {"get"},
    }.items():
        assert methods <= set(paths[path]), path
    join_op = paths["/api/v1/meetings/{meeting_id}/join"]["post"]
    assert {"200", "400", "401", "403", "404", "409"} <= set(join_op["responses"])
    assert "422" not in join_op["responses"]


async def test_times_in_the_past_and_future_are_utc_aware(client: ApiClient) -> None:
    user = await client.signup()
    body = await create(client, user, start_time="2020-01-01T00:00:00Z")
    assert parse(body["start_time"]).tzinfo is not None
    assert parse(body["start_time"]) == datetime(2020, 1, 1, tzinfo=UTC)
