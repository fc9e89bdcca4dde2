"""The SFU's per-packet send path, without a network: what each subscriber's socket gets.

The forwarder writes a subscriber's header and the shared body into one reused C buffer
and lets libsrtp protect it in place. These tests decrypt what it hands the datagram
transport and hold it against the plain construction (header packed, body appended,
``pylibsrtp.Session.protect``), byte for byte, for several subscribers in a row.
"""

from __future__ import annotations

import os
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiortc import RTCPeerConnection
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket
from pylibsrtp import Policy, Session

from konfer.sfu import aiortc_hooks as hooks
from konfer.sfu.forwarding import ABS_SEND_TIME_ID, Downstream, PublishedTrack

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
KEYFRAME = bytes([0x10, 0x00]) + os.urandom(900)  # VP8: start of partition 0, key frame
DELTA = bytes([0x10, 0x01]) + os.urandom(700)  # VP8: start of partition 0, inter frame


class Subscriber:
    """One subscriber's keys and the datagrams its transport was handed."""

    def __init__(self, downstream: Downstream, payload_type: int) -> None:
        self.key = os.urandom(30)  # AES_CM_128_HMAC_SHA1_80: 16-byte key, 14-byte salt
        self.downstream = downstream
        self.datagrams: list[tuple[bytes, Any]] = []
        self.decrypt = Session(Policy(key=self.key, ssrc_type=Policy.SSRC_ANY_INBOUND))
        # The plain construction, protected by pylibsrtp's own Session.protect.
        self.reference = Session(Policy(key=self.key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
        sending = Session(Policy(key=self.key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
        path = hooks.srtp_send_path(
            sending, lambda data, addr: self.datagrams.append((data, addr)), ("127.0.0.1", 9),
            lambda: False,
        )  # fmt: skip
        downstream.bind(path, payload_type)


@pytest.fixture
async def pc() -> AsyncIterator[RTCPeerConnection]:
    pc = RTCPeerConnection()
    yield pc
    await pc.close()


def published(pc: RTCPeerConnection, kind: str) -> PublishedTrack:
    transceiver = pc.addTransceiver(kind, direction="recvonly")
    return PublishedTrack(
        track_id=f"{kind}-1", peer_id="publisher", user_id="u", kind=kind,
        source="camera" if kind == "video" else "microphone",
        codec=VP8 if kind == "video" else OPUS, rtx_payload_type=None,
        receiver=transceiver.receiver, keyframe_interval=1.0,
        on_speaking=lambda peer_id: None, on_ended=lambda track: None,
    )  # fmt: skip


def subscribe(pc: RTCPeerConnection, track: PublishedTrack, name: str, pt: int) -> Subscriber:
    transceiver = pc.addTransceiver(track.kind, direction="sendonly")
    return Subscriber(track.attach(transceiver.sender, name), pt)


def rtp(seq: int, ts: int, payload: bytes, marker: bool = False) -> RtpPacket:
    return RtpPacket(
        payload_type=96, marker=int(marker), sequence_number=seq, timestamp=ts,
        ssrc=0x1234, payload=payload,
    )  # fmt: skip


async def test_each_subscriber_gets_its_own_header_and_the_bytes_pylibsrtp_would_send(
    pc: RTCPeerConnection,
) -> None:
    track = published(pc, "video")
    subscribers = [subscribe(pc, track, f"s{i}", 100 + i) for i in range(3)]
    packets = [rtp(500, 9000, KEYFRAME), rtp(501, 9000, DELTA, marker=True), rtp(502, 12000, DELTA)]
    for packet in packets:
        await track.on_rtp(packet, 0)

    for sub in subscribers:
        d = sub.downstream
        assert len(sub.datagrams) == len(packets)
        assert d.packets == len(packets)
        for sent, (datagram, addr) in zip(packets, sub.datagrams, strict=True):
            assert addr == ("127.0.0.1", 9)
            plain = sub.decrypt.unprotect(datagram)  # authenticated with this subscriber's key
            b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", plain[:12])
            assert b0 == 0x90  # version 2 with a header extension (abs-send-time)
            assert b1 == (0x80 if sent.marker else 0) | d.pt
            assert seq == (sent.sequence_number + d.seq_delta) & 0xFFFF
            assert ts == (sent.timestamp + d.ts_delta) & 0xFFFFFFFF
            assert ssrc == d.ssrc
            assert plain[12:16] == b"\xbe\xde\x00\x01"
            assert plain[16] == (ABS_SEND_TIME_ID << 4) | 2
            assert plain[20:] == sent.payload  # the payload, untouched
            assert datagram == sub.reference.protect(plain)  # byte for byte
    ssrcs = {s.downstream.ssrc for s in subscribers}
    assert len(ssrcs) == 3
    assert track.packets_out == 3 * len(packets)


async def test_audio_level_extension_is_rewritten_for_subscribers(pc: RTCPeerConnection) -> None:
    track = published(pc, "audio")
    sub = subscribe(pc, track, "s", 109)
    packet = RtpPacket(payload_type=111, sequence_number=7, timestamp=960, ssrc=0x99)
    packet.payload = os.urandom(80)
    packet.extensions.audio_level = (True, 30)
    await track.on_rtp(packet, 0)
    ((datagram, _),) = sub.datagrams
    plain = sub.decrypt.unprotect(datagram)
    assert plain[0] == 0x90
    assert plain[1] == 109
    assert plain[12:20] == bytes((0xBE, 0xDE, 0, 1, 0x20, 0x80 | 30, 0, 0))
    assert plain[20:] == packet.payload
    assert datagram == sub.reference.protect(plain)


async def test_a_subscriber_whose_protection_fails_is_skipped_and_the_others_still_get_it(
    pc: RTCPeerConnection,
) -> None:
    track = published(pc, "video")
    broken, working = subscribe(pc, track, "a", 100), subscribe(pc, track, "b", 100)
    broken.downstream.srtp = hooks.CLOSED_SRTP  # a session libsrtp has no stream in
    await track.on_rtp(rtp(1, 0, KEYFRAME), 0)
    assert broken.datagrams == []
    assert broken.downstream.packets == 0
    assert len(working.datagrams) == 1
    assert working.decrypt.unprotect(working.datagrams[0][0])[20:] == KEYFRAME
    assert track.packets_out == 1


async def test_video_subscribers_start_at_a_keyframe(pc: RTCPeerConnection) -> None:
    track = published(pc, "video")
    sub = subscribe(pc, track, "s", 100)
    await track.on_rtp(rtp(10, 0, DELTA), 0)
    assert sub.datagrams == []
    await track.on_rtp(rtp(11, 3000, KEYFRAME), 0)
    await track.on_rtp(rtp(12, 6000, DELTA), 0)
    seqs = [struct.unpack("!H", sub.decrypt.unprotect(d)[2:4])[0] for d, _ in sub.datagrams]
    assert len(seqs) == 2
    assert (seqs[1] - seqs[0]) & 0xFFFF == 1
