"""Small media files made with PyAV (and Pillow) for the media tests: tones and moving
colour ramps, a second or two long at low resolution, in memory."""

from __future__ import annotations

import io
import math
import os
import struct
from array import array
from fractions import Fraction

import av
from av.container import OutputContainer
from PIL import Image

MUXER = {"mkv": "matroska", "aac": "adts", "m4a": "ipod"}
DEFAULT_CODECS = {
    "mp4": ("libx264", "aac"),
    "mov": ("libx264", "aac"),
    "mkv": ("libx264", "libopus"),
    "webm": ("libvpx", "libopus"),
    "avi": ("libx264", "libmp3lame"),
    "flv": ("libx264", "aac"),
    "mp3": (None, "libmp3lame"),
    "wav": (None, "pcm_s16le"),
    "ogg": (None, "libopus"),
    "flac": (None, "flac"),
    "aac": (None, "aac"),
    "m4a": (None, "aac"),
}


def media(
    container: str = "mp4",
    *,
    seconds: float = 1.0,
    width: int = 160,
    height: int = 120,
    fps: int = 15,
    video: bool | None = None,
    audio: bool = True,
    vcodec: str | None = None,
    acodec: str | None = None,
    rate: int = 48000,
    noisy: bool = False,
) -> bytes:
    """A file of ``container`` with a colour ramp (if video) and a 440 Hz tone;
    ``noisy`` frames are random pixels, which are slow to encode."""
    default_v, default_a = DEFAULT_CODECS[container]
    vcodec = vcodec or default_v
    acodec = acodec or default_a
    with_video = (vcodec is not None) if video is None else video
    buf = io.BytesIO()
    out = av.open(buf, "w", format=MUXER.get(container, container))
    assert isinstance(out, OutputContainer)
    with out:
        vs = None
        if with_video:
            assert vcodec is not None
            vs = out.add_stream(vcodec, rate=fps, options={"preset": "ultrafast"})
            vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"  # type: ignore[union-attr]
        aus = out.add_stream(acodec, rate=rate) if audio else None
        if aus is not None:
            aus.layout = "stereo"  # type: ignore[union-attr]
        for i in range(round(seconds * fps) if vs else 0):
            frame = av.VideoFrame(width, height, "yuv420p")
            for p, plane in enumerate(frame.planes):
                if noisy:
                    plane.update(os.urandom(plane.buffer_size))
                else:
                    plane.update(bytes([(i * 8 + p * 60) % 256]) * plane.buffer_size)
            frame.pts = i
            for packet in vs.encode(frame):  # type: ignore[union-attr]
                out.mux(packet)
        if vs is not None:
            for packet in vs.encode():  # type: ignore[union-attr]
                out.mux(packet)
        if aus is not None:
            total, sent = round(seconds * rate), 0
            while sent < total:
                n = min(1024, total - sent)
                samples = array(
                    "h",
                    (
                        int(6000 * math.sin(2 * math.pi * 440 * (sent + j) / rate))
                        for j in range(n)
                        for _ in range(2)
                    ),
                )
                frame = av.AudioFrame(format="s16", layout="stereo", samples=n)
                frame.planes[0].update(samples.tobytes())
                frame.sample_rate, frame.pts = rate, sent
                frame.time_base = Fraction(1, rate)
                for packet in aus.encode(frame):  # type: ignore[union-attr]
                    out.mux(packet)
                sent += n
            for packet in aus.encode():  # type: ignore[union-attr]
                out.mux(packet)
    return buf.getvalue()


def image(fmt: str = "png", width: int = 64, height: int = 48) -> bytes:
    buf = io.BytesIO()
    picture = Image.new("RGB", (width, height), (200, 40, 90))
    picture.save(buf, format={"jpg": "JPEG"}.get(fmt, fmt.upper()))
    return buf.getvalue()


def pdf() -> bytes:
    return (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
        b"trailer<</Root 1 0 R>>\n%%EOF\n"
    )


def wav_header(data_bytes: int, rate: int = 48000, channels: int = 2) -> bytes:
    """A canonical 16-bit PCM WAV header for ``data_bytes`` of samples."""
    block = channels * 2
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def noise_wav(size: int) -> bytes:
    """A valid WAV of about ``size`` bytes: random bytes are valid 16-bit PCM (noise)."""
    data = size - 44
    data -= data % 4
    return wav_header(data) + os.urandom(data)


def video_packets(codec: str, n: int, size: tuple[int, int] = (176, 144)) -> list[bytes]:
    """``n`` encoded VP8 or H.264 frames, the first a keyframe, for code that copies
    frames without decoding them (the recorder)."""
    enc = av.CodecContext.create("libvpx" if codec == "vp8" else "libx264", "w")
    enc.width, enc.height = size
    enc.pix_fmt = "yuv420p"
    enc.time_base = Fraction(1, 90000)
    enc.framerate = 30
    enc.options = (
        {"deadline": "realtime", "cpu-used": "8"}
        if codec == "vp8"
        else {"preset": "ultrafast", "tune": "zerolatency"}
    )
    out: list[bytes] = []
    for i in range(n):
        frame = av.VideoFrame(size[0], size[1], "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([(i * 7) % 255]) * plane.buffer_size)
        frame.pts = i * 3000
        frame.time_base = enc.time_base
        out += [bytes(p) for p in enc.encode(frame)]
    out += [bytes(p) for p in enc.encode(None)]
    return out
