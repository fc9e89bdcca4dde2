"""The SFU's reach into aiortc: fails loudly when the pinned aiortc changes under it."""

from __future__ import annotations

import aioice.ice
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import pytest
from aiortc import AudioStreamTrack, RTCPeerConnection
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from konfer.sfu import aiortc_hooks as hooks
from konfer.sfu.forwarding import is_keyframe_start


def test_installed_aiortc_is_the_one_the_hooks_were_written_for() -> None:
    problems = hooks.check_compatibility()
    assert problems == [], (
        "aiortc/aioice changed under konfer.sfu.aiortc_hooks; review every hooked member, "
        "then refresh SOURCE_FINGERPRINTS with current_fingerprints():\n" + "\n".join(problems)
    )


async def test_live_receivers_and_senders_have_every_hooked_member() -> None:
    pc = RTCPeerConnection()
    try:
        transceiver = pc.addTransceiver("video")
        assert hooks.missing_attributes(transceiver.receiver, hooks.RECEIVER_ATTRIBUTES) == []
        assert hooks.missing_attributes(transceiver.sender, hooks.SENDER_ATTRIBUTES) == []
        transport = transceiver.sender.transport
        assert hasattr(transport, "_tx_srtp")
        assert hasattr(transport.transport._connection, "_nominated")
        assert isinstance(hooks.transceiver_codecs(transceiver), list)
        track = AudioStreamTrack()
        hooks.set_track_id(track, "sfu-track")
        assert track.id == "sfu-track"
    finally:
        await pc.close()


async def test_ice_hosts_setting_makes_aioice_gather_on_loopback_only() -> None:
    hooks.set_ice_hosts(["127.0.0.1"])
    try:
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1"]
        connection = aioice.ice.Connection(ice_controlling=True)
        await connection.gather_candidates()
        assert {c.host for c in connection.local_candidates} == {"127.0.0.1"}
        await connection.close()
    finally:
        hooks.set_ice_hosts(None)
    assert aioice.ice.get_host_addresses is hooks._original_get_host_addresses


def test_codec_guard_counts_and_refuses_decoders_and_encoders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Keep the test process's own codecs: the guard is for the SFU process only.
    monkeypatch.setattr(aiortc.rtcrtpreceiver, "get_decoder", aiortc.rtcrtpreceiver.get_decoder)
    monkeypatch.setattr(aiortc.rtcrtpsender, "get_encoder", aiortc.rtcrtpsender.get_encoder)
    guard = hooks.CodecGuard()
    guard.install()
    vp8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
    with pytest.raises(RuntimeError, match="must not decode"):
        aiortc.rtcrtpreceiver.get_decoder(vp8)
    with pytest.raises(RuntimeError, match="must not decode or encode"):
        aiortc.rtcrtpsender.get_encoder(vp8)
    assert guard.attempts == 2


@pytest.mark.parametrize(
    ("codec", "payload", "expected"),
    [
        # VP8: descriptor S=1 PID=0, payload header P bit 0 = keyframe
        ("VP8", bytes([0x10, 0x00, 0x9D]), True),
        ("VP8", bytes([0x10, 0x01, 0x00]), False),  # inter frame
        ("VP8", bytes([0x00, 0x00]), False),  # continuation packet
        # extended descriptor with a 15-bit picture id, then a keyframe header
        ("VP8", bytes([0x90, 0x80, 0x81, 0x23, 0x00]), True),
        ("VP8", bytes([0x90, 0x80, 0x81, 0x23, 0x01]), False),
        # H.264: IDR, SPS, non-IDR slice, FU-A start of an IDR, STAP-A with SPS
        ("H264", bytes([0x65, 0x88]), True),
        ("H264", bytes([0x67, 0x42]), True),
        ("H264", bytes([0x41, 0x9A]), False),
        ("H264", bytes([0x7C, 0x85, 0x00]), True),
        ("H264", bytes([0x7C, 0x05, 0x00]), False),
        ("H264", bytes([0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xCE]), True),
    ],
)
def test_keyframe_starts_are_recognised_without_decoding(
    codec: str, payload: bytes, expected: bool
) -> None:
    assert is_keyframe_start(codec, payload) is expected
