"""A prosody + lexicon emotion *baseline* — not a trained model, and named so in every answer.

No trustworthy speech-emotion model ships in a package today (design §5); deploy one with
``runtime: onnx`` for real results. Until then this heuristic gives a rough, explainable
reading: per 2.5 s window, loudness and pitch movement (autocorrelation F0) stand for
arousal, and VADER over the words spoken in that window (when the api passes a transcript)
stands for valence. Confidences stay low on purpose.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from konfer.ai import audio
from konfer.ai.base import KonferModel

RATE = 16000
WINDOW = 2.5
EMOTIONS = ("happy", "sad", "angry", "neutral", "surprised", "fearful", "disgusted")


def pitch_track(x: np.ndarray, rate: int = RATE) -> np.ndarray:
    """F0 (Hz) of voiced 40 ms frames by normalized autocorrelation, 75-400 Hz."""
    frame, hop = int(0.04 * rate), int(0.02 * rate)
    lo, hi = rate // 400, rate // 75
    out: list[float] = []
    for start in range(0, max(0, len(x) - frame), hop):
        f = x[start : start + frame] - np.mean(x[start : start + frame])
        energy = float(np.dot(f, f))
        if energy < 1e-4:
            continue
        ac = np.correlate(f, f, mode="full")[frame - 1 :]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] / energy > 0.45:
            out.append(rate / lag)
    return np.asarray(out, dtype=np.float64)


class EmotionBaseline(KonferModel):
    BASELINE = True

    def load_model(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.vader = SentimentIntensityAnalyzer()

    def _valence(self, words: list[dict[str, Any]], start: float, end: float) -> float | None:
        spoken = [str(w.get("word", "")) for w in words if start <= float(w.get("start", -1)) < end]
        if not spoken:
            return None
        return float(self.vader.polarity_scores(" ".join(spoken))["compound"])

    def infer(self, request: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        samples = audio.decode(audio.payload_bytes(request, "audio"), RATE)
        words = request.get("words") if isinstance(request.get("words"), list) else []
        step = int(WINDOW * RATE)
        emotions: list[dict[str, Any]] = []
        for start in range(0, len(samples), step):
            chunk = samples[start : start + step]
            t0, t1 = start / RATE, (start + len(chunk)) / RATE
            rms = float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2))) if len(chunk) else 0.0
            loudness = 20 * np.log10(max(rms, 1e-9))
            f0 = pitch_track(chunk)
            variation = float(np.std(f0) / np.mean(f0)) if len(f0) > 3 else 0.0
            valence = self._valence(words or [], t0, t1)
            if loudness < -45 or len(f0) < 4:
                label, confidence = "neutral", 0.5
            else:
                aroused = loudness > -20 or variation > 0.22
                v = valence or 0.0
                if aroused and v > 0.2:
                    label, confidence = "happy", 0.55
                elif aroused and v < -0.2:
                    label, confidence = "angry", 0.5
                elif not aroused and v < -0.2:
                    label, confidence = "sad", 0.45
                elif aroused and variation > 0.35:
                    label, confidence = "surprised", 0.35
                else:
                    label, confidence = "neutral", 0.5
            emotions.append(
                {
                    "emotion": label,
                    "confidence": confidence,
                    "start_time": round(t0, 3),
                    "end_time": round(t1, 3),
                    "features": {
                        "loudness_dbfs": round(loudness, 1),
                        "pitch_hz": round(float(np.median(f0)), 1) if len(f0) else None,
                        "pitch_variation": round(variation, 3),
                        "lexicon_valence": None if valence is None else round(valence, 3),
                    },
                }
            )
        durations: dict[str, float] = {}
        for item in emotions:
            span = item["end_time"] - item["start_time"]
            durations[item["emotion"]] = durations.get(item["emotion"], 0.0) + span
        dominant = max(durations, key=lambda k: durations[k]) if durations else "neutral"
        return {
            "emotions": emotions,
            "dominant_emotion": dominant,
            "method": "prosody (loudness, pitch movement) + VADER lexicon; heuristic baseline",
            "processing_time": round(time.perf_counter() - started, 4),
        }
