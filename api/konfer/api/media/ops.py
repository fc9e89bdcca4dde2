"""The media work itself, with PyAV: probe, transcode, extract, merge, thumbnail.

Blocking functions on local files (or, for ``probe``, any seekable file object), run in
a thread: by the upload path (``probe`` only, which demuxes headers and decodes at most a
few packets) and by the job worker (everything else). Long operations report progress
through a callback that may raise ``Cancelled`` to stop them.

Everything runs on PyAV's bundled FFmpeg (libx264, libx265, libvpx, libopus, libmp3lame,
the native AAC/Vorbis/FLAC encoders and libavfilter's ``fps``, ``scale``, ``pad``,
``xfade``, ``acrossfade`` and ``concat``); nothing here needs Debian's ``ffmpeg``. The one
gap is Vorbis: PyAV's FFmpeg has no libvorbis, so Ogg/WebM Vorbis uses FFmpeg's native
encoder (marked experimental, stereo only), which is why Vorbis output is always stereo.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, cast

import av
import av.filter
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from PIL import Image, ImageOps

from konfer.api.media.plans import (
    AUDIO_ENCODERS as AUDIO_ENCODERS,
)
from konfer.api.media.plans import (
    CODEC_NAMES as CODEC_NAMES,
)
from konfer.api.media.plans import (
    CONTAINER_CODECS as CONTAINER_CODECS,
)
from konfer.api.media.plans import (
    MAX_DIMENSION as MAX_DIMENSION,
)
from konfer.api.media.plans import (
    MUXERS as MUXERS,
)
from konfer.api.media.plans import (
    PRESETS as PRESETS,
)
from konfer.api.media.plans import (
    VIDEO_ENCODERS as VIDEO_ENCODERS,
)
from konfer.api.media.plans import (
    AudioInfo as AudioInfo,
)
from konfer.api.media.plans import (
    AudioPlan as AudioPlan,
)
from konfer.api.media.plans import (
    Cancelled as Cancelled,
)
from konfer.api.media.plans import (
    MediaError as MediaError,
)
from konfer.api.media.plans import (
    MediaInfo as MediaInfo,
)
from konfer.api.media.plans import (
    OutputPlan as OutputPlan,
)
from konfer.api.media.plans import (
    VideoInfo as VideoInfo,
)
from konfer.api.media.plans import (
    VideoPlan as VideoPlan,
)
from konfer.api.media.plans import (
    default_plan as default_plan,
)
from konfer.api.media.plans import (
    estimate_seconds as estimate_seconds,
)

Progress = Callable[[float], None]
Source = str | Path | IO[bytes] | io.RawIOBase


def _rate(stream: VideoStream) -> Fraction | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < rate <= 1000:
            return Fraction(rate)
    return None


def _duration(container: InputContainer) -> float | None:
    if container.duration and container.duration > 0:
        return float(container.duration / av.time_base)
    best = 0.0
    for stream in container.streams:
        if stream.duration and stream.time_base:
            best = max(best, float(stream.duration * stream.time_base))
    return best or None


def _first_frame_decodes(container: InputContainer, stream: Any, max_packets: int = 64) -> bool:
    for seen, packet in enumerate(container.demux(stream), start=1):
        try:
            if packet.decode():
                return True
        except (av.InvalidDataError, ValueError):
            pass
        if seen >= max_packets:
            break
    return False


def probe(source: Source, check_decode: bool = True) -> MediaInfo:
    """Container, duration, bitrate and the first video and audio stream of a file.

    With ``check_decode`` the first decodable stream must yield a frame within a few
    packets, so a file with valid headers and garbage after them is refused.
    """
    try:
        container = av.open(
            str(source) if isinstance(source, Path) else source,
            "r",
            options={"probesize": str(8 * 1024 * 1024), "analyzeduration": "5000000"},
        )
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise MediaError(f"not readable media: {exc}") from exc
    with container:
        assert isinstance(container, InputContainer)
        video: VideoInfo | None = None
        audio: AudioInfo | None = None
        first: Any = None
        for vs in container.streams.video:
            ctx = vs.codec_context
            if vs.disposition & av.stream.Disposition.attached_pic or not ctx.width:
                continue  # cover art in an audio file is not video
            rate = _rate(vs)
            video = VideoInfo(
                codec=CODEC_NAMES.get(ctx.name, ctx.name),
                width=ctx.width,
                height=ctx.height,
                frame_rate=round(float(rate), 3) if rate else None,
            )
            first = vs
            break
        for aus in container.streams.audio:
            actx = aus.codec_context
            if not actx.sample_rate:
                continue
            audio = AudioInfo(
                codec=CODEC_NAMES.get(actx.name, actx.name),
                sample_rate=actx.sample_rate,
                channels=actx.channels,
            )
            first = first or aus
            break
        if video is None and audio is None:
            raise MediaError("no audio or video stream found")
        duration = _duration(container)
        bitrate = container.bit_rate or None
        if check_decode:
            try:
                ok = _first_frame_decodes(container, first)
            except (av.FFmpegError, ValueError, OSError) as exc:
                raise MediaError(f"stream does not decode: {exc}") from exc
            if not ok:
                raise MediaError("no frame could be decoded")
        return MediaInfo(
            demuxer=container.format.name,
            duration=round(duration, 3) if duration else None,
            bitrate=int(bitrate) if bitrate else None,
            video=video,
            audio=audio,
        )


def probe_image(source: Source, max_pixels: int = 100_000_000) -> tuple[str, int, int]:
    """Pillow's format name and size of an image, after checking it reads through."""
    try:
        with Image.open(cast(IO[bytes], source)) as img:
            fmt, (width, height) = str(img.format), img.size
            if width * height > max_pixels:
                raise MediaError("image dimensions are too large")
            img.verify()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaError(f"not a readable image: {exc}") from exc
    return fmt, width, height


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def output_size(in_w: int, in_h: int, plan: VideoPlan) -> tuple[int, int]:
    """Requested size; a height alone keeps the aspect ratio; dimensions are even."""
    if plan.width and plan.height:
        return _even(plan.width), _even(plan.height)
    if plan.height:
        return _even(in_w * plan.height / in_h), _even(plan.height)
    if plan.width:
        return _even(plan.width), _even(in_h * plan.width / in_w)
    return _even(in_w), _even(in_h)


