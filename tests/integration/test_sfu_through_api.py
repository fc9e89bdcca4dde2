"""Media through the api: aiortc clients signal over the WebSocket, the api runs the SFU.

Two api replicas share PostgreSQL and Redis; participants on either replica publish
camera and microphone on their publisher connection and receive everyone else on the
subscriber connection the SFU offers. Everything gathers on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame
from websockets.asyncio.client import ClientConnection

from tests.conftest import fresh_postgres_url, service_env
from tests.integration.replicas import Cluster, Replica, cluster, connect, recv_type
from tests.integration.sfu_peers import (
    PatternVideo,
    Received,
    ToneAudio,
    assert_loopback_only,
    gather_on_loopback,
    new_pc,
)
from tests.integration.test_signaling import meeting, rest_join, signup


@pytest.fixture(scope="module")
def sfu_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    gather_on_loopback()
    with cluster(
        tmp_path_factory.mktemp("sfu-replicas"),
        fresh_postgres_url(),
        service_env("KONFER_TEST_REDIS_URL"),
        KONFER_SFU_ENABLED="true",
    ) as c:
        c.start()
        c.start()
        yield c


class Client:
    """A browser-like participant: one socket, a publisher and a subscriber connection."""

    def __init__(self, user: dict[str, Any], ws: ClientConnection) -> None:
        self.user = user
        self.ws = ws
        self.publisher: RTCPeerConnection | None = None
        self.subscriber: RTCPeerConnection | None = None
        self.received: dict[str, Received] = {}
        self.owners: dict[str, str] = {}
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.errors: list[dict[str, Any]] = []
        self._answer: asyncio.Future[dict[str, Any]] | None = None
        self._tasks = [asyncio.create_task(self._read())]

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                msg = json.loads(raw)
                if msg["type"] == "answer" and msg.get("pc") == "publisher" and self._answer:
                    self._answer.set_result(msg)
                elif msg["type"] == "offer" and msg.get("pc") == "subscriber":
                    await self._on_subscriber_offer(msg)
                elif msg["type"] == "error":
                    self.errors.append(msg)
                else:
                    await self.inbox.put(msg)

    async def publish(self, *tracks: MediaStreamTrack) -> None:
        pc = self.publisher = self.publisher or new_pc()
        for track in tracks:
            pc.addTransceiver(track, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        assert_loopback_only(pc.localDescription.sdp)
        self._answer = asyncio.get_running_loop().create_future()
        await self.ws.send(
            json.dumps(
                {
                    "type": "offer",
                    "pc": "publisher",
                    "sdp": {"type": "offer", "sdp": pc.localDescription.sdp},
                }
            )
        )
        answer = await asyncio.wait_for(self._answer, 15)
        assert answer["from_user_id"] == "sfu"
        assert_loopback_only(answer["sdp"]["sdp"])
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"]["sdp"], "answer"))

    async def _on_subscriber_offer(self, msg: dict[str, Any]) -> None:
        assert msg["from_user_id"] == "sfu"
        assert_loopback_only(msg["sdp"]["sdp"])
        for t in msg.get("tracks", []):
            self.owners[t["track_id"]] = t["user_id"]
        if self.subscriber is None:
            self.subscriber = new_pc()

            @self.subscriber.on("track")
            def _track(track: MediaStreamTrack) -> None:
                self._tasks.append(asyncio.create_task(self._consume(track)))

        pc = self.subscriber
        await pc.setRemoteDescription(RTCSessionDescription(msg["sdp"]["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self.ws.send(
            json.dumps(
                {
                    "type": "answer",
                    "pc": "subscriber",
                    "target_user_id": "sfu",
                    "sdp": {"type": "answer", "sdp": pc.localDescription.sdp},
                }
            )
        )
        # The offer lists exactly the tracks this client receives now: one no longer
        # listed has ended (its m-line is inactive, to be reused by a later track).
        listed = {t["track_id"] for t in msg.get("tracks", [])}
        for track_id, got in self.received.items():
            if track_id not in listed and got.ended_at is None:
                got.ended_at = time.monotonic()

    async def _consume(self, track: MediaStreamTrack) -> None:
        got = self.received.setdefault(track.id, Received(track.id, track.kind))
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                got.ended_at = time.monotonic()
                return
            got.first_at = got.first_at or time.monotonic()
            got.frames += 1
            if frame.pts is not None:
                got.pts.append(int(frame.pts))
            if isinstance(frame, VideoFrame):
                got.sizes.add((frame.width, frame.height))

    def frames_from(self, user_id: str, kind: str) -> int:
        return sum(
            r.frames
            for tid, r in self.received.items()
            if self.owners.get(tid) == user_id and r.kind == kind
        )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for pc in (self.publisher, self.subscriber):
            if pc is not None:
                await pc.close()
        await self.ws.close()


async def enter(replica: Replica, user: dict[str, Any], meeting_id: str) -> Client:
    await rest_join(replica, user, meeting_id)
    ws = await connect(replica.ws_url(user["token"]))
    await ws.send(json.dumps({"type": "join", "room_id": meeting_id}))
    await recv_type(ws, "joined")
    return Client(user, ws)


async def wait_until(predicate: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return bool(predicate())


async def test_three_participants_on_two_replicas_receive_each_other(
    sfu_cluster: Cluster,
) -> None:
    r1, r2 = sfu_cluster.replicas[:2]
    users = [await signup(r1) for _ in range(3)]
    mid = await meeting(r1, users[0])
    clients = [await enter(r, u, mid) for r, u in zip((r1, r2, r1), users, strict=True)]
    try:
        for c in clients:
            await c.publish(PatternVideo(), ToneAudio())
        for c in clients:
            others = [o.user["user_id"] for o in clients if o is not c]
            ok = await wait_until(
                lambda c=c, others=others: all(
                    c.frames_from(u, "video") >= 30 and c.frames_from(u, "audio") >= 50
                    for u in others
                ),
                25,
            )
            assert ok, {u: (c.frames_from(u, "video"), c.frames_from(u, "audio")) for u in others}
            for r in c.received.values():
                assert r.pts == sorted(r.pts), "frames arrived out of order"
            assert not c.errors
        async with httpx.AsyncClient(base_url=r2.http) as http:
            r = await http.get(f"/api/v1/webrtc/room/{mid}/peers", headers=users[0]["headers"])
            assert r.status_code == 200, r.text
            assert {p["user_id"] for p in r.json()["peers"]} >= {u["user_id"] for u in users}
            r = await http.get(f"/api/v1/webrtc/room/{mid}/stats", headers=users[0]["headers"])
            assert r.status_code == 200, r.text
            assert r.json()["statistics"]["total_peers"] >= 3

        # One leaves: their tracks end at the others.
        leaver = clients.pop()
        await leaver.ws.send(json.dumps({"type": "leave"}))
        await leaver.close()
        gone = leaver.user["user_id"]
        for c in clients:
            ended = await wait_until(
                lambda c=c: all(
                    r.ended_at is not None
                    for tid, r in c.received.items()
                    if c.owners.get(tid) == gone
                ),
                15,
            )
            assert ended
    finally:
        for c in clients:
            await c.close()


async def test_media_state_mute_by_host_through_webrtc_route(sfu_cluster: Cluster) -> None:
    r1 = sfu_cluster.replicas[0]
    host, guest = await signup(r1), await signup(r1)
    mid = await meeting(r1, host)
    a = await enter(r1, host, mid)
    b = await enter(r1, guest, mid)
    try:
        await b.publish(PatternVideo(), ToneAudio())
        async with httpx.AsyncClient(base_url=r1.http) as http:
            peers = (
                await http.get(f"/api/v1/webrtc/room/{mid}/peers", headers=host["headers"])
            ).json()["peers"]
            guest_peer = next(p["peer_id"] for p in peers if p["user_id"] == guest["user_id"])
            host_peer = next(p["peer_id"] for p in peers if p["user_id"] == host["user_id"])
            r = await http.post(
                f"/api/v1/webrtc/peer/{guest_peer}/media",
                json={"audio_enabled": False},
                headers=host["headers"],
            )
            assert r.status_code == 200, r.text
            assert r.json()["media_state"]["audio_enabled"] is False
            r = await http.post(
                f"/api/v1/webrtc/peer/{host_peer}/media",
                json={"audio_enabled": False},
                headers=guest["headers"],
            )
            assert r.status_code == 403
            r = await http.post(
                "/api/v1/webrtc/peer/unknown-peer/media",
                json={"audio_enabled": False},
                headers=host["headers"],
            )
            assert r.status_code == 404
    finally:
        await a.close()
        await b.close()


def sfu_pid(meeting_id: str) -> int:
    """The pid of the ``konfer sfu`` process serving a meeting (a child of some replica)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"sfu" in argv and meeting_id.encode() in argv:
                return int(proc.name)
    raise LookupError(f"no SFU process for {meeting_id}")


