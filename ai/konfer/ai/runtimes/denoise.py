"""Audio denoising with RNNoise (``pyrnnoise``'s bundled librnnoise), task audio-denoising.

RNNoise works on 10 ms frames of 48 kHz mono and reports a voice probability per frame.
The reduction it reports is measured, not assumed: the power of the frames RNNoise judges
to be noise (voice probability under 0.2), before and after, in decibels. Levels: low mixes
a quarter of the original back, medium is one pass, high is two passes; with
``preserve_speech`` off, noise-only frames are also gated to silence.
"""

from __future__ import annotations

import ctypes
import math
import time
from typing import Any

import numpy as np

from konfer.ai import audio
from konfer.ai.base import KonferModel, invalid

RATE = 48000
_NOISE_PROB = 0.2


class _RNNoise:
    """One denoising state over the C library (frame size 480)."""

    def __init__(self) -> None:
        from pyrnnoise import rnnoise

        self.lib = rnnoise
        self.frame = int(rnnoise.FRAME_SIZE)
        self.state = rnnoise.create()

    def run(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Denoised int16 samples, aligned with the input (RNNoise's output lags it by two
        frames), and the voice probability of each input frame."""
        n = self.frame
        delay = 2 * n
        samples = np.concatenate([samples, np.zeros(delay, dtype=np.float32)])
        count = math.ceil(len(samples) / n)
        padded = np.zeros(count * n, dtype=np.float32)
        padded[: len(samples)] = samples
        probs = np.zeros(count, dtype=np.float32)
        lib = self.lib.lib
        for i in range(count):
            view = padded[i * n : (i + 1) * n]
            ptr = view.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            probs[i] = lib.rnnoise_process_frame(self.state, ptr, ptr)
        out = np.clip(padded[delay : len(samples)], -32768, 32767).astype(np.int16)
        return out, probs[2:]

    def close(self) -> None:
        self.lib.destroy(self.state)


def _noise_power(samples: np.ndarray, noise_frames: np.ndarray, frame: int) -> float:
    x = samples.astype(np.float64)
    usable = len(noise_frames) * frame
    if len(x) < usable:
        x = np.pad(x, (0, usable - len(x)))
    frames = x[:usable].reshape(-1, frame)[noise_frames]
    return float(np.mean(frames**2)) if frames.size else 0.0


class DenoiseModel(KonferModel):
    def load_model(self) -> None:
        probe = _RNNoise()
        probe.run(np.zeros(probe.frame * 4, dtype=np.float32))
        probe.close()

    def infer(self, request: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        level = str(request.get("noise_reduction_level", "medium"))
        if level not in ("low", "medium", "high"):
            raise invalid("noise_reduction_level must be low, medium or high")
        preserve = bool(request.get("preserve_speech", True))
        original = audio.decode(audio.payload_bytes(request, "audio"), RATE, as_int16=True)
        source = original.astype(np.float32)
        engine = _RNNoise()
        try:
            cleaned, probs = engine.run(source)
            if level == "high":
                cleaned, _ = engine.run(cleaned.astype(np.float32))
            frame = engine.frame
        finally:
            engine.close()
        result = cleaned.astype(np.float32)
        if level == "low":
            result = 0.75 * result + 0.25 * source
        noise = probs < _NOISE_PROB
        if not preserve and noise.any():
            mask = np.repeat(~noise, frame)[: len(result)].astype(np.float32)
            result = result * mask
        result_i16 = np.clip(result, -32768, 32767).astype(np.int16)
        before = _noise_power(original, noise, frame)
        after = _noise_power(result_i16, noise, frame)
        reduction = 0.0 if before <= 0 else 10 * math.log10(before / max(after, 0.001))
        import base64

        return {
            "audio": base64.b64encode(audio.wav_bytes(result_i16, RATE)).decode(),
            "sample_rate": RATE,
            "duration": round(len(result_i16) / RATE, 3),
            "noise_reduction_db": round(reduction, 2),
            "speech_ratio": round(float(np.mean(~noise)) if len(noise) else 0.0, 3),
            "processing_time": round(time.perf_counter() - started, 3),
        }