def _video_options(codec: str, plan: VideoPlan) -> dict[str, str]:
    preset = plan.preset if plan.preset in PRESETS else "medium"
    if codec in ("h264", "h265"):
        opts = {"preset": preset}
        if plan.bitrate is None:
            opts["crf"] = str(plan.crf if plan.crf is not None else (23 if codec == "h264" else 28))
        if codec == "h265":
            opts["x265-params"] = "log-level=error"
        return opts
    # libvpx: speed from the x264-style preset name.
    speed = {
        "ultrafast": ("realtime", "8"),
        "superfast": ("realtime", "7"),
        "veryfast": ("realtime", "6"),
        "faster": ("good", "5"),
        "fast": ("good", "5"),
        "medium": ("good", "4"),
        "slow": ("good", "2"),
        "slower": ("good", "1"),
    }[preset]
    opts = {"deadline": speed[0], "cpu-used": speed[1], "auto-alt-ref": "0"}
    if codec == "vp9":
        opts["row-mt"] = "1"
        if plan.bitrate is None:
            opts["crf"] = str(plan.crf if plan.crf is not None else 33)
            opts["b"] = "0"
    return opts


def _audio_rate(codec: str, in_rate: int) -> int:
    if codec == "opus":
        return 48000
    if codec in ("mp3", "aac", "vorbis") and in_rate not in (32000, 44100, 48000):
        return 48000 if in_rate > 44100 else 44100
    return in_rate


