"""The composed recording (``grid`` / ``speaker`` layout): decoded, laid out, encoded.

Unlike the per-track file (``muxer``), this one costs real CPU: every video track is
decoded, scaled into a 1280x720 canvas at 15 fps and encoded again (VP8 for WebM, H.264
otherwise), and every microphone is decoded and mixed (FFmpeg's ``adelay`` + ``amix``)
into one Opus (WebM) or AAC track. It runs after the recording stops, from the same
spool files, so it never competes with receiving media; ``session`` calls it, and it
counts the decoders it creates so the report says what the recording cost.

``grid``: every camera in equal tiles. ``speaker``: the current speaker full frame, chosen
per second by Opus bytes (speech frames are several times larger than the comfort-noise
frames of silence), so no audio has to be decoded to choose.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.filter import Graph

from konfer.sfu.recorder.muxer import CONTAINERS, TrackWriter

WIDTH, HEIGHT, FPS = 1280, 720, 15
AUDIO_RATE = 48000
# Video bitrate of the composed file per requested quality (the Recording's spec.quality,
# ``--quality``); the canvas and frame rate stay fixed so players see one shape.
BITRATES = {"low": 600_000, "medium": 1_500_000, "high": 3_000_000}


@dataclass
class ComposeStats:
    decoders: int = 0
    video_frames_out: int = 0
    path: Path | None = None
    format: str = ""
    duration: float = 0.0


def _decoded(track: TrackWriter, base: float, stats: ComposeStats) -> Iterator[tuple[float, Any]]:
    """(seconds on the recording's timeline, decoded frame) of one spool, in order."""
    decoder: Any = av.CodecContext.create(track.codec, "r")
    stats.decoders += 1
    shift = (track.offset or 0.0) - base
    for pts, _key, data in track.frames():
        try:
            frames = decoder.decode(av.Packet(data))
        except av.FFmpegError:
            continue
        for frame in frames:
            yield shift + pts / track.clock_rate, frame


def _speakers(tracks: list[TrackWriter], base: float) -> dict[int, str]:
    """Second → the user who sent the most Opus bytes in it."""
    volume: dict[int, dict[str, int]] = {}
    for t in tracks:
        if t.kind != "audio":
            continue
        shift = (t.offset or 0.0) - base
        for pts, _key, data in t.frames():
            second = int(shift + pts / t.clock_rate)
            per = volume.setdefault(second, {})
            per[t.user_id] = per.get(t.user_id, 0) + len(data)
    return {s: max(per, key=lambda u: per[u]) for s, per in volume.items()}


def _paste(canvas: Any, tile: Any, x0: int, y0: int) -> None:
    """Copy a yuv420p tile into the canvas at (x0, y0) (both even), plane by plane."""
    for index, (dst, src) in enumerate(zip(canvas.planes, tile.planes, strict=True)):
        div = 1 if index == 0 else 2
        width = tile.width // div
        src_bytes = bytes(src)
        dst_view = memoryview(dst).cast("B")
        for row in range(tile.height // div):
            start = (y0 // div + row) * dst.line_size + x0 // div
            dst_view[start : start + width] = src_bytes[
                row * src.line_size : row * src.line_size + width
            ]


def _blank() -> Any:
    frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
    for index, plane in enumerate(frame.planes):
        plane.update(bytes([16 if index == 0 else 128]) * plane.buffer_size)
    return frame


def compose(
    tracks: list[TrackWriter],
    path: Path,
    layout: str,
    requested: str,
    quality: str = "medium",
) -> ComposeStats:
    """Write the composed file next to the per-track one; returns what it cost."""
    stats = ComposeStats()
    started = [t for t in tracks if t.started and t.stats.frames]
    if not started:
        raise ValueError("nothing to compose")
    base = min(t.offset or 0.0 for t in started)
    videos = [t for t in started if t.kind == "video"]
    audios = [t for t in started if t.kind == "audio"]
    fmt = "webm" if requested == "webm" else "mkv" if requested == "mkv" else "mp4"
    path = path.with_suffix(f".{fmt}")
    duration = max((t.offset or 0.0) - base + t.duration for t in started)
    with av.open(str(path), "w", format=CONTAINERS[fmt]) as out:
        vstream: Any = None
        if videos:
            vstream = video_stream(out, fmt, quality)
        astream: Any = None
        if audios:
            astream = out.add_stream("libopus" if fmt == "webm" else "aac", rate=AUDIO_RATE)
            astream.layout = "stereo"
        if vstream is not None:
            _compose_video(out, vstream, videos, audios, layout, base, duration, stats)
        if astream is not None:
            _mix_audio(out, astream, audios, base, stats)
    stats.path, stats.format, stats.duration = path, fmt, duration
    return stats


def video_stream(out: Any, fmt: str, quality: str) -> Any:
    """The composed file's video stream: VP8 for WebM, else H.264, at the bitrate of the
    requested quality (an unknown one is medium)."""
    stream: Any = out.add_stream("libvpx" if fmt == "webm" else "libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    stream.bit_rate = BITRATES.get(quality, BITRATES["medium"])
    stream.codec_context.options = (
        {"deadline": "realtime", "cpu-used": "8"}
        if fmt == "webm"
        else {"preset": "veryfast", "tune": "zerolatency"}
    )
    return stream


def _compose_video(
    out: Any,
    stream: Any,
    videos: list[TrackWriter],
    audios: list[TrackWriter],
    layout: str,
    base: float,
    duration: float,
    stats: ComposeStats,
) -> None:
    sources = [_decoded(t, base, stats) for t in videos]
    pending: list[tuple[float, Any] | None] = [next(s, None) for s in sources]
    latest: list[Any] = [None] * len(videos)
    speakers = _speakers(audios, base) if layout == "speaker" else {}
    cols = math.ceil(math.sqrt(len(videos)))
    rows = math.ceil(len(videos) / cols)
    tile_w, tile_h = (WIDTH // cols) & ~1, (HEIGHT // rows) & ~1
    current = 0
    for n in range(int(duration * FPS) + 1):
        t = n / FPS
        for i, source in enumerate(sources):
            while pending[i] is not None and pending[i][0] <= t:  # type: ignore[index]
                latest[i] = pending[i][1]  # type: ignore[index]
                pending[i] = next(source, None)
        canvas = _blank()
        if layout == "speaker":
            who = speakers.get(int(t))
            for i, track in enumerate(videos):
                if track.user_id == who and latest[i] is not None:
                    current = i
            if latest[current] is not None:
                canvas = latest[current].reformat(WIDTH, HEIGHT, "yuv420p")
        else:
            for i, frame in enumerate(latest):
                if frame is None:
                    continue
                tile = frame.reformat(tile_w, tile_h, "yuv420p")
                _paste(canvas, tile, (i % cols) * tile_w, (i // cols) * tile_h)
        canvas.pts = n
        canvas.time_base = Fraction(1, FPS)
        for packet in stream.encode(canvas):
            out.mux(packet)
        stats.video_frames_out += 1
    for packet in stream.encode(None):
        out.mux(packet)


def _tagged(index: int, frames: Iterator[tuple[float, Any]]) -> Iterator[tuple[float, int, Any]]:
    for at, frame in frames:
        yield at, index, frame


def _mix_audio(
    out: Any, stream: Any, audios: list[TrackWriter], base: float, stats: ComposeStats
) -> None:
    graph = Graph()
    inputs = []
    mix = graph.add("amix", f"inputs={len(audios)}:normalize=0:duration=longest")
    for i, track in enumerate(audios):
        src = graph.add_abuffer(
            format="fltp",
            sample_rate=AUDIO_RATE,
            layout="stereo",
            time_base=Fraction(1, AUDIO_RATE),
        )
        delay = max(0, round(((track.offset or 0.0) - base) * 1000))
        pad = graph.add("adelay", f"delays={delay}|{delay}")
        src.link_to(pad)
        pad.link_to(mix, 0, i)
        inputs.append(src)
    sink = graph.add("abuffersink")
    fmt = graph.add(
        "aformat", f"sample_fmts={'fltp'}:sample_rates={AUDIO_RATE}:channel_layouts=stereo"
    )
    mix.link_to(fmt)
    fmt.link_to(sink)
    graph.configure()
    resamplers = [
        av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE) for _ in audios
    ]
    fifo = av.AudioFifo()
    frame_size = stream.codec_context.frame_size or 960
    written = 0

    def drain() -> None:
        nonlocal written
        while True:
            try:
                mixed = sink.pull()
            except (av.BlockingIOError, av.EOFError):
                break
            assert isinstance(mixed, av.AudioFrame)
            mixed.pts = None
            fifo.write(mixed)
        while fifo.samples >= frame_size:
            chunk = fifo.read(frame_size)
            if chunk is None:
                break
            chunk.pts = written
            chunk.time_base = Fraction(1, AUDIO_RATE)
            written += frame_size
            for packet in stream.encode(chunk):
                out.mux(packet)

    streams = [_tagged(i, _decoded(t, base, ComposeStats())) for i, t in enumerate(audios)]
    stats.decoders += len(audios)
    next_pts = [0] * len(audios)
    for _at, i, frame in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
        for converted in resamplers[i].resample(frame):
            converted.pts = next_pts[i]
            converted.time_base = Fraction(1, AUDIO_RATE)
            next_pts[i] += converted.samples
            inputs[i].push(converted)
        drain()
    for src in inputs:
        src.push(None)
    drain()
    for packet in stream.encode(None):
        out.mux(packet)
