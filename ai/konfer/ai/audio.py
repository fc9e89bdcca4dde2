"""Decoding whatever audio a client sent into the PCM a runtime needs, through PyAV.

Accepted containers are the ones the REST documents name (WAV, MP3, OGG, FLAC) plus the
WebM/MKV/MP4 audio a browser or the recorder produces; anything else is refused as an
unsupported format before any model sees it. Used by the speech and denoising runtimes.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import av
import numpy as np

from konfer.ai.base import invalid, unsupported_format

# PyAV demuxer names (``container.format.name`` may list several, comma-separated).
ACCEPTED = {"wav", "mp3", "ogg", "flac", "matroska", "webm", "mov", "mp4", "m4a", "aac"}


def payload_bytes(request: dict[str, Any], field: str) -> bytes:
    raw = request.get(field)
    if not isinstance(raw, str) or not raw:
        raise invalid(f"'{field}' (base64) is required")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid(f"'{field}' is not valid base64") from exc


def decode(data: bytes, rate: int, *, as_int16: bool = False) -> np.ndarray:
    """Mono PCM at ``rate`` (float32 in [-1, 1], or int16)."""
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError) as exc:
        raise unsupported_format("the file is not audio this server can read") from exc
    with container:
        names = set((container.format.name or "").split(","))
        if not names & ACCEPTED or not container.streams.audio:
            raise unsupported_format("supported formats: wav, mp3, ogg, flac")
        fmt = "s16" if as_int16 else "flt"
        resampler = av.AudioResampler(format=fmt, layout="mono", rate=rate)
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as exc:
            raise unsupported_format(f"the audio could not be decoded: {exc}") from exc
    dtype = np.int16 if as_int16 else np.float32
    if not chunks:
        return np.zeros(0, dtype=dtype)
    return np.concatenate(chunks).astype(dtype, copy=False)


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """16-bit mono WAV."""
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()