class _VideoOut:
    """Decoded frames in, through fps/scale/pad filters, encoded packets out."""

    def __init__(
        self, out: OutputContainer, vin: VideoStream, plan: VideoPlan, fps: Fraction
    ) -> None:
        ctx = vin.codec_context
        self.width, self.height = output_size(ctx.width, ctx.height, plan)
        self.fps = fps
        self.out = out
        encoder = VIDEO_ENCODERS[plan.codec]
        self.stream = cast(
            VideoStream,
            out.add_stream(encoder, rate=fps, options=_video_options(plan.codec, plan)),
        )
        self.stream.width, self.stream.height = self.width, self.height
        self.stream.pix_fmt = "yuv420p"
        self.stream.codec_context.time_base = 1 / fps
        if plan.bitrate:
            self.stream.bit_rate = plan.bitrate
        elif plan.codec == "vp8":
            self.stream.bit_rate = int(
                min(8e6, max(2e5, self.width * self.height * float(fps) * 0.08))
            )
        self.graph = av.filter.Graph()
        self.source = self.graph.add_buffer(template=vin)
        chain = [
            ("fps", f"fps={fps.numerator}/{fps.denominator}"),
            ("scale", f"{self.width}:{self.height}:force_original_aspect_ratio=decrease"),
            ("pad", f"{self.width}:{self.height}:(ow-iw)/2:(oh-ih)/2"),
            ("setsar", "1"),
            ("format", "yuv420p"),
        ]
        previous = self.source
        for name, args in chain:
            node = self.graph.add(name, args)
            previous.link_to(node)
            previous = node
        self.sink = self.graph.add("buffersink")
        previous.link_to(self.sink)
        self.graph.configure()
        self.frames = 0

    def push(self, frame: VideoFrame | None) -> None:
        self.source.push(frame)
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                frame = self.sink.pull()
            except (av.BlockingIOError, av.EOFError):
                return
            assert isinstance(frame, VideoFrame)
            self.encode(frame)

    def encode(self, frame: VideoFrame | None) -> None:
        if frame is not None:
            self.frames += 1
        for packet in self.stream.encode(frame):
            self.out.mux(packet)

    def close(self) -> None:
        self.push(None)
        self.encode(None)


class _AudioOut:
    """Decoded frames in (any format, rate, layout), encoded packets out."""

    def __init__(self, out: OutputContainer, in_rate: int, channels: int, plan: AudioPlan) -> None:
        encoder = AUDIO_ENCODERS[plan.codec]
        options = {"strict": "experimental"} if plan.codec == "vorbis" else {}
        rate = _audio_rate(plan.codec, in_rate)
        self.stream = cast(AudioStream, out.add_stream(encoder, rate=rate, options=options))
        layout = "mono" if channels == 1 and plan.codec != "vorbis" else "stereo"
        self.stream.layout = layout
        if plan.bitrate:
            self.stream.bit_rate = plan.bitrate
        fmt = self.stream.codec_context.codec.audio_formats
        self.resampler = AudioResampler(
            format=fmt[0].name if fmt else "fltp", layout=layout, rate=rate
        )
        self.out = out
        self.samples = 0
        self.rate = rate

    def push(self, frame: AudioFrame | None) -> None:
        frames = self.resampler.resample(frame)
        for f in frames:
            f.pts = self.samples
            f.time_base = Fraction(1, self.rate)
            self.samples += f.samples
            for packet in self.stream.encode(f):
                self.out.mux(packet)

    def close(self) -> None:
        self.push(None)
        for packet in self.stream.encode(None):
            self.out.mux(packet)


class _Ticker:
    """Calls ``progress`` with a fraction at most every few hundred frames' worth."""

    def __init__(self, progress: Progress, total: float | None, start: float = 0.0) -> None:
        self.progress, self.total, self.start = progress, total, start

    def at(self, seconds: float | None) -> None:
        if seconds is None or not self.total:
            self.progress(self.start)
            return
        self.progress(min(0.99, self.start + max(0.0, seconds) / self.total))


def _decode(container: InputContainer, streams: Sequence[Any]) -> Iterator[Any]:
    """Frames of the given streams in file order; corrupt packets are skipped."""
    for packet in container.demux(list(streams)):
        try:
            frames = packet.decode()
        except av.InvalidDataError:
            continue
        yield from frames


def _open_output(path: str | Path, container: str) -> OutputContainer:
    out = av.open(str(path), "w", format=MUXERS[container])
    assert isinstance(out, OutputContainer)
    return out


def _open_input(path: str | Path) -> InputContainer:
    try:
        inp = av.open(str(path), "r")
    except (av.FFmpegError, OSError) as exc:
        raise MediaError(f"not readable media: {exc}") from exc
    assert isinstance(inp, InputContainer)
    return inp


def _usable_video(inp: InputContainer) -> VideoStream | None:
    for vs in inp.streams.video:
        if not vs.disposition & av.stream.Disposition.attached_pic and vs.codec_context.width:
            return vs
    return None


