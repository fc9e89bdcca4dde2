"""The recorder's stream copy: encoded frames in, a playable file out, no decoder used."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import av
import pytest

from konfer.sfu.recorder import bitstream
from konfer.sfu.recorder.muxer import TrackWriter, assemble, choose_format
from tests import media_samples


def _opus_frames(n: int) -> list[bytes]:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate = 48000
    enc.layout = "stereo"
    enc.format = "s16"
    enc.time_base = Fraction(1, 48000)
    out: list[bytes] = []
    for i in range(n):
        frame = av.AudioFrame(format="s16", layout="stereo", samples=960)
        frame.planes[0].update(bytes(960 * 4))
        frame.pts = i * 960
        frame.sample_rate = 48000
        out += [bytes(p) for p in enc.encode(frame)]
    return out


def _writer(tmp: Path, name: str, kind: str, codec: str, t0: float) -> TrackWriter:
    rate = 48000 if kind == "audio" else 90000
    return TrackWriter(tmp / f"{name}.mkv", name, "user", "camera", kind, codec, rate, t0)


@pytest.mark.parametrize(
    ("codec", "requested", "expected"),
    [
        ("vp8", "webm", "webm"),
        ("vp8", "mp4", "webm"),
        ("h264", "mp4", "mkv"),
        ("h264", "mkv", "mkv"),
    ],
)
def test_tracks_are_copied_into_one_file_with_rtp_timing(
    tmp_path: Path, codec: str, requested: str, expected: str
) -> None:
    t0 = time.monotonic()
    video = _writer(tmp_path, "v", "video", codec, t0)
    audio = _writer(tmp_path, "a", "audio", "opus", t0)
    frames = media_samples.video_packets(codec, 60)
    base = 0xFFFF0000  # the RTP clock wraps during the recording
    # The first frame is not a keyframe: the writer waits for one.
    assert not video.write(frames[1], base, t0) or bitstream.is_keyframe(codec, frames[1])
    for i, f in enumerate(frames):
        video.write(f, (base + i * 3000) & 0xFFFFFFFF, t0)
    for i, f in enumerate(_opus_frames(100)):
        audio.write(f, (base + i * 960) & 0xFFFFFFFF, t0)
    video.close()
    audio.close()
    assert (video.width, video.height) == (176, 144)
    result = assemble([video, audio], tmp_path / "out", requested)
    assert result.format == expected
    assert result.path.suffix == f".{expected}"
    with av.open(str(result.path)) as c:
        codecs = sorted(s.codec_context.name for s in c.streams)
        assert codecs == sorted([codec, "opus"])
        assert c.duration is not None
        assert abs(c.duration / 1e6 - 2.0) < 0.1
        decoded = sum(1 for _ in c.decode(video=0))
        assert decoded == len(frames)
    assert abs(result.duration - 2.0) < 0.1


def test_video_only_h264_goes_into_mp4(tmp_path: Path) -> None:
    video = _writer(tmp_path, "v", "video", "h264", time.monotonic())
    for i, f in enumerate(media_samples.video_packets("h264", 30)):
        video.write(f, i * 3000)
    video.close()
    result = assemble([video], tmp_path / "out", "mp4")
    assert result.format == "mp4"
    with av.open(str(result.path)) as c:
        assert [s.codec_context.name for s in c.streams] == ["h264"]
        assert sum(1 for _ in c.decode(video=0)) == 30


def test_mp4_request_with_vp8_is_never_transcoded_to_fit() -> None:
    assert choose_format("mp4", {"vp8", "opus"}) == "webm"
    assert choose_format("webm", {"h264", "opus"}) == "mkv"
    assert choose_format("mkv", {"vp8", "opus"}) == "mkv"
    assert choose_format("mp4", {"h264"}) == "mp4"


@pytest.mark.parametrize("size", [(176, 144), (320, 240), (1280, 720), (642, 362)])
def test_picture_size_is_read_from_keyframes_without_decoding(size: tuple[int, int]) -> None:
    for codec in ("vp8", "h264"):
        first = media_samples.video_packets(codec, 1, size)[0]
        assert bitstream.is_keyframe(codec, first)
        assert bitstream.picture_size(codec, first) == size


@pytest.mark.parametrize("layout", ["grid", "speaker"])
def test_composed_recording_lays_out_every_camera_and_mixes_audio(
    tmp_path: Path, layout: str
) -> None:
    from konfer.sfu.recorder.compose import compose

    t0 = time.monotonic()
    tracks: list[TrackWriter] = []
    for n in range(3):
        video = _writer(tmp_path, f"v{n}", "video", "vp8", t0)
        video.user_id = f"user{n}"
        for i, f in enumerate(media_samples.video_packets("vp8", 45)):
            video.write(f, i * 3000, t0 + n * 0.2)
        audio = _writer(tmp_path, f"a{n}", "audio", "opus", t0)
        audio.user_id = f"user{n}"
        for i, f in enumerate(_opus_frames(75)):
            audio.write(f, i * 960, t0 + n * 0.2)
        video.close()
        audio.close()
        tracks += [video, audio]
    stats = compose(tracks, tmp_path / "composed", layout, "webm")
    assert stats.decoders == 6  # the composed file decodes every track, and says so
    assert stats.path is not None
    with av.open(str(stats.path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.name, v.codec_context.width, v.codec_context.height) == (
            "vp8",
            1280,
            720,
        )
        assert a.codec_context.name == "opus"
        assert c.duration is not None
        assert abs(c.duration / 1e6 - 1.9) < 0.3


def test_a_track_is_placed_by_its_least_delayed_frame_not_its_first(tmp_path: Path) -> None:
    """First frames that arrive late in a burst must not stretch the file past real time."""
    t0 = time.monotonic()
    video = _writer(tmp_path, "v", "video", "vp8", t0)
    audio = _writer(tmp_path, "a", "audio", "opus", t0)
    # Both were sent from t0 + 1.0 for 2 s. The first 0.4 s of video reached the recorder
    # in one burst at t0 + 1.5; everything else arrived 10 ms after it was sent.
    for i, f in enumerate(media_samples.video_packets("vp8", 60)):
        sent = 1.0 + i / 30
        video.write(f, i * 3000, t0 + max(1.5, sent + 0.01) if i < 12 else t0 + sent + 0.01)
    for i, f in enumerate(_opus_frames(100)):
        audio.write(f, i * 960, t0 + 1.0 + i * 0.02 + 0.01)
    video.close()
    audio.close()
    assert video.offset is not None
    assert audio.offset is not None
    assert abs(video.offset - 1.01) < 0.005
    assert abs(audio.offset - 1.01) < 0.005
    result = assemble([video, audio], tmp_path / "out", "webm")
    assert abs(result.duration - 2.0) < 0.05  # anchoring on the burst would give 2.5 s
    with av.open(str(result.path)) as c:
        assert c.duration is not None
        assert abs(c.duration / 1e6 - 2.0) < 0.05


def test_trim_ends_every_track_at_the_stop_request(tmp_path: Path) -> None:
    t0 = time.monotonic()
    video = _writer(tmp_path, "v", "video", "vp8", t0)
    audio = _writer(tmp_path, "a", "audio", "opus", t0)
    frames = media_samples.video_packets("vp8", 90)
    for i, f in enumerate(frames):
        video.write(f, i * 3000, t0 + 0.5 + i / 30)
    for i, f in enumerate(_opus_frames(150)):
        audio.write(f, i * 960, t0 + 0.5 + i * 0.02)
    video.close()
    audio.close()
    for track in (video, audio):
        track.trim(2.5)  # the stop came at t0 + 2.5; the recorder heard it at t0 + 3.5
    assert abs(video.duration - 2.0) < 0.04
    assert abs(audio.duration - 2.0) < 0.03
    result = assemble([video, audio], tmp_path / "out", "webm")
    assert abs(result.duration - 2.0) < 0.04
    with av.open(str(result.path)) as c:
        assert c.duration is not None
        assert abs(c.duration / 1e6 - 2.0) < 0.05
        kept = sum(1 for _ in c.decode(video=0))
        assert kept == 61  # frames 0..60: the cut keeps what was sent up to the stop
