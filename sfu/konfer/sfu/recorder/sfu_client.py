"""The recorder's side of the SFU control API: a hidden subscriber, like a client.

It joins as a peer with its recorder media token, answers the SFU's subscriber offers
(long-polled from ``/v1/peers/{id}/events``) with an aiortc connection whose receivers
are tapped (``aiortc_hooks.tap_receiver``) so encoded frames go to the muxer and nothing
is decoded, and asks for a keyframe when a video track starts, again every
``KEYFRAME_RETRY_SECONDS`` while the caller still waits for one. Called by ``session``
and the live streamer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCBundlePolicy

from konfer.sfu import aiortc_hooks as hooks

log = logging.getLogger(__name__)

POLL_SECONDS = 20
# A keyframe lost on the way (a busy host dropping packets) would otherwise leave a video
# track empty until the publisher happens to send the next one, which WebRTC encoders
# only do when asked.
KEYFRAME_RETRY_SECONDS = 1.0
KEYFRAME_ATTEMPTS = 10


class SfuGone(Exception):
    """The SFU closed this peer or stopped answering: the meeting's media is over."""


@dataclass(frozen=True, slots=True)
class RemoteTrack:
    """A track the SFU sends us, as its offer describes it."""

    track_id: str
    user_id: str
    kind: str
    source: str
    codec: str


TrackHandler = Callable[[RemoteTrack, RTCRtpReceiver], None]
KeyframeWanted = Callable[[str], bool]  # by track id: still waiting for a keyframe?


def _never(track_id: str) -> bool:
    return False


class SfuSubscriber:
    def __init__(
        self,
        base_url: str,
        token: str,
        peer_id: str,
        on_track: TrackHandler,
        keyframe_wanted: KeyframeWanted = _never,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.peer_id = peer_id
        self.on_track = on_track
        self.keyframe_wanted = keyframe_wanted
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(10, read=POLL_SECONDS + 10),
        )
        self.pc: RTCPeerConnection | None = None
        self.tracks: dict[str, RemoteTrack] = {}
        self.receivers: dict[str, RTCRtpReceiver] = {}
        self._described: dict[str, dict[str, Any]] = {}
        self._cursor = 0
        self._background: set[asyncio.Future[None]] = set()
        self.lost = asyncio.Event()

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        r = await self.http.request(method, path, json=body)
        if r.status_code >= 400:
            raise SfuGone(f"{method} {path}: {r.status_code} {r.text[:200]}")
        return r.json()

    async def join(self) -> None:
        await self._call("PUT", f"/v1/peers/{self.peer_id}")

    async def run(self) -> None:
        """Answer the SFU's offers until it closes this peer; raises ``SfuGone`` then."""
        failures = 0
        while True:
            try:
                r = await self.http.get(
                    f"/v1/peers/{self.peer_id}/events",
                    params={"after": self._cursor, "timeout": POLL_SECONDS},
                )
            except httpx.HTTPError as exc:
                failures += 1
                if failures >= 5:
                    raise SfuGone(f"the SFU is unreachable: {exc}") from exc
                await asyncio.sleep(0.5 * failures)
                continue
            failures = 0
            if r.status_code != 200:
                raise SfuGone(f"the SFU answered {r.status_code}: {r.text[:200]}")
            body = r.json()
            for event in body.get("events", []):
                self._cursor = int(event["seq"])
                await self._on_message(event["message"])
            if body.get("closed"):
                raise SfuGone("the SFU closed the recorder's peer")
            self._cursor = int(body.get("next", self._cursor))

    async def _on_message(self, message: dict[str, Any]) -> None:
        if message.get("type") != "offer" or message.get("pc") != "subscriber":
            return
        for info in message.get("tracks", []):
            self._described[str(info["track_id"])] = info
        if self.pc is None:
            self.pc = RTCPeerConnection(
                RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
            )
            self.pc.on("track", self._track)
            self.pc.on("connectionstatechange", self._state_changed)
        pc = self.pc
        await pc.setRemoteDescription(RTCSessionDescription(message["sdp"]["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        answer: dict[str, Any] = {
            "type": "answer",
            "pc": "subscriber",
            "sdp": {"type": "answer", "sdp": pc.localDescription.sdp},
        }
        if message.get("offer_id") is not None:  # so the SFU can tell it from a stale one
            answer["offer_id"] = message["offer_id"]
        await self._call("POST", f"/v1/peers/{self.peer_id}/signal", answer)

    def _state_changed(self) -> None:
        if self.pc is not None and self.pc.connectionState == "failed":
            log.warning("the media connection to the SFU failed")
            self.lost.set()

    def _track(self, track: MediaStreamTrack) -> None:
        assert self.pc is not None
        receiver = next(
            (t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track), None
        )
        info = self._described.get(track.id)
        if receiver is None or info is None or track.id in self.tracks:
            return
        remote = RemoteTrack(
            track_id=track.id,
            user_id=str(info.get("user_id", "")),
            kind=str(info.get("kind", track.kind)),
            source=str(info.get("source", "camera" if track.kind == "video" else "microphone")),
            codec=str(info.get("codec", "")).lower(),
        )
        self.tracks[track.id] = remote
        self.receivers[track.id] = receiver
        self.on_track(remote, receiver)
        if remote.kind == "video":
            task = asyncio.ensure_future(self.keyframe(remote.track_id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def keyframe(self, track_id: str) -> None:
        """Ask the publisher (through the SFU) for a keyframe, so the file starts soon,
        and ask again while ``keyframe_wanted`` says the track still waits for one."""
        for _ in range(KEYFRAME_ATTEMPTS):
            with contextlib.suppress(httpx.HTTPError, SfuGone):
                await self._call("POST", f"/v1/tracks/{track_id}/keyframe")
            await asyncio.sleep(KEYFRAME_RETRY_SECONDS)
            if not self.keyframe_wanted(track_id):
                return
        log.warning(
            "no keyframe on track %s after %d requests (%s)",
            track_id,
            KEYFRAME_ATTEMPTS,
            self.receiver_state(track_id),
        )

    def receiver_state(self, track_id: str) -> str:
        """What the receiver of a silent track saw, for the log: nothing sent by the SFU,
        or packets that never reached the tap (a receiver aiortc did not start)."""
        receiver = self.receivers.get(track_id)
        if receiver is None:
            return "no receiver"
        return (
            f"receiver started: {hooks.receiver_started(receiver)}, packets received: "
            f"{_packets(receiver)[1]}, transport: {receiver.transport.state}"
        )

    def packet_loss(self) -> tuple[int, int]:
        """(lost, received) RTP packets over every receiver, from their RTCP statistics."""
        counts = [_packets(receiver) for receiver in self.receivers.values()]
        return sum(lost for lost, _ in counts), sum(received for _, received in counts)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        with contextlib.suppress(Exception):
            await self.http.delete(f"/v1/peers/{self.peer_id}")
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await self.pc.close()
        await self.http.aclose()


def _packets(receiver: RTCRtpReceiver) -> tuple[int, int]:
    """(lost, received) RTP packets of one receiver, from its RTCP statistics."""
    lost = received = 0
    for stream in hooks.receiver_statistics(receiver).values():
        lost += max(int(stream.packets_lost), 0)
        received += int(stream.packets_received)
    return lost, received