def transcode(src: str | Path, dst: str | Path, plan: OutputPlan, progress: Progress) -> None:
    """Re-encode ``src`` into ``dst`` as planned (a plan without video drops the video)."""
    with ExitStack() as stack:
        inp = stack.enter_context(_open_input(src))
        vin = _usable_video(inp) if plan.video else None
        ain = inp.streams.audio[0] if plan.audio and inp.streams.audio else None
        if vin is None and ain is None:
            raise MediaError("the input has no stream to write into this output")
        total = _duration(inp)
        out = stack.enter_context(_open_output(dst, plan.container))
        vout = aout = None
        if vin is not None and plan.video is not None:
            fps = Fraction(plan.video.fps) if plan.video.fps else (_rate(vin) or Fraction(30))
            fps = fps.limit_denominator(1001)
            vout = _VideoOut(out, vin, plan.video, fps)
        if ain is not None and plan.audio is not None:
            ctx = ain.codec_context
            aout = _AudioOut(out, ctx.sample_rate, ctx.channels, plan.audio)
        ticker = _Ticker(progress, total)
        decoded = 0
        for frame in _decode(inp, [s for s in (vin, ain) if s is not None]):
            decoded += 1
            if isinstance(frame, VideoFrame):
                assert vout is not None
                vout.push(frame)
            else:
                assert aout is not None
                aout.push(frame)
            if decoded % 16 == 0:
                ticker.at(frame.time)
        if decoded == 0:
            raise MediaError("no frame could be decoded")
        if vout is not None:
            vout.close()
        if aout is not None:
            aout.close()


def remux(src: str | Path, dst: str | Path, container: str, kind: str, progress: Progress) -> str:
    """Copy the first ``kind`` ("video"/"audio") stream into a new file, without
    re-encoding; returns the copied codec's name."""
    with ExitStack() as stack:
        inp = stack.enter_context(_open_input(src))
        stream: Any = _usable_video(inp) if kind == "video" else next(iter(inp.streams.audio), None)
        if stream is None:
            raise MediaError(f"the input has no {kind} stream")
        total = _duration(inp)
        out = stack.enter_context(_open_output(dst, container))
        ostream = out.add_stream_from_template(stream)
        ticker = _Ticker(progress, total)
        count = 0
        for packet in inp.demux(stream):
            if packet.dts is None:
                continue
            packet.stream = ostream
            out.mux(packet)
            count += 1
            if count % 64 == 0 and packet.pts is not None and packet.time_base:
                ticker.at(float(packet.pts * packet.time_base))
        if count == 0:
            raise MediaError(f"the {kind} stream is empty")
        name = str(stream.codec_context.name)
        return CODEC_NAMES.get(name, name)


def copy_compatible(info: MediaInfo, container: str) -> bool:
    """Whether the audio stream can go into ``container`` as it is (no re-encode)."""
    if info.audio is None:
        return False
    return info.audio.codec == CONTAINER_CODECS[container][1][0]


# --- merge -----------------------------------------------------------------------------

MERGE_RATE = 48000


@dataclass(frozen=True, slots=True)
class MergeInput:
    path: Path
    duration: float


def merge(
    inputs: Sequence[MergeInput],
    dst: str | Path,
    plan: OutputPlan,
    transition: str,
    transition_duration: float,
    progress: Progress,
) -> None:
    """Concatenate the inputs, with a cross-fade (``fade``) or a pixel dissolve
    (``dissolve``) of ``transition_duration`` between clips, or none. Video takes the
    first input's size and frame rate (others are scaled and letterboxed); audio is
    resampled to 48 kHz stereo, and an input without audio contributes silence."""
    if len(inputs) < 2:
        raise MediaError("merge needs at least two inputs")
    fade = transition if transition in ("fade", "dissolve") else None
    d = transition_duration if fade else 0.0
    if fade and min(i.duration for i in inputs) <= d:
        raise MediaError("every input must be longer than the transition")
    with ExitStack() as stack:
        opened = [stack.enter_context(_open_input(i.path)) for i in inputs]
        videos = [_usable_video(c) for c in opened]
        want_video = plan.video is not None
        if want_video and any(v is None for v in videos):
            raise MediaError("every input of a video merge needs a video stream")
        out = stack.enter_context(_open_output(dst, plan.container))
        total = sum(i.duration for i in inputs) - d * (len(inputs) - 1)
        vgraph: _MergeVideo | None = None
        if want_video and plan.video is not None:
            first = videos[0]
            assert first is not None
            fps = Fraction(plan.video.fps) if plan.video.fps else (_rate(first) or Fraction(30))
            vgraph = _MergeVideo(
                out,
                [v for v in videos if v is not None],
                [i.duration for i in inputs],
                plan.video,
                fps.limit_denominator(1001),
                fade,
                d,
            )
        agraph: _MergeAudio | None = None
        if plan.audio is not None:
            agraph = _MergeAudio(out, [i.duration for i in inputs], plan.audio, fade, d)
        elapsed = 0.0
        for index, container in enumerate(opened):
            vin = videos[index] if vgraph else None
            ain = container.streams.audio[0] if agraph and container.streams.audio else None
            ticker = _Ticker(progress, total, start=elapsed / total if total else 0.0)
            decoded = 0
            for frame in _decode(container, [s for s in (vin, ain) if s is not None]):
                decoded += 1
                if isinstance(frame, VideoFrame):
                    assert vgraph is not None
                    vgraph.push(index, frame)
                else:
                    assert agraph is not None
                    agraph.push(index, frame)
                if decoded % 16 == 0 and frame.time is not None:
                    ticker.at(frame.time)
            if decoded == 0:
                raise MediaError(f"input {index + 1} has no decodable frame")
            if vgraph is not None:
                vgraph.push(index, None)
            if agraph is not None:
                if ain is None:
                    agraph.silence(index, inputs[index].duration)
                agraph.push(index, None)
            elapsed += inputs[index].duration - (d if index else 0.0)
        if vgraph is not None:
            vgraph.close()
        if agraph is not None:
            agraph.close()


