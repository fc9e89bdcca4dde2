"""Speech recognition with faster-whisper (CTranslate2 Whisper), ``runtime: faster-whisper``
and ``runtime: ctranslate2`` for a speech-recognition task.

int8 on CPU, float16 on CUDA. The model folder is a packaged one (base, tiny.en) or any
CTranslate2 Whisper folder from a storage URI. A language the model cannot handle (an
English-only model asked for Portuguese) is refused, never guessed.

Speech longer than Whisper's 30 s window goes through faster-whisper's batched pipeline:
VAD cuts it at pauses into windows that are decoded together, which measured ≈ 25 % less
CPU and ≈ 1.3 times the speed of decoding window after window on two cores, with the same
words. A batched window comes back as one segment, so it is cut again into caption-sized
cues on its word timestamps (``cue_spans``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from konfer.ai import audio
from konfer.ai.base import KonferModel, invalid, unsupported_language
from konfer.ai.models import ModelFilesError, resolve

SAMPLE_RATE = 16000
WINDOW_SECONDS = 30.0
CUE_MAX_SECONDS = 7.0
CUE_MAX_CHARS = 84
CUE_PAUSE_SECONDS = 1.0
SENTENCE_ENDS = (".", "?", "!", "\u3002", "\uff1f", "\uff01")  # and the CJK full stops


def cue_spans(words: Sequence[tuple[str, float, float]]) -> list[tuple[int, int]]:
    """Half-open index ranges of ``(word, start, end)`` that make one caption cue.

    A cue ends after a sentence end, before a pause longer than a second, or before it
    would run past 7 s or 84 characters (two caption lines): the sizes subtitle players
    and readers cope with.
    """
    spans: list[tuple[int, int]] = []
    first = 0
    chars = 0
    for i, (word, start, end) in enumerate(words):
        if i > first:
            too_long = end - words[first][1] > CUE_MAX_SECONDS
            too_wide = chars + len(word) > CUE_MAX_CHARS
            paused = start - words[i - 1][2] > CUE_PAUSE_SECONDS
            if too_long or too_wide or paused:
                spans.append((first, i))
                first, chars = i, 0
        chars += len(word)
        if word.rstrip().endswith(SENTENCE_ENDS):
            spans.append((first, i + 1))
            first, chars = i + 1, 0
    if first < len(words):
        spans.append((first, len(words)))
    return spans


def normalize_language(value: object) -> str | None:
    """``en-US`` -> ``en``; empty or ``auto`` -> None (detect)."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("", "auto"):
        return None
    return text.replace("_", "-").split("-")[0]


class WhisperModel(KonferModel):
    def load_model(self) -> None:
        from faster_whisper import BatchedInferencePipeline
        from faster_whisper import WhisperModel as FasterWhisper

        folder = resolve(self.spec.storage_uri, self.settings)
        if folder is None or not (folder / "model.bin").is_file():
            raise ModelFilesError(f"{self.spec.storage_uri}: not a CTranslate2 Whisper folder")
        cuda = self.device == "gpu"
        self.model = FasterWhisper(
            str(folder),
            device="cuda" if cuda else "cpu",
            compute_type="float16" if cuda else "int8",
            cpu_threads=self.settings.ai_cpu_threads,
            local_files_only=True,
        )
        self.compute_type = "float16" if cuda else "int8"
        self.batched = BatchedInferencePipeline(model=self.model)
        # Warm up: the first call pays for allocations a user should not wait for.
        segments, _ = self.model.transcribe(
            np.zeros(SAMPLE_RATE, dtype=np.float32), beam_size=1, language=self._default()
        )
        list(segments)

    def _default(self) -> str | None:
        return None if self.model.model.is_multilingual else "en"

    def languages(self) -> list[str] | None:
        if self.spec.languages:
            return self.spec.languages
        model = getattr(self, "model", None)
        if model is None:
            return None
        if not model.model.is_multilingual:
            return ["en"]
        return list(model.supported_languages)

    def infer(self, request: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        language = normalize_language(request.get("language"))
        supported = self.languages() or []
        if language is not None and language not in supported:
            raise unsupported_language(
                f"model {self.name} does not recognize '{language}'; it handles: "
                + ", ".join(supported[:20])
                + (" …" if len(supported) > 20 else "")
            )
        if language is None and supported == ["en"]:
            language = "en"
        beam = int(request.get("beam_size", 1))
        if not 1 <= beam <= 10:
            raise invalid("beam_size must be between 1 and 10")
        words = bool(request.get("word_timestamps", True))
        samples = audio.decode(audio.payload_bytes(request, "audio"), SAMPLE_RATE)
        duration = len(samples) / SAMPLE_RATE
        segments_out: list[dict[str, Any]] = []
        logprobs: list[float] = []
        if len(samples):
            batch = self.settings.ai_whisper_batch_size
            if batch > 0 and duration > WINDOW_SECONDS:
                segments, info = self.batched.transcribe(
                    samples,
                    language=language,
                    beam_size=beam,
                    batch_size=batch,
                    word_timestamps=True,  # needed to cut windows into cues
                )
            else:
                segments, info = self.model.transcribe(
                    samples,
                    language=language,
                    beam_size=beam,
                    word_timestamps=words,
                    vad_filter=bool(request.get("vad_filter", False)),
                    condition_on_previous_text=False,
                )
            for seg in segments:
                logprobs.append(seg.avg_logprob)
                segments_out.extend(_segments(seg, words))
            detected = info.language
            language_probability = info.language_probability
        else:
            detected, language_probability = language or "en", 0.0
        text = " ".join(s["text"] for s in segments_out).strip()
        confidence = math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0
        return {
            "text": text,
            "language": detected,
            "language_probability": round(float(language_probability), 4),
            "duration": round(duration, 3),
            "confidence": round(confidence, 4),
            "segments": segments_out,
            "processing_time": round(time.perf_counter() - started, 3),
            "compute_type": self.compute_type,
        }


def _word(w: Any) -> dict[str, Any]:
    return {
        "word": w.word.strip(),
        "start": round(w.start, 3),
        "end": round(w.end, 3),
        "confidence": round(w.probability, 4),
    }


def _segments(seg: Any, words: bool) -> list[dict[str, Any]]:
    """One faster-whisper segment as output segments: cut into cues when it spans more
    than one caption (a batched window), with the window's confidence on each."""
    common = {
        "confidence": round(math.exp(seg.avg_logprob), 4),
        "no_speech_prob": round(seg.no_speech_prob, 4),
    }
    seg_words = list(seg.words or [])
    if seg.end - seg.start <= CUE_MAX_SECONDS or not seg_words:
        return [
            {
                "text": seg.text.strip(),
                "start": round(seg.start, 3),
                "end": round(seg.end, 3),
                **common,
                "words": [_word(w) for w in seg_words] if words else [],
            }
        ]
    out: list[dict[str, Any]] = []
    for first, last in cue_spans([(w.word, w.start, w.end) for w in seg_words]):
        part = seg_words[first:last]
        out.append(
            {
                "text": "".join(w.word for w in part).strip(),
                "start": round(part[0].start, 3),
                "end": round(part[-1].end, 3),
                **common,
                "words": [_word(w) for w in part] if words else [],
            }
        )
    return out
