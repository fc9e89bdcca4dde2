"""What a recorder leaves behind: its one-line summary for Kubernetes, and where its file ends."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from konfer.core.settings import Settings
from konfer.core.storage import LocalStorage
from konfer.sfu.recorder import session
from konfer.sfu.recorder.muxer import TrackWriter
from konfer.sfu.recorder.session import (
    Outcome,
    Recorder,
    RecorderOptions,
    Reporter,
    write_termination_log,
)
from tests import media_samples


def test_termination_log_is_one_json_line_the_operator_can_mirror(tmp_path: Path) -> None:
    path = tmp_path / "termination-log"
    outcome = Outcome("failed", "UPLOAD_FAILED after 5 attempts", None, 1234, 5.0126, "/x")
    write_termination_log(path, outcome)
    text = path.read_text()
    assert text.count("\n") == 1
    assert json.loads(text) == {
        "phase": "failed",
        "reason": "UPLOAD_FAILED after 5 attempts",
        "objectKey": None,
        "sizeBytes": 1234,
        "durationSeconds": 5.013,
    }


def test_termination_log_is_skipped_where_there_is_no_such_folder(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "termination-log"
    write_termination_log(path, Outcome("completed", None, "recordings/m/r.webm", 1, 1.0))
    assert not path.exists()


@pytest.mark.parametrize(
    ("stop_at", "duration"),
    [
        (3.0, 2.5),  # asked 1 s before the recorder heard it: the file ends at the request
        (3.9, 3.4),  # asked just before: still cut there
        (-2.0, 3.5),  # the api's clock is far behind (skew, or a stop from elsewhere): no cut
        (4.5, 3.5),  # "asked" after the recorder stopped: a skewed clock, no cut
    ],
)
async def test_a_stop_cuts_the_file_at_the_moment_it_was_asked_for(
    tmp_path: Path, stop_at: float, duration: float
) -> None:
    settings = Settings(public_url="http://127.0.0.1:9")
    options = RecorderOptions(recording_id="r", meeting_id="m", sfu_url="http://127.0.0.1:9")
    recorder = Recorder(settings, options, "token", LocalStorage(tmp_path / "store"))
    track = TrackWriter(
        tmp_path / "a.spool", "a", "user", "microphone", "audio", "opus", 48000, recorder.t0
    )
    recorder.writers["a"] = track
    for i in range(176):  # 3.5 s of 20 ms frames, sent and received from t0 + 0.5
        track.write(b"\xfc" + bytes(40), i * 960, recorder.t0 + 0.5 + i * 0.02)
    track.close()
    recorder.reporter = Reporter(settings, "r", "token")
    try:
        recorder.reporter.stop_at = recorder.t0_wall + stop_at
        recorder._cut_at_stop_request(recorder.t0 + 4.0)  # when the recorder heard the stop
    finally:
        await recorder.reporter.close()
    assert abs(recorder.duration() - duration) < 0.021, recorder.duration()
    assert recorder.report("finalizing")["started_at"] == pytest.approx(recorder.t0_wall + 0.5)


async def test_a_video_track_awaits_its_keyframe_until_its_file_starts(tmp_path: Path) -> None:
    settings = Settings(public_url="http://127.0.0.1:9")
    options = RecorderOptions(recording_id="r", meeting_id="m", sfu_url="http://127.0.0.1:9")
    recorder = Recorder(settings, options, "token", LocalStorage(tmp_path / "store"))
    video = TrackWriter(tmp_path / "v.spool", "v", "user", "camera", "video", "vp8", 90000, 0.0)
    audio = TrackWriter(
        tmp_path / "a.spool", "a", "user", "microphone", "audio", "opus", 48000, 0.0
    )
    recorder.writers.update({"v": video, "a": audio})
    keyframe, delta = media_samples.video_packets("vp8", 2)
    assert not recorder.awaiting_keyframe("a")  # audio starts with any frame
    assert not recorder.awaiting_keyframe("unknown")
    assert recorder.awaiting_keyframe("v")
    assert not video.write(delta, 3000, 0.1)  # a lost keyframe: the delta is skipped
    assert recorder.awaiting_keyframe("v")
    assert video.write(keyframe, 6000, 0.2)
    assert not recorder.awaiting_keyframe("v")
    video.close()

    # After a rejoin the same track id is a new stream with a writer of its own.
    recorder._epoch += 1
    assert not recorder.awaiting_keyframe("v")
    again = TrackWriter(tmp_path / "v2.spool", "v", "user", "camera", "video", "vp8", 90000, 0.0)
    recorder.writers["v#1"] = again
    assert recorder.awaiting_keyframe("v")
    recorder.stopping.set()
    assert not recorder.awaiting_keyframe("v")  # stopping: nothing more to ask for


def _late_recorder(tmp_path: Path, settings: Settings) -> tuple[Recorder, TrackWriter]:
    """A recorder 3 s in, whose microphone track fell 0.6 s behind its sender at 1.5 s."""
    options = RecorderOptions(recording_id="r", meeting_id="m", sfu_url="http://127.0.0.1:9")
    now, wall = time.monotonic(), time.time()
    recorder = Recorder(
        settings, options, "token", LocalStorage(tmp_path / "store"), t0=now - 3, t0_wall=wall - 3
    )
    track = TrackWriter(
        tmp_path / "a.spool", "a", "user", "microphone", "audio", "opus", 48000, recorder.t0
    )
    recorder.writers["a"] = track
    for i in range(96):  # frames sent from t0 + 0.5 every 20 ms, arriving then 0.6 s late
        delay = 0.05 if i < 50 else 0.6
        track.write(b"\xfc" + bytes(40), i * 960, recorder.t0 + 0.5 + i * 0.02 + delay)
    recorder.reporter = Reporter(settings, "r", "token")
    recorder.reporter.stop_at = wall - 0.1  # asked 0.1 s before the recorder heard it
    return recorder, track


async def test_a_stop_keeps_the_media_sent_before_it_that_is_still_on_its_way(
    tmp_path: Path,
) -> None:
    settings = Settings(public_url="http://127.0.0.1:9")
    recorder, track = _late_recorder(tmp_path, settings)
    # A track that fell silent long before the stop is not waited for.
    muted = TrackWriter(
        tmp_path / "b.spool", "b", "user", "camera", "audio", "opus", 48000, recorder.t0
    )
    recorder.writers["b"] = muted
    muted.write(b"\xfc" + bytes(40), 0, recorder.t0 + 0.1)

    async def deliver() -> None:
        """The rest arrives in real time, each frame 0.6 s after it was sent."""
        i = 96
        while True:
            arrival = recorder.t0 + 0.5 + i * 0.02 + 0.6
            await asyncio.sleep(max(0.0, arrival - time.monotonic()))
            track.write(b"\xfc" + bytes(40), i * 960, time.monotonic())
            i += 1

    heard = time.monotonic()
    until = 2.9  # the stop request, in seconds after t0
    assert track.end < until - 0.4  # without waiting, the file would end 0.45 s early
    delivering = asyncio.create_task(deliver())
    try:
        await recorder._drain(heard)
    finally:
        delivering.cancel()
        await recorder.reporter.close()
    waited = time.monotonic() - heard
    assert track.end >= until - 0.001, track.end
    assert waited < session.STOP_DRAIN_SECONDS, waited  # not held by the silent track
    recorder._cut_at_stop_request(heard)
    track.close()
    muted.close()
    assert track.offset is not None
    assert abs(track.offset + track.duration - until) < 0.021  # and what came after is cut
    assert recorder.duration() == pytest.approx(until - 0.1, abs=0.021)


async def test_a_stop_waits_for_late_media_only_so_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session, "STOP_DRAIN_SECONDS", 0.3)
    settings = Settings(public_url="http://127.0.0.1:9")
    recorder, track = _late_recorder(tmp_path, settings)
    heard = time.monotonic()
    try:
        await recorder._drain(heard)  # nothing more arrives: the publisher has left
    finally:
        await recorder.reporter.close()
    assert 0.3 <= time.monotonic() - heard < 1.5
    end = track.end
    recorder._cut_at_stop_request(heard)
    track.close()
    assert recorder.duration() == pytest.approx(end - track.offset, abs=0.001)


async def test_a_stop_from_elsewhere_is_not_drained(tmp_path: Path) -> None:
    settings = Settings(public_url="http://127.0.0.1:9")
    recorder, track = _late_recorder(tmp_path, settings)
    assert recorder.reporter is not None
    recorder.reporter.stop_at = None  # the meeting ended, or the time limit: no request
    heard = time.monotonic()
    try:
        await recorder._drain(heard)
    finally:
        await recorder.reporter.close()
    assert time.monotonic() - heard < 0.1
    track.close()