def _chain(graph: av.filter.Graph, start: Any, chain: Sequence[tuple[str, str]]) -> Any:
    previous = start
    for name, args in chain:
        node = graph.add(name, args)
        previous.link_to(node)
        previous = node
    return previous


def _join(
    graph: av.filter.Graph,
    heads: Sequence[Any],
    durations: Sequence[float],
    fade: str | None,
    d: float,
    kind: str,
) -> Any:
    """Concatenate filter outputs, or chain cross-fades at the right offsets."""
    if fade is None:
        v, a = (1, 0) if kind == "video" else (0, 1)
        concat = graph.add("concat", f"n={len(heads)}:v={v}:a={a}")
        for i, head in enumerate(heads):
            head.link_to(concat, 0, i)
        return concat
    current = heads[0]
    length = durations[0]
    for head, duration in zip(heads[1:], durations[1:], strict=True):
        if kind == "video":
            node = graph.add("xfade", f"transition={fade}:duration={d}:offset={length - d:.6f}")
        else:
            node = graph.add("acrossfade", f"d={d}:c1=tri:c2=tri")
        current.link_to(node, 0, 0)
        head.link_to(node, 0, 1)
        current = node
        length += duration - d
    return current


class _MergeVideo(_VideoOut):
    def __init__(
        self,
        out: OutputContainer,
        streams: Sequence[VideoStream],
        durations: Sequence[float],
        plan: VideoPlan,
        fps: Fraction,
        fade: str | None,
        d: float,
    ) -> None:
        first = streams[0].codec_context
        self.width, self.height = output_size(first.width, first.height, plan)
        self.fps = fps
        self.out = out
        self.stream = cast(
            VideoStream,
            out.add_stream(
                VIDEO_ENCODERS[plan.codec], rate=fps, options=_video_options(plan.codec, plan)
            ),
        )
        self.stream.width, self.stream.height = self.width, self.height
        self.stream.pix_fmt = "yuv420p"
        self.stream.codec_context.time_base = 1 / fps
        if plan.bitrate:
            self.stream.bit_rate = plan.bitrate
        elif plan.codec == "vp8":
            self.stream.bit_rate = int(
                min(8e6, max(2e5, self.width * self.height * float(fps) * 0.08))
            )
        self.graph = av.filter.Graph()
        self.sources = []
        heads = []
        for stream in streams:
            source = self.graph.add_buffer(template=stream)
            self.sources.append(source)
            heads.append(
                _chain(
                    self.graph,
                    source,
                    [
                        ("settb", "AVTB"),
                        ("setpts", "PTS-STARTPTS"),
                        ("fps", f"fps={fps.numerator}/{fps.denominator}"),
                        (
                            "scale",
                            f"{self.width}:{self.height}:force_original_aspect_ratio=decrease",
                        ),
                        ("pad", f"{self.width}:{self.height}:(ow-iw)/2:(oh-ih)/2"),
                        ("setsar", "1"),
                        ("format", "yuv420p"),
                    ],
                )
            )
        joined = _join(self.graph, heads, durations, fade, d, "video")
        self.sink = self.graph.add("buffersink")
        joined.link_to(self.sink)
        self.graph.configure()
        self.frames = 0

    def push(self, index: int, frame: VideoFrame | None) -> None:  # type: ignore[override]
        self.sources[index].push(frame)
        self._drain()

    def close(self) -> None:
        self._drain()
        self.encode(None)


