"""The recorder's subscriber asks again for a keyframe while its file still waits for one.

A real ``konfer sfu`` and an aiortc publisher on loopback; the recorder's
``SfuSubscriber`` joins with a recorder token, as ``konfer recorder`` does. Losing a
keyframe on a busy host is a fault these tests cannot cause on demand, so the file's
"still waiting" answer is given by the test, and what is checked is real: requests
reaching the SFU, PLIs reaching the publisher and keyframes coming back.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver

from konfer.sfu import aiortc_hooks as hooks
from konfer.sfu.recorder import bitstream, sfu_client
from konfer.sfu.recorder.sfu_client import RemoteTrack, SfuSubscriber
from tests.integration.sfu_peers import (
    Keys,
    Participant,
    PatternVideo,
    ToneAudio,
    eventually,
    gather_on_loopback,
    sfu_metric,
    sfu_process,
)

REQUESTS = "konfer_sfu_keyframe_requests_total"


class Tap:
    """What a recorder's on_track does, minus the file: count frames and keyframes."""

    def __init__(self) -> None:
        self.video: str | None = None
        self.frames = 0
        self.keyframes = 0

    def on_track(self, remote: RemoteTrack, receiver: RTCRtpReceiver) -> None:
        if remote.kind != "video":
            hooks.tap_receiver(receiver, lambda frame, ts: None)
            return
        self.video = remote.track_id

        def sink(frame: bytes, timestamp: int) -> None:
            self.frames += 1
            self.keyframes += bitstream.is_keyframe(remote.codec, frame)

        hooks.tap_receiver(receiver, sink)


@pytest.fixture
async def room(tmp_path: Path) -> AsyncIterator[tuple[str, Keys, str, Participant]]:
    gather_on_loopback()
    keys = Keys(tmp_path)
    meeting_id = str(uuid.uuid4())
    async with sfu_process(keys, meeting_id) as base:
        publisher = Participant(base, keys, meeting_id)
        try:
            await publisher.join()
            await publisher.publish(ToneAudio(), PatternVideo())
            yield base, keys, meeting_id, publisher
        finally:
            await publisher.close()


async def _subscribe(
    room: tuple[str, Keys, str, Participant], wanted: sfu_client.KeyframeWanted
) -> tuple[SfuSubscriber, Tap, asyncio.Task[None]]:
    base, keys, meeting_id, _ = room
    token = keys.token(str(uuid.uuid4()), meeting_id, can_publish=False, hidden=True, recorder=True)
    tap = Tap()
    subscriber = SfuSubscriber(base, token, "recorder-test", tap.on_track, keyframe_wanted=wanted)
    await subscriber.join()
    return subscriber, tap, asyncio.create_task(subscriber.run())


async def _stop(subscriber: SfuSubscriber, run: asyncio.Task[None]) -> None:
    run.cancel()
    with contextlib.suppress(asyncio.CancelledError, sfu_client.SfuGone):
        await run
    await subscriber.close()


async def test_a_track_still_waiting_for_its_keyframe_asks_again_until_it_has_one(
    room: tuple[str, Keys, str, Participant], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sfu_client, "KEYFRAME_RETRY_SECONDS", 0.6)  # above the SFU's 0.5 s
    asked: list[str] = []

    def wanted(track_id: str) -> bool:
        asked.append(track_id)
        return len(asked) < 3  # as if the first two keyframes were lost on the way

    http = room[3].http
    sent_before = await sfu_metric(http, REQUESTS, direction="to_publishers")
    subscriber, tap, run = await _subscribe(room, wanted)
    try:
        assert await eventually(lambda: len(asked) >= 3, 15), asked
        assert await eventually(lambda: tap.keyframes >= 3, 5), tap.keyframes
        await asyncio.sleep(1.5)  # then it stops asking: the third check said no
        assert len(asked) == 3
        assert set(asked) == {tap.video}
        sent = await sfu_metric(http, REQUESTS, direction="to_publishers") - sent_before
        # The SFU's own request when the recorder's track went live, then ours.
        assert sent >= 3, sent
    finally:
        await _stop(subscriber, run)


async def test_a_track_with_its_keyframe_asks_once_and_closing_ends_any_retry(
    room: tuple[str, Keys, str, Participant],
) -> None:
    asked: list[str] = []

    def wanted(track_id: str) -> bool:
        asked.append(track_id)
        return False

    subscriber, tap, run = await _subscribe(room, wanted)
    try:
        assert await eventually(lambda: tap.keyframes >= 1 and len(asked) == 1, 15)
        await asyncio.sleep(sfu_client.KEYFRAME_RETRY_SECONDS + 0.5)
        assert len(asked) == 1
    finally:
        await _stop(subscriber, run)

    # A subscriber closed while a retry sleeps ends it rather than calling a closed client.
    subscriber, tap, run = await _subscribe(room, lambda track_id: True)
    assert await eventually(lambda: tap.frames >= 1, 15)
    retries = list(subscriber._background)
    assert retries, "the retry should still be waiting"
    await _stop(subscriber, run)
    await asyncio.sleep(0)
    assert all(task.cancelled() or task.done() for task in retries)
    assert not [t for t in retries if not t.cancelled() and t.exception() is not None]


async def test_giving_up_on_a_keyframe_logs_what_the_track_received(
    room: tuple[str, Keys, str, Participant],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(sfu_client, "KEYFRAME_RETRY_SECONDS", 0.3)
    monkeypatch.setattr(sfu_client, "KEYFRAME_ATTEMPTS", 2)
    caplog.set_level("WARNING", logger=sfu_client.__name__)
    subscriber, tap, run = await _subscribe(room, lambda track_id: True)  # never satisfied
    try:
        assert await eventually(lambda: "no keyframe on track" in caplog.text, 15), caplog.text
        (record,) = [r for r in caplog.records if "no keyframe" in r.getMessage()]
        message = record.getMessage()
        assert f"track {tap.video} after 2 requests" in message
        # Media flowed, so the log tells a lost keyframe from a silent receiver.
        assert "receiver started: True" in message, message
        assert "transport: connected" in message, message
        received = int(message.split("packets received: ")[1].split(",")[0])
        assert received > 0, message
        assert subscriber.receiver_state("unknown") == "no receiver"
        # A receiver aiortc never started (no answer applied yet) reads as such.
        idle = RTCPeerConnection()
        try:
            fresh = idle.addTransceiver("video", direction="recvonly").receiver
            assert hooks.receiver_started(fresh) is False
            assert hooks.receiver_started(subscriber.receivers[tap.video]) is True
        finally:
            await idle.close()
    finally:
        await _stop(subscriber, run)