async def rejoin(client: Client, meeting_id: str) -> None:
    """What a client does on ``media-reconnect``: join again with fresh connections."""
    for pc in (client.publisher, client.subscriber):
        if pc is not None:
            await pc.close()
    client.publisher = client.subscriber = None
    client.received.clear()
    await client.ws.send(json.dumps({"type": "join", "room_id": meeting_id}))


async def test_sfu_crash_tells_clients_to_reconnect_and_media_resumes(
    sfu_cluster: Cluster,
) -> None:
    r1, r2 = sfu_cluster.replicas[:2]
    alice, bob = await signup(r1), await signup(r2)
    mid = await meeting(r1, alice)
    a, b = await enter(r1, alice, mid), await enter(r2, bob, mid)
    try:
        await a.publish(PatternVideo(), ToneAudio())
        assert await wait_until(lambda: b.frames_from(alice["user_id"], "video") >= 10, 20)
        os.kill(sfu_pid(mid), signal.SIGKILL)
        for c in (a, b):
            while (msg := await asyncio.wait_for(c.inbox.get(), 15))["type"] != "media-reconnect":
                pass
            assert msg["room_id"] == mid
        await rejoin(a, mid)
        await rejoin(b, mid)
        await asyncio.sleep(0.5)
        await a.publish(PatternVideo(), ToneAudio())
        assert await wait_until(lambda: b.frames_from(alice["user_id"], "video") >= 10, 25)
        assert sfu_pid(mid) > 0  # a new process serves the meeting
    finally:
        await a.close()
        await b.close()
