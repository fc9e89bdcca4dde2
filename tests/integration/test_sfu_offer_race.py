"""A subscription that changes while the SFU is setting a subscriber offer comes next.

Setting an offer gathers ICE candidates, so other work runs between the SFU taking its
offer and sending it; a track published or ended in that moment was missed until some
later change (a recorder lacked one participant's camera and microphone for the rest of
the file). That moment cannot be hit on demand from outside, so the tests publish or
leave from inside the SFU's ``setLocalDescription``; everything else is real: an
in-process room, aiortc clients and media on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
    sdp,
)

from konfer.core.tokens import MediaGrants
from konfer.sfu import aiortc_hooks as hooks
from konfer.sfu.room import Peer, Room, RoomConfig
from tests.integration.sfu_peers import (
    PatternVideo,
    ToneAudio,
    eventually,
    gather_on_loopback,
    new_pc,
)

MEETING = "offer-race"


@pytest.fixture
async def room() -> AsyncIterator[Room]:
    gather_on_loopback()
    room = Room(RoomConfig(meeting_id=MEETING))
    room.start()
    try:
        yield room
    finally:
        await room.close()


async def _publish(room: Room, name: str) -> tuple[RTCPeerConnection, list[str]]:
    """A participant's publisher connection with a camera and a microphone."""
    peer = await room.join(name, name, MediaGrants(room=MEETING, can_subscribe=False))
    pc = new_pc()
    tracks: list[MediaStreamTrack] = [PatternVideo(), ToneAudio(loud=True)]
    for track in tracks:
        pc.addTransceiver(track, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    answer = await room.publisher_offer(peer, pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"]["sdp"], "answer"))
    return pc, [t.track_id for t in peer.published.values()]


class Viewer:
    """A recorder-like subscriber that answers the room's offers and counts packets."""

    def __init__(self, room: Room, peer: Peer) -> None:
        self.room = room
        self.peer = peer
        self.pc = new_pc()
        self.offers: list[dict[str, Any]] = []
        self.packets: dict[str, int] = {}  # by the track id the offer gave the m-line
        self._cursor = 0
        self._answering = asyncio.create_task(self.answer_offers())

    async def close(self, publishers: list[RTCPeerConnection]) -> None:
        """Stop answering, then close this connection and the publishers'."""
        self._answering.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._answering
        for pc in [self.pc, *publishers]:
            await pc.close()

    async def answer_offers(self) -> None:
        while True:
            for event in await self.peer.events.poll(self._cursor, 5):
                self._cursor = event["seq"]
                await self._answer(event["message"])

    async def _answer(self, offer: dict[str, Any]) -> None:
        self.offers.append(offer)
        await self.pc.setRemoteDescription(RTCSessionDescription(offer["sdp"]["sdp"], "offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        for listed in offer["tracks"]:
            transceiver = next(
                (t for t in self.pc.getTransceivers() if t.mid == listed["mid"]), None
            )
            if transceiver is not None:  # else the test's check of the list says so
                self._count(transceiver.receiver, listed["track_id"])
        applied = await self.room.subscriber_answer(
            self.peer, self.pc.localDescription.sdp, offer["offer_id"]
        )
        assert applied

    def _count(self, receiver: RTCRtpReceiver, track_id: str) -> None:
        if track_id in self.packets:
            return
        self.packets[track_id] = 0

        def sink(frame: bytes, timestamp: int) -> None:
            self.packets[track_id] += 1

        hooks.tap_receiver(receiver, sink)


def _sending_mids(offer: dict[str, Any]) -> set[str]:
    description = sdp.SessionDescription.parse(offer["sdp"]["sdp"])
    return {str(m.rtp.muxId) for m in description.media if m.direction in ("sendonly", "sendrecv")}


async def test_a_track_published_while_an_offer_is_set_reaches_the_subscriber(
    room: Room,
) -> None:
    recorder = await room.join(
        "recorder", "recorder", MediaGrants(room=MEETING, can_publish=False, recorder=True)
    )
    viewer = Viewer(room, recorder)
    publishers: list[RTCPeerConnection] = []
    late: list[str] = []

    new_subscriber_pc = room._new_subscriber_pc

    def subscriber_pc(peer: Peer) -> RTCPeerConnection:
        pc = new_subscriber_pc(peer)
        set_offer = pc.setLocalDescription

        async def set_offer_while_another_publishes(description: RTCSessionDescription) -> None:
            if not late:  # once: the second participant arrives while the first offer is set
                second_pc, second = await _publish(room, "second")
                publishers.append(second_pc)
                late.extend(second)
            await set_offer(description)

        pc.setLocalDescription = set_offer_while_another_publishes  # type: ignore[method-assign]
        return pc

    room._new_subscriber_pc = subscriber_pc  # type: ignore[method-assign]
    first_pc, first = await _publish(room, "first")
    publishers.append(first_pc)
    try:
        assert await eventually(lambda: len(viewer.offers) >= 1, 10)
        assert len(late) == 2
        # The first offer lists only what it carries: the first participant's tracks.
        offer = viewer.offers[0]
        assert {t["track_id"] for t in offer["tracks"]} == set(first)
        assert {str(t["mid"]) for t in offer["tracks"]} <= _sending_mids(offer)
        # Its answer brings the next offer, with the second participant's tracks too.
        assert await eventually(lambda: len(viewer.offers) >= 2, 10), [
            o["tracks"] for o in viewer.offers
        ]
        assert {t["track_id"] for t in viewer.offers[1]["tracks"]} == set(first + late)
        everything = set(first + late)
        assert await eventually(
            lambda: (
                set(viewer.packets) == everything and all(n >= 5 for n in viewer.packets.values())
            ),
            20,
        ), viewer.packets
    finally:
        await viewer.close(publishers)


async def test_a_track_ended_while_an_offer_is_set_leaves_the_next_offer(room: Room) -> None:
    """The other half: an unsubscribe in that moment (a participant leaving) reaches the
    subscriber too, so it does not go on believing the track exists."""
    peer = await room.join("viewer", "viewer", MediaGrants(room=MEETING, can_publish=False))
    viewer = Viewer(room, peer)
    publishers: list[RTCPeerConnection] = []
    try:
        first_pc, first = await _publish(room, "first")
        second_pc, second = await _publish(room, "second")
        publishers += [first_pc, second_pc]
        assert await eventually(lambda: set(viewer.packets) == set(first + second), 10)

        second_mids = {
            str(t["mid"]) for t in viewer.offers[-1]["tracks"] if t["track_id"] in second
        }
        assert len(second_mids) == 2
        subscriber = peer.subscriber
        assert subscriber is not None
        set_offer = subscriber.setLocalDescription
        left: list[str] = []

        async def set_offer_while_another_leaves(description: RTCSessionDescription) -> None:
            if not left:  # once: the second participant leaves while the next offer is set
                left.append("second")
                await room.leave(room.peer("second"))
            await set_offer(description)

        subscriber.setLocalDescription = set_offer_while_another_leaves  # type: ignore[method-assign]
        offers_before = len(viewer.offers)
        third_pc, third = await _publish(room, "third")  # the change that brings that offer
        publishers.append(third_pc)
        assert await eventually(lambda: len(viewer.offers) >= offers_before + 2, 10), [
            o["tracks"] for o in viewer.offers
        ]
        assert left
        taken, after = viewer.offers[offers_before], viewer.offers[offers_before + 1]
        # The offer was taken before the leave: its SDP still sends the second
        # participant's m-lines (its list, made after, already leaves them out) ...
        assert second_mids <= _sending_mids(taken)
        assert {t["track_id"] for t in taken["tracks"]} == set(first + third)
        # ... and the next offer makes them inactive.
        assert not second_mids & _sending_mids(after)
        assert {t["track_id"] for t in after["tracks"]} == set(first + third)
        assert await eventually(lambda: all(viewer.packets.get(t, 0) >= 5 for t in third), 20)
    finally:
        await viewer.close(publishers)
