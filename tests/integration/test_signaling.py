"""WebSocket signaling across two real api replicas that share PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.conftest import fresh_postgres_url, service_env
from tests.integration.replicas import Cluster, Replica, cluster, connect, recv_type


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(
        tmp_path_factory.mktemp("replicas"),
        fresh_postgres_url(),
        service_env("KONFER_TEST_REDIS_URL"),
    ) as c:
        c.start()
        c.start()
        yield c


async def signup(replica: Replica) -> dict[str, Any]:
    name = f"s{uuid.uuid4().hex[:10]}"
    async with httpx.AsyncClient(base_url=replica.http) as c:
        r = await c.post(
            "/api/v1/auth/register",
            json={"username": name, "email": f"{name}@example.com", "password": "password123"},
        )
        assert r.status_code == 201, r.text
        user = r.json()
        r = await c.post("/api/v1/auth/login", json={"username": name, "password": "password123"})
        token = r.json()["access_token"]
    return {**user, "token": token, "headers": {"Authorization": f"Bearer {token}"}}


async def meeting(replica: Replica, host: dict[str, Any], **extra: Any) -> str:
    async with httpx.AsyncClient(base_url=replica.http) as c:
        r = await c.post(
            "/api/v1/meetings",
            headers=host["headers"],
            json={
                "title": "Signaling test",
                "start_time": "2030-01-01T10:00:00Z",
                "duration": 30,
                **extra,
            },
        )
        assert r.status_code == 201, r.text
        return str(r.json()["meeting_id"])


async def rest_join(replica: Replica, user: dict[str, Any], meeting_id: str, **body: Any) -> None:
    async with httpx.AsyncClient(base_url=replica.http) as c:
        r = await c.post(
            f"/api/v1/meetings/{meeting_id}/join", headers=user["headers"], json=body or None
        )
        assert r.status_code == 200, r.text


async def in_room(replica: Replica, user: dict[str, Any], meeting_id: str) -> ClientConnection:
    ws = await connect(replica.ws_url(user["token"]))
    await ws.send(json.dumps({"type": "join", "room_id": meeting_id}))
    joined = await recv_type(ws, "joined")
    assert joined["room_id"] == meeting_id
    assert joined["user_id"] == user["user_id"]
    return ws


async def expect_error(ws: ClientConnection, code: str) -> dict[str, Any]:
    err = await recv_type(ws, "error")
    assert err["code"] == code, err
    assert err["message"]
    assert err["timestamp"].endswith("Z")
    return err


async def room_of_two(
    two: Cluster,
) -> tuple[str, dict[str, Any], dict[str, Any], ClientConnection, ClientConnection]:
    r1, r2 = two.replicas[:2]
    alice, bob = await signup(r1), await signup(r2)
    mid = await meeting(r1, alice)
    await rest_join(r1, alice, mid)
    await rest_join(r2, bob, mid)
    a = await in_room(r1, alice, mid)
    b = await in_room(r2, bob, mid)
    return mid, alice, bob, a, b


async def test_clients_on_different_replicas_see_each_other_and_exchange_sdp(
    two: Cluster,
) -> None:
    mid, alice, bob, a, b = await room_of_two(two)
    joined = await recv_type(a, "user-joined")
    assert joined["user_id"] == bob["user_id"]
    assert joined["user_info"]["username"] == bob["username"]

    # The sender's claimed identity is ignored: from_user_id comes from the socket.
    await a.send(
        json.dumps(
            {
                "type": "offer",
                "room_id": mid,
                "from_user_id": bob["user_id"],
                "target_user_id": bob["user_id"],
                "sdp": {"type": "offer", "sdp": "v=0\r\n"},
            }
        )
    )
    offer = await recv_type(b, "offer")
    assert offer["from_user_id"] == alice["user_id"]
    assert offer["sdp"] == {"type": "offer", "sdp": "v=0\r\n"}
    assert offer["room_id"] == mid

    await b.send(
        json.dumps(
            {
                "type": "answer",
                "target_user_id": alice["user_id"],
                "sdp": {"type": "answer", "sdp": "v=0\r\n"},
            }
        )
    )
    answer = await recv_type(a, "answer")
    assert answer["from_user_id"] == bob["user_id"]

    cand = {
        "candidate": "candidate:1 1 UDP 2130706431 127.0.0.1 54321 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    }
    await a.send(
        json.dumps({"type": "ice-candidate", "target_user_id": bob["user_id"], "candidate": cand})
    )
    got = await recv_type(b, "ice-candidate")
    assert got["candidate"]["candidate"] == cand["candidate"]
    assert got["from_user_id"] == alice["user_id"]

    await a.send(
        json.dumps(
            {
                "type": "media-state",
                "audio_enabled": True,
                "video_enabled": False,
                "screen_sharing": True,
            }
        )
    )
    state = await recv_type(b, "media-state")
    assert (state["user_id"], state["audio_enabled"], state["screen_sharing"]) == (
        alice["user_id"],
        True,
        True,
    )

    await b.send(json.dumps({"type": "chat", "room_id": mid, "message": "hello from r2"}))
    for ws in (a, b):
        chat = await recv_type(ws, "chat")
        assert chat["message"] == "hello from r2"
        assert chat["user_id"] == bob["user_id"]
    async with httpx.AsyncClient(base_url=two.replicas[0].http) as c:
        r = await c.get(f"/api/v1/messages/history/{mid}", headers=alice["headers"])
        assert [m["payload"]["message"] for m in r.json()["data"]] == ["hello from r2"]
        r = await c.get(f"/api/v1/sessions/room/{mid}", headers=alice["headers"])
        sessions = r.json()["data"]
        assert {s["user_id"] for s in sessions} == {alice["user_id"], bob["user_id"]}
        assert (
            next(s for s in sessions if s["user_id"] == alice["user_id"])["media_state"][
                "screen_sharing"
            ]
            is True
        )

    await b.send(json.dumps({"type": "leave", "room_id": mid}))
    left = await recv_type(b, "left")
    assert left["user_id"] == bob["user_id"]
    gone = await recv_type(a, "user-left")
    assert gone["user_id"] == bob["user_id"]
    await a.close()
    await b.close()


async def test_disconnect_without_leave_announces_user_left(two: Cluster) -> None:
    _mid, _alice, bob, a, b = await room_of_two(two)
    await b.close()
    gone = await recv_type(a, "user-left")
    assert gone["user_id"] == bob["user_id"]
    await a.close()


async def test_killed_replica_sessions_expire_and_announce_user_left(two: Cluster) -> None:
    r1 = two.replicas[0]
    doomed = two.start()
    alice, bob = await signup(r1), await signup(r1)
    mid = await meeting(r1, alice)
    await rest_join(r1, alice, mid)
    await rest_join(r1, bob, mid)
    a = await in_room(r1, alice, mid)
    b = await in_room(doomed, bob, mid)
    await recv_type(a, "user-joined")
    doomed.kill()
    gone = await recv_type(a, "user-left", within=15)
    assert gone["user_id"] == bob["user_id"]
    async with httpx.AsyncClient(base_url=r1.http) as c:
        r = await c.get(f"/api/v1/sessions/room/{mid}", headers=alice["headers"])
        assert [s["user_id"] for s in r.json()["data"]] == [alice["user_id"]]
    await a.close()
    del b


@pytest.mark.parametrize(
    "payload",
    [
        "not json",
        "[]",
        '{"no": "type"}',
        '{"type": "dance"}',
        '{"type": "join"}',
        '{"type": "offer", "target_user_id": "x", "sdp": 5}',
        '{"type": "chat", "message": ""}',
        '{"type": "media-state", "audio_enabled": "loud"}',
    ],
)
async def test_malformed_messages_answer_invalid_message_and_keep_the_socket(
    two: Cluster, payload: str
) -> None:
    user = await signup(two.replicas[0])
    ws = await connect(two.replicas[0].ws_url(user["token"]))
    await ws.send(payload)
    await expect_error(ws, "INVALID_MESSAGE")
    await ws.send(json.dumps({"type": "ping"}))
    assert (await recv_type(ws, "pong"))["type"] == "pong"
    await ws.close()


async def test_invalid_room_errors(two: Cluster) -> None:
    r1 = two.replicas[0]
    user = await signup(r1)
    ws = await connect(r1.ws_url(user["token"]))
    for room in ("not-a-uuid", str(uuid.uuid4())):
        await ws.send(json.dumps({"type": "join", "room_id": room}))
        await expect_error(ws, "INVALID_ROOM")
    await ws.send(json.dumps({"type": "chat", "message": "before join"}))
    await expect_error(ws, "INVALID_ROOM")
    await ws.send(json.dumps({"type": "leave"}))
    await expect_error(ws, "INVALID_ROOM")
    mid = await meeting(r1, user)
    await rest_join(r1, user, mid)
    await ws.send(json.dumps({"type": "join", "room_id": mid}))
    await recv_type(ws, "joined")
    await ws.send(json.dumps({"type": "chat", "room_id": str(uuid.uuid4()), "message": "x"}))
    await expect_error(ws, "INVALID_ROOM")
    await ws.close()


@pytest.mark.parametrize("token", [None, "", "garbage.token.value"])
async def test_bad_token_is_unauthorized_and_closed(two: Cluster, token: str | None) -> None:
    ws = await connect(two.replicas[0].ws_url(token))
    await expect_error(ws, "UNAUTHORIZED")
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401


async def test_joining_without_rest_join_is_unauthorized(two: Cluster) -> None:
    r1 = two.replicas[0]
    host, stranger = await signup(r1), await signup(r1)
    mid = await meeting(r1, host)
    ws = await connect(r1.ws_url(stranger["token"]))
    await ws.send(json.dumps({"type": "join", "room_id": mid}))
    err = await expect_error(ws, "UNAUTHORIZED")
    assert "/join" in err["message"]
    await ws.close()


async def test_room_full(two: Cluster) -> None:
    r1, r2 = two.replicas[:2]
    users = [await signup(r1) for _ in range(3)]
    mid = await meeting(r1, users[0], max_participants=2)
    await rest_join(r1, users[0], mid)
    await rest_join(r1, users[1], mid)
    a = await in_room(r1, users[0], mid)
    b = await in_room(r2, users[1], mid)
    async with httpx.AsyncClient(base_url=r1.http) as c:
        r = await c.post(f"/api/v1/meetings/{mid}/join", headers=users[2]["headers"])
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "ROOM_FULL"
    # A second socket of a user already present does not count twice.
    again = await in_room(r2, users[1], mid)
    for ws in (a, b, again):
        await ws.close()


async def test_target_not_found_and_sfu_unavailable(two: Cluster) -> None:
    _mid, _alice, _bob, a, b = await room_of_two(two)
    await a.send(
        json.dumps(
            {
                "type": "offer",
                "target_user_id": str(uuid.uuid4()),
                "sdp": {"type": "offer", "sdp": "v=0"},
            }
        )
    )
    await expect_error(a, "TARGET_NOT_FOUND")
    await a.send(json.dumps({"type": "offer", "sdp": {"type": "offer", "sdp": "v=0"}}))
    await expect_error(a, "SFU_UNAVAILABLE")
    await a.send(
        json.dumps(
            {
                "type": "offer",
                "target_user_id": "sfu",
                "pc": "subscriber",
                "sdp": {"type": "offer", "sdp": "v=0"},
            }
        )
    )
    await expect_error(a, "SFU_UNAVAILABLE")
    await a.close()
    await b.close()


async def test_message_over_64_kb_is_refused_and_closed(two: Cluster) -> None:
    user = await signup(two.replicas[0])
    ws = await connect(two.replicas[0].ws_url(user["token"]))
    await ws.send(json.dumps({"type": "chat", "message": "x" * (65 * 1024)}))
    err = await expect_error(ws, "INVALID_MESSAGE")
    assert "64 KB" in err["message"]
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


async def test_heartbeat_pings_and_closes_silent_clients(
    tmp_path: Path,
) -> None:
    with cluster(
        tmp_path,
        fresh_postgres_url(),
        service_env("KONFER_TEST_REDIS_URL"),
        KONFER_WS_HEARTBEAT_INTERVAL_SECONDS="0.3",
        KONFER_WS_HEARTBEAT_TIMEOUT_SECONDS="1",
    ) as c:
        replica = c.start()
        user = await signup(replica)
        lively = await connect(replica.ws_url(user["token"]))
        silent = await connect(replica.ws_url(user["token"]))
        ping = await recv_type(lively, "ping")
        assert ping["timestamp"].endswith("Z")
        for _ in range(6):  # answer pings for ~1.8 s: past the timeout, still open
            await lively.send(json.dumps({"type": "pong"}))
            await recv_type(lively, "ping")
        await asyncio.wait_for(silent.wait_closed(), 5)
        assert silent.close_code == 4408
        await lively.send(json.dumps({"type": "ping"}))
        await recv_type(lively, "pong")
        await lively.close()


async def test_stats_admin_sessions_and_health(two: Cluster) -> None:
    mid, alice, _bob, a, b = await room_of_two(two)
    r2 = two.replicas[1]
    async with httpx.AsyncClient(base_url=r2.http) as c:
        r = await c.get("/ws/signaling/health")
        assert r.json()["service"] == "signaling-service"
        assert r.json()["active_sessions"] >= 2
        overview = (await c.get("/api/v1/stats/overview", headers=alice["headers"])).json()
        assert overview["room_details"][mid]["participant_count"] == 2
        assert set(overview) >= {"active_sessions", "connected_clients", "active_rooms"}
        rooms = (await c.get("/api/v1/stats/rooms", headers=alice["headers"])).json()["data"]
        assert rooms[mid]["active_connections"] == 2
        r = await c.get("/admin/sessions", headers=alice["headers"])
        assert r.status_code == 403
        r = await c.post("/admin/cleanup/sessions", headers=alice["headers"])
        assert r.status_code == 403
        r = await c.get(f"/api/v1/messages/history/{mid}?limit=1001", headers=alice["headers"])
        assert r.status_code == 400
        metrics = (await c.get("/metrics")).text
        assert "konfer_api_websocket_connections" in metrics
        assert "konfer_api_active_meetings 1.0" in metrics
    stranger = await signup(r2)
    async with httpx.AsyncClient(base_url=r2.http) as c:
        for path in (f"/api/v1/sessions/room/{mid}", f"/api/v1/messages/history/{mid}"):
            r = await c.get(path, headers=stranger["headers"])
            assert r.status_code == 404
        overview = (await c.get("/api/v1/stats/overview", headers=stranger["headers"])).json()
        assert mid not in overview["room_details"]
    await a.close()
    await b.close()


async def test_ending_the_meeting_closes_the_room_on_every_replica(two: Cluster) -> None:
    mid, alice, bob, a, b = await room_of_two(two)
    async with httpx.AsyncClient(base_url=two.replicas[0].http) as c:
        r = await c.post(f"/api/v1/meetings/{mid}/end", headers=alice["headers"])
        assert r.status_code == 200
    for ws in (a, b):
        ended = await recv_type(ws, "meeting-ended")
        assert ended["room_id"] == mid
    await b.send(json.dumps({"type": "chat", "message": "still here?"}))
    await expect_error(b, "INVALID_ROOM")
    await b.send(json.dumps({"type": "join", "room_id": mid}))
    await expect_error(b, "INVALID_ROOM")
    async with httpx.AsyncClient(base_url=two.replicas[1].http) as c:
        r = await c.get(f"/api/v1/sessions/room/{mid}", headers=bob["headers"])
        assert r.json()["data"] == []
    await a.close()
    await b.close()


async def test_removed_participant_is_taken_out_of_the_room(two: Cluster) -> None:
    mid, alice, bob, a, b = await room_of_two(two)
    async with httpx.AsyncClient(base_url=two.replicas[0].http) as c:
        r = await c.delete(
            f"/api/v1/meetings/{mid}/participants/{bob['user_id']}", headers=alice["headers"]
        )
        assert r.status_code == 204
    removed = await recv_type(b, "removed")
    assert removed["user_id"] == bob["user_id"]
    gone = await recv_type(a, "user-left")
    assert gone["user_id"] == bob["user_id"]
    await b.send(json.dumps({"type": "join", "room_id": mid}))
    await expect_error(b, "UNAUTHORIZED")
    await a.close()
    await b.close()


async def test_admin_lists_and_cleans_sessions(two: Cluster, tmp_path: Path) -> None:
    r1 = two.replicas[0]
    admin = await signup(r1)
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("konfer")),
        "admin",
        "create",
        "--username",
        admin["username"],
        "--email",
        admin["email"],
        "--password",
        "unused-pw",
        env={**two.env, "KONFER_DATA_DIR": str(tmp_path)},
        stdout=asyncio.subprocess.DEVNULL,
    )
    assert await proc.wait() == 0
    _mid, _alice, _bob, a, b = await room_of_two(two)
    async with httpx.AsyncClient(base_url=r1.http) as c:
        listed = (await c.get("/admin/sessions", headers=admin["headers"])).json()
        assert listed["total"] >= 2
        assert listed["active"] == listed["total"]
        r = await c.post("/api/v1/admin/cleanup/sessions", headers=admin["headers"])
        assert r.status_code == 200
        assert r.json()["cleaned_sessions"] == 0  # every live replica keeps its sessions fresh
    await a.close()
    await b.close()
