"""Real aiortc clients and a real ``konfer sfu`` process for the SFU tests.

Everything gathers on 127.0.0.1 only: the SFU through ``KONFER_SFU_ICE_HOSTS`` and these
clients through the same aioice switch, and every SDP is checked for it. The SFU runs as
its own process so the test can ask it whether it ever created a decoder or encoder
(these clients, of course, encode and decode).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import math
import os
import re
import struct
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, VideoStreamTrack
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtp import RtpPacket
from av import AudioFrame, VideoFrame
from prometheus_client.parser import text_string_to_metric_families

from konfer.core.keys import KeyRing
from konfer.core.process import announced
from konfer.core.tokens import MediaGrants, TokenCodec
from konfer.sfu import aiortc_hooks

LOOPBACK = "127.0.0.1"
_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) ", re.MULTILINE)


def candidate_addresses(sdp: str) -> list[str]:
    return _CANDIDATE.findall(sdp)


def assert_loopback_only(sdp: str) -> None:
    addresses = candidate_addresses(sdp)
    assert addresses, "the description carries no candidates"
    assert set(addresses) == {LOOPBACK}, f"non-loopback candidates: {addresses}"


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of the SFU's ``/metrics`` text (0 when absent), by name and labels."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def sfu_metric(http: httpx.AsyncClient, name: str, **labels: str) -> float:
    r = await http.get("/metrics")
    assert r.status_code == 200, r.text
    return metric(r.text, name, **labels)


class Keys:
    """The api's side of media tokens: a signing ring and its JWKS file."""

    def __init__(self, folder: Path) -> None:
        self.ring = KeyRing.load(folder / "keys", None, generate=True)
        self.codec = TokenCodec(self.ring, "konfer")
        self.jwks_file = folder / "jwks.json"
        self.jwks_file.write_text(json.dumps(self.ring.jwks()))

    def token(self, user_id: str, room: str, **grants: Any) -> str:
        return self.codec.issue_media(
            uuid.UUID(user_id), "tester", MediaGrants(room=room, **grants), ttl=600
        )


@contextlib.asynccontextmanager
async def sfu_process(keys: Keys, meeting_id: str, **env: str) -> AsyncIterator[str]:
    """``konfer sfu`` on loopback, on a port it binds itself; yields its base URL."""
    url_file = keys.jwks_file.with_name(f"sfu-{uuid.uuid4().hex}.url")
    environment = {
        **os.environ,
        "KONFER_SFU_ICE_HOSTS": LOOPBACK,
        "KONFER_JSON_LOGS": "false",
        "KONFER_LOG_LEVEL": "WARNING",
        **env,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "konfer.cli.main",
        "sfu",
        "--meeting",
        meeting_id,
        "--port",
        "0",
        "--url-file",
        str(url_file),
        "--jwks-file",
        str(keys.jwks_file),
        env=environment,
    )
    deadline = time.monotonic() + 30
    while (base := announced(url_file)) is None:
        assert proc.returncode is None, "the SFU process exited"
        assert time.monotonic() < deadline, "the SFU did not bind its port"
        await asyncio.sleep(0.05)
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            while True:
                assert proc.returncode is None, "the SFU process exited"
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/healthz")).status_code == 200:
                        break
                assert time.monotonic() < deadline, "the SFU did not start"
                await asyncio.sleep(0.1)
        yield base
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def eventually(predicate: Callable[[], object], seconds: float) -> bool:
    """Poll ``predicate`` every 20 ms for up to ``seconds`` (real media takes real time)."""
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return bool(predicate())