class _MergeAudio:
    def __init__(
        self,
        out: OutputContainer,
        durations: Sequence[float],
        plan: AudioPlan,
        fade: str | None,
        d: float,
    ) -> None:
        self.encoder = _AudioOut(out, MERGE_RATE, 2, plan)
        self.graph = av.filter.Graph()
        self.resamplers = [
            AudioResampler(format="fltp", layout="stereo", rate=MERGE_RATE) for _ in durations
        ]
        self.sources = []
        self.sent = [0] * len(durations)
        heads = []
        for _ in durations:
            source = self.graph.add_abuffer(
                format="fltp",
                layout="stereo",
                sample_rate=MERGE_RATE,
                time_base=Fraction(1, MERGE_RATE),
            )
            self.sources.append(source)
            heads.append(source)
        joined = _join(self.graph, heads, durations, fade, d, "audio")
        self.sink = self.graph.add("abuffersink")
        joined.link_to(self.sink)
        self.graph.configure()

    def push(self, index: int, frame: AudioFrame | None) -> None:
        frames = self.resamplers[index].resample(frame)
        for f in frames:
            self._send(index, f)
        if frame is None:
            self.sources[index].push(None)
        self._drain()

    def _send(self, index: int, f: AudioFrame) -> None:
        f.pts = self.sent[index]
        f.time_base = Fraction(1, MERGE_RATE)
        self.sent[index] += f.samples
        self.sources[index].push(f)

    def silence(self, index: int, seconds: float) -> None:
        remaining = int(seconds * MERGE_RATE)
        while remaining > 0:
            n = min(1024, remaining)
            frame = AudioFrame(format="fltp", layout="stereo", samples=n)
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            frame.sample_rate = MERGE_RATE
            self._send(index, frame)
            remaining -= n
            self._drain()

    def _drain(self) -> None:
        while True:
            try:
                frame = self.sink.pull()
            except (av.BlockingIOError, av.EOFError):
                return
            assert isinstance(frame, AudioFrame)
            frame.pts = None
            self.encoder.push(frame)

    def close(self) -> None:
        self._drain()
        self.encoder.close()


# --- thumbnails ------------------------------------------------------------------------

IMAGE_SAVE = {
    "jpg": ("JPEG", "image/jpeg"),
    "png": ("PNG", "image/png"),
    "webp": ("WEBP", "image/webp"),
}


def _frame_at(src: str | Path, timestamp: float) -> Image.Image:
    with _open_input(src) as inp:
        vs = _usable_video(inp)
        if vs is None:
            raise MediaError("the input has no picture")
        total = _duration(inp) or 0.0
        target = max(0.0, min(timestamp, max(0.0, total - 0.05)))
        if target > 0 and vs.time_base:
            try:
                inp.seek(int(target / vs.time_base), stream=vs, backward=True)
            except av.FFmpegError:
                inp.seek(0)
        chosen: VideoFrame | None = None
        for frame in _decode(inp, [vs]):
            assert isinstance(frame, VideoFrame)
            chosen = frame
            if frame.time is None or frame.time + 1e-3 >= target:
                break
        if chosen is None:
            raise MediaError("no frame could be decoded")
        return cast(Image.Image, chosen.to_image())  # type: ignore[no-untyped-call]


def thumbnail(
    src: str | Path,
    dst: str | Path,
    *,
    is_image: bool,
    timestamp: float,
    width: int,
    height: int,
    fmt: str,
) -> None:
    """A ``width`` x ``height`` picture (letterboxed, never stretched) of the frame at
    ``timestamp`` seconds (the last frame when past the end), or of an image."""
    if is_image:
        try:
            with Image.open(src) as opened:
                opened.seek(0)
                picture = ImageOps.exif_transpose(opened).convert("RGB")
        except (OSError, SyntaxError, ValueError) as exc:
            raise MediaError(f"not a readable image: {exc}") from exc
    else:
        picture = _frame_at(src, timestamp).convert("RGB")
    fitted = ImageOps.pad(picture, (width, height), color=(0, 0, 0))
    pil_format, _ = IMAGE_SAVE[fmt]
    fitted.save(dst, format=pil_format, quality=85)
