"""Speech recognition with faster-whisper (CTranslate2 Whisper), ``runtime: faster-whisper``
and ``runtime: ctranslate2`` for a speech-recognition task.

int8 on CPU, float16 on CUDA. The model folder is a packaged one (base, tiny.en) or any
CTranslate2 Whisper folder from a storage URI. A language the model cannot handle (an
English-only model asked for Portuguese) is refused, never guessed.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from konfer.ai import audio
from konfer.ai.base import KonferModel, invalid, unsupported_language
from konfer.ai.models import ModelFilesError, resolve

SAMPLE_RATE = 16000


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
                segments_out.append(
                    {
                        "text": seg.text.strip(),
                        "start": round(seg.start, 3),
                        "end": round(seg.end, 3),
                        "confidence": round(math.exp(seg.avg_logprob), 4),
                        "no_speech_prob": round(seg.no_speech_prob, 4),
                        "words": [
                            {
                                "word": w.word.strip(),
                                "start": round(w.start, 3),
                                "end": round(w.end, 3),
                                "confidence": round(w.probability, 4),
                            }
                            for w in (seg.words or [])
                        ],
                    }
                )
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