class PatternVideo(VideoStreamTrack):
    """Small moving frames (so the encoder has real work), 30 fps, with the given id."""

    def __init__(self, track_id: str | None = None, size: tuple[int, int] = (160, 120)) -> None:
        super().__init__()
        if track_id:
            self._id = track_id
        self.width, self.height = size
        self.n = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame(width=self.width, height=self.height, format="yuv420p")
        w, h = self.width, self.height
        shift = self.n % 64
        row = bytes(((x + shift) * 4) & 0xFF for x in range(w))
        frame.planes[0].update(row * h)
        frame.planes[1].update(bytes([128 + (self.n % 32)]) * (w * h // 4))
        frame.planes[2].update(bytes([128]) * (w * h // 4))
        self.n += 1
        frame.pts = pts
        frame.time_base = time_base
        return frame


class ToneAudio(MediaStreamTrack):
    """20 ms frames of a 440 Hz tone (loud) or silence, paced in real time."""

    kind = "audio"

    def __init__(self, loud: bool = False, track_id: str | None = None) -> None:
        super().__init__()
        if track_id:
            self._id = track_id
        self.loud = loud
        self._start: float | None = None
        self._samples = 0

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        rate, count = 48000, 960
        if self._start is None:
            self._start = time.time()
        else:
            self._samples += count
            await asyncio.sleep(self._start + self._samples / rate - time.time())
        amplitude = 12000 if self.loud else 0
        data = b"".join(
            struct.pack(
                "<h", int(amplitude * math.sin(2 * math.pi * 440 * (self._samples + i) / rate))
            )
            for i in range(count)
        )
        frame = AudioFrame(format="s16", layout="mono", samples=count)
        frame.planes[0].update(data)
        frame.pts = self._samples
        frame.sample_rate = rate
        frame.time_base = fractions.Fraction(1, rate)
        return frame


@dataclass
class Received:
    """What one client got of one remote track."""

    track_id: str
    kind: str
    frames: int = 0
    pts: list[int] = field(default_factory=list)
    first_at: float | None = None
    ended_at: float | None = None
    sizes: set[tuple[int, int]] = field(default_factory=set)


def new_pc() -> RTCPeerConnection:
    return RTCPeerConnection(
        RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )


class Participant:
    """One meeting client: a publisher connection, a subscriber connection, an event poll."""

    def __init__(self, base: str, keys: Keys, meeting_id: str, **grants: Any) -> None:
        self.user_id = str(uuid.uuid4())
        self.peer_id = uuid.uuid4().hex
        self.token = keys.token(self.user_id, meeting_id, **grants)
        self.http = httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {self.token}"}, timeout=40
        )
        self.publisher: RTCPeerConnection | None = None
        self.subscriber: RTCPeerConnection | None = None
        self.received: dict[str, Received] = {}
        self.offers: list[dict[str, Any]] = []
        self.track_owners: dict[str, str] = {}
        self.sub_connected_at: float | None = None
        self.sdps: list[str] = []
        self.subscriber_restarts = 0
        #: every subscriber answer made, as posted (or held back, see ``hold_answers``)
        self.answers: list[dict[str, Any]] = []
        #: echo each offer's ``offer_id`` in the answer (clients before it did not)
        self.echo_offer_id = True
        #: make answers but do not post them (a test posts them when it likes)
        self.hold_answers = False
        #: which track each subscriber m-line carries now (the SFU reuses m-lines)
        self.mid_tracks: dict[str, str] = {}
        #: per subscriber m-line: when its first RTP packet arrived, and that packet
        self.first_rtp: dict[str, tuple[float, RtpPacket]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._cursor = 0

    async def join(self) -> None:
        r = await self.http.put(f"/v1/peers/{self.peer_id}")
        assert r.status_code == 200, r.text
        self._tasks.append(asyncio.create_task(self._poll()))

    async def publish(
        self,
        *tracks: MediaStreamTrack,
        codec: str | None = None,
        sources: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        pc = self.publisher = self.publisher or new_pc()
        for track in tracks:
            transceiver = pc.addTransceiver(track, direction="sendonly")
            if codec and track.kind == "video":
                caps = RTCRtpSender.getCapabilities("video").codecs
                transceiver.setCodecPreferences(
                    [c for c in caps if c.mimeType.lower() in (codec.lower(), "video/rtx")]
                )
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        assert_loopback_only(offer)
        self.sdps.append(offer)
        body: dict[str, Any] = {
            "type": "offer",
            "pc": "publisher",
            "sdp": {"type": "offer", "sdp": offer},
        }
        if sources:
            body["track_sources"] = sources
        r = await self.http.post(f"/v1/peers/{self.peer_id}/signal", json=body)
        assert r.status_code == 200, r.text
        (answer,) = r.json()["messages"]
        assert answer["type"] == "answer"
        assert answer["pc"] == "publisher"
        assert answer["from_user_id"] == "sfu"
        assert_loopback_only(answer["sdp"]["sdp"])
        self.sdps.append(answer["sdp"]["sdp"])
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"]["sdp"], "answer"))
        return answer

    async def restart_publisher(self, *tracks: MediaStreamTrack) -> dict[str, Any]:
        """An ICE restart of the publisher connection, as an aiortc client can do one.

        aiortc cannot restart ICE on a live connection, so the client offers its tracks
        (same ids; new objects, since closing the old connection ends the old ones) on a
        new connection, with new ICE credentials and DTLS fingerprint, and closes the
        old one once the SFU has answered.
        """
        old = self.publisher
        assert old is not None
        self.publisher = None
        answer = await self.publish(*tracks)
        await old.close()
        return answer

    async def restart_subscriber(self) -> None:
        """Ask the SFU for an ICE restart of the subscriber connection."""
        r = await self.http.post(
            f"/v1/peers/{self.peer_id}/signal", json={"type": "ice-restart", "pc": "subscriber"}
        )
        assert r.status_code == 200, r.text

    async def _poll(self) -> None:
        while True:
            r = await self.http.get(
                f"/v1/peers/{self.peer_id}/events", params={"after": self._cursor, "timeout": 10}
            )
            if r.status_code != 200:
                return
            body = r.json()
            for event in body["events"]:
                self._cursor = event["seq"]
                await self._on_message(event["message"])
            if body["closed"]:
                return

    async def _on_message(self, message: dict[str, Any]) -> None:
        assert message["from_user_id"] == "sfu"
        if message["type"] != "offer" or message["pc"] != "subscriber":
            return
        self.offers.append(message)
        for t in message["tracks"]:
            self.track_owners[t["track_id"]] = t["user_id"]
            if t.get("mid") is not None:
                self.mid_tracks[str(t["mid"])] = t["track_id"]
        assert_loopback_only(message["sdp"]["sdp"])
        self.sdps.append(message["sdp"]["sdp"])
        if message.get("ice_restart") and self.subscriber is not None:
            # aiortc cannot restart ICE on a connection: answer on a new one
            old, self.subscriber = self.subscriber, None
            self.subscriber_restarts += 1
            await old.close()
        if self.subscriber is None:
            self.subscriber = new_pc()
            pc = self.subscriber

            @pc.on("connectionstatechange")
            def _state() -> None:
                if pc.connectionState == "connected" and self.sub_connected_at is None:
                    self.sub_connected_at = time.monotonic()

            @pc.on("track")
            def _track(track: MediaStreamTrack) -> None:
                transceiver = next(t for t in pc.getTransceivers() if t.receiver.track is track)
                self._note_first_rtp(transceiver.receiver, transceiver.mid or "")
                self._tasks.append(asyncio.create_task(self._consume(track, transceiver.mid)))

        pc = self.subscriber
        await pc.setRemoteDescription(RTCSessionDescription(message["sdp"]["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        answer = pc.localDescription.sdp
        assert_loopback_only(answer)
        self.sdps.append(answer)
        body: dict[str, Any] = {
            "type": "answer",
            "pc": "subscriber",
            "sdp": {"type": "answer", "sdp": answer},
        }
        if self.echo_offer_id and message.get("offer_id") is not None:
            body["offer_id"] = message["offer_id"]
        self.answers.append(body)
        if not self.hold_answers:
            await self.post_answer(body)
        # The offer lists exactly the tracks this client receives now (as the browser
        # client reads it): a track no longer listed has ended, its m-line is inactive.
        listed = {t["track_id"] for t in message["tracks"]}
        for track_id, got in self.received.items():
            if track_id not in listed and got.ended_at is None:
                got.ended_at = time.monotonic()

    def _note_first_rtp(self, receiver: Any, mid: str) -> None:
        """Record when the m-line's first packet comes off the wire, before the jitter
        buffer and decoder (which wait for the next frame's first packet, then decode)."""
        handle = receiver._handle_rtp_packet

        async def first(packet: RtpPacket, arrival_time_ms: int) -> None:
            self.first_rtp.setdefault(mid, (time.monotonic(), packet))
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = first

    def first_packet(self, track_id: str) -> tuple[float, RtpPacket] | None:
        """The first packet of ``track_id`` on the subscriber connection, with its time."""
        mid = next((m for m, t in self.mid_tracks.items() if t == track_id), None)
        return self.first_rtp.get(mid) if mid is not None else None

    async def post_answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """Post a subscriber answer; the SFU's reply (``stale`` when it ignored it)."""
        r = await self.http.post(f"/v1/peers/{self.peer_id}/signal", json=body)
        assert r.status_code == 200, r.text
        reply: dict[str, Any] = r.json()
        return reply

    def received_at(self, mid: str) -> Received | None:
        """What arrived of the track the subscriber m-line ``mid`` carries now."""
        track_id = self.mid_tracks.get(mid)
        return self.received.get(track_id) if track_id is not None else None

    async def _consume(self, track: MediaStreamTrack, mid: str | None) -> None:
        """Count frames for the track the m-line carries now (as a browser client does).

        aiortc raises no new ``track`` event when an m-line is reused for another track,
        so the frames are credited by mid, from the latest offer's track list. aiortc's
        jitter buffer (which ignores the marker bit) releases the previous track's last
        frame only when the next track's first packet arrives; the SFU continues the RTP
        timestamps across the switch with the time that passed, so such a frame is told
        apart by its timestamp and not counted for the new track.
        """
        clock = 90000 if track.kind == "video" else 48000
        current: str | None = None
        last_pts: int | None = None
        stale_below: int | None = None
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                frame = None
            track_id = self.mid_tracks.get(mid or "", track.id)
            if track_id != current:
                if current is not None and last_pts is not None:
                    stale_below = last_pts + clock // 10
                current = track_id
            got = self.received.get(track_id)
            if got is None:
                got = self.received[track_id] = Received(track_id, track.kind)
            if frame is None:
                got.ended_at = time.monotonic()
                return
            if frame.pts is not None:
                if stale_below is not None and frame.pts < stale_below:
                    continue
                stale_below = None
                last_pts = int(frame.pts)
            if got.first_at is None:
                got.first_at = time.monotonic()
            got.frames += 1
            if frame.pts is not None:
                got.pts.append(int(frame.pts))
            if isinstance(frame, VideoFrame):
                got.sizes.add((frame.width, frame.height))

    def from_user(self, user_id: str, kind: str) -> list[Received]:
        return [
            r
            for tid, r in self.received.items()
            if self.track_owners.get(tid) == user_id and r.kind == kind
        ]

    async def leave(self) -> None:
        r = await self.http.delete(f"/v1/peers/{self.peer_id}")
        assert r.status_code == 200, r.text
        await self.close()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        for pc in (self.publisher, self.subscriber):
            if pc is not None:
                await pc.close()
        await self.http.aclose()


def gather_on_loopback() -> None:
    """Make every aiortc connection of this (test) process gather on 127.0.0.1 only."""
    aiortc_hooks.set_ice_hosts([LOOPBACK])
