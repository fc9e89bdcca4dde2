"""Request and response shapes of the AI routes (the REST document's fields, plus
``model``: every answer names the model that produced it)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from konfer.api.schemas.common import Strict


class Named(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str = Field(description="The model that produced this answer")
    baseline: bool = Field(
        default=False, description="True when a heuristic baseline, not a trained model, answered"
    )
    node_id: str | None = None


class Word(BaseModel):
    word: str
    start_time: float
    end_time: float
    confidence: float


class RecognitionPublic(Named):
    text: str
    confidence: float
    language: str
    duration: float
    words: list[Word]
    processing_time: float


class EmotionSegment(BaseModel):
    emotion: str
    confidence: float
    start_time: float
    end_time: float


class EmotionPublic(Named):
    emotions: list[EmotionSegment]
    dominant_emotion: str
    processing_time: float
    method: str | None = None


class SynthesisPublic(Named):
    is_synthetic: bool
    confidence: float
    authenticity_score: float
    processing_time: float


class TranscriptWord(BaseModel):
    word: str
    start: float
    end: float
    confidence: float


class TranscriptSegment(BaseModel):
    text: str
    start: float
    end: float
    confidence: float
    words: list[TranscriptWord] | None = None


class TranscriptionPublic(Named):
    transcription: str = Field(description="The transcript in the requested format")
    format: Literal["text", "srt", "vtt", "json"]
    language: str
    duration: float
    word_count: int
    processing_time: float
    segments: list[TranscriptSegment]


class TranslateRequest(Strict):
    text: str = Field(min_length=1)
    source_language: str | None = None
    target_language: str = Field(min_length=2)
    model: str | None = None


class TranslatePublic(Named):
    translated_text: str
    source_language: str
    target_language: str
    confidence: float | None
    processing_time: float


class SummarizeRequest(Strict):
    text: str = Field(min_length=1)
    max_length: int = Field(
        default=150, ge=10, le=5000, description="Words (characters for Chinese)"
    )
    format: Literal["paragraph", "bullet_points"] = "paragraph"
    model: str | None = None


class SummarizePublic(Named):
    summary: str
    original_length: int
    summary_length: int
    compression_ratio: float
    processing_time: float


class AnalyzeRequest(Strict):
    text: str = Field(min_length=1)
    model: str | None = None


class AnalyzePublic(Named):
    sentiment: Literal["positive", "negative", "neutral"]
    score: float
    confidence: float
    emotions: dict[str, float]
    language: str
    processing_time: float


class EnhancementPublic(Named):
    enhanced_video_id: str
    url: str
    processing_time: float
    enhancement_type: str
    original_resolution: str
    enhanced_resolution: str
    file_size: int
    duration: float
