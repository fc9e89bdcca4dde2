"""AI routes of the REST document: speech, transcription, text, audio and video.

Each route checks its input (format, size, language), asks the ``InferenceService`` for an
answer from a model server, and returns the documented fields plus ``model`` (and
``baseline`` when a heuristic answered). With no model loaded for the task the answer is
503 ``MODEL_NOT_READY`` explaining how to deploy one. These paths share the AI rate limit
(20 per minute, burst 10).
"""

from __future__ import annotations

import base64
import io
import tempfile
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import Response

from konfer.api.db.models import Media, MediaSource, RecordingStatus
from konfer.api.deps import CurrentPrincipal, SessionDep, StateDep
from konfer.api.inference import subtitles, transcripts
from konfer.api.inference.errors import ModelNotReady, UnsupportedFormat, UnsupportedLanguage
from konfer.api.inference.service import Answer, InferenceService, how_to_deploy
from konfer.api.media.formats import sniff
from konfer.api.media.upload import run_in_thread
from konfer.api.schemas import ai as schemas
from konfer.api.services import media as media_service
from konfer.api.services import recordings as recordings_service
from konfer.core.errors import Conflict, NotFound, PayloadTooLarge, ValidationFailed
from konfer.core.inference import TRANSLATION_LANGUAGES, Task
from konfer.core.timeutil import utcnow

router = APIRouter(prefix="/api/v1", tags=["ai"])

AUDIO_FORMATS = ("wav", "mp3", "ogg", "flac")
VIDEO_FORMATS = ("mp4", "webm", "mkv")


async def get_inference(state: StateDep) -> InferenceService:
    if state.inference is None:
        raise ModelNotReady("AI is not enabled on this server")
    return state.inference


InferenceDep = Annotated[InferenceService, Depends(get_inference)]


async def read_upload(
    file: UploadFile, allowed: tuple[str, ...], max_mb: int, kind: str = "audio"
) -> bytes:
    """The whole upload, after checking its first bytes name an accepted container."""
    data = await file.read(max_mb * 1024 * 1024 + 1)
    if len(data) > max_mb * 1024 * 1024:
        raise PayloadTooLarge(f"The {kind} file exceeds {max_mb} MB")
    sniffed = sniff(data[:65536], complete=len(data) <= 65536)
    supported = ", ".join(allowed)
    if sniffed is None or sniffed.container not in allowed:
        raise UnsupportedFormat(f"Unsupported {kind} format. Supported formats: {supported}")
    return data


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def named(answer: Answer) -> dict[str, Any]:
    return {
        "model": answer.model,
        "baseline": bool(answer.body.get("baseline", False)),
        "node_id": answer.node.node_id,
    }


# --- speech -----------------------------------------------------------------------------


@router.get("/ai/health", summary="AI service health")
async def ai_health() -> dict[str, str]:
    return {"status": "ok"}


@router.post(
    "/speech/recognition",
    response_model=schemas.RecognitionPublic,
    summary="Speech recognition (faster-whisper)",
)
async def speech_recognition(
    principal: CurrentPrincipal,
    inference: InferenceDep,
    state: StateDep,
    audio: Annotated[UploadFile, File(description="WAV, MP3, OGG or FLAC")],
    language: Annotated[str, Form()] = "en-US",
    model: Annotated[str | None, Form()] = None,
    beam_size: Annotated[int, Form(ge=1, le=10)] = 1,
) -> schemas.RecognitionPublic:
    data = await read_upload(audio, AUDIO_FORMATS, state.settings.ai_max_audio_mb)
    answer = await inference.infer(
        Task.speech_recognition,
        model,
        {
            "audio": _b64(data),
            "language": language,
            "word_timestamps": True,
            "beam_size": beam_size,
        },
    )
    body = answer.body
    words = [
        schemas.Word(
            word=w["word"], start_time=w["start"], end_time=w["end"], confidence=w["confidence"]
        )
        for seg in body["segments"]
        for w in seg.get("words") or []
    ]
    return schemas.RecognitionPublic(
        text=body["text"],
        confidence=body["confidence"],
        language=language if language and language.lower() != "auto" else body["language"],
        duration=body["duration"],
        words=words,
        processing_time=body["processing_time"],
        **named(answer),
    )


async def _words_for_emotion(inference: InferenceService, data: bytes) -> list[dict[str, Any]]:
    """The baseline reads valence from what was said: transcribe when a model is loaded."""
    try:
        answer = await inference.infer(
            Task.speech_recognition, None, {"audio": _b64(data), "word_timestamps": True}
        )
    except ModelNotReady:
        return []
    return [w for seg in answer.body["segments"] for w in seg.get("words") or []]


@router.post("/speech/emotion", response_model=schemas.EmotionPublic, summary="Emotion detection")
async def speech_emotion(
    principal: CurrentPrincipal,
    inference: InferenceDep,
    state: StateDep,
    audio: Annotated[UploadFile, File()],
    model: Annotated[str | None, Form()] = None,
) -> schemas.EmotionPublic:
    data = await read_upload(audio, AUDIO_FORMATS, state.settings.ai_max_audio_mb)
    spec = inference.choose(Task.emotion_detection, model)
    request: dict[str, Any] = {"audio": _b64(data)}
    if spec.baseline:
        request["words"] = await _words_for_emotion(inference, data)
    answer = await inference.infer(Task.emotion_detection, spec.name, request)
    body = answer.body
    return schemas.EmotionPublic(
        emotions=[
            schemas.EmotionSegment(**{k: e[k] for k in schemas.EmotionSegment.model_fields})
            for e in body["emotions"]
        ],
        dominant_emotion=body["dominant_emotion"],
        processing_time=body["processing_time"],
        method=body.get("method"),
        **named(answer),
    )


@router.post(
    "/speech/synthesis-detection",
    response_model=schemas.SynthesisPublic,
    summary="Synthetic speech (deepfake) detection",
)
async def synthesis_detection(
    principal: CurrentPrincipal,
    inference: InferenceDep,
    state: StateDep,
    audio: Annotated[UploadFile, File()],
    model: Annotated[str | None, Form()] = None,
) -> schemas.SynthesisPublic:
    data = await read_upload(audio, AUDIO_FORMATS, state.settings.ai_max_audio_mb)
    answer = await inference.infer(Task.synthesis_detection, model, {"audio": _b64(data)})
    body = answer.body
    return schemas.SynthesisPublic(
        is_synthetic=body["is_synthetic"],
        confidence=body["confidence"],
        authenticity_score=body["authenticity_score"],
        processing_time=body["processing_time"],
        **named(answer),
    )


# --- transcription and text ---------------------------------------------------------------


@router.post(
    "/ai/transcribe",
    response_model=schemas.TranscriptionPublic,
    summary="Transcribe audio as text, SRT, WebVTT or JSON",
)
async def transcribe(
    principal: CurrentPrincipal,
    inference: InferenceDep,
    state: StateDep,
    audio: Annotated[UploadFile, File()],
    language: Annotated[str | None, Form()] = None,
    format: Annotated[str, Form()] = "text",
    timestamps: Annotated[bool, Form()] = False,
    model: Annotated[str | None, Form()] = None,
    beam_size: Annotated[int, Form(ge=1, le=10)] = 1,
) -> schemas.TranscriptionPublic:
    if format not in ("text", "srt", "vtt", "json"):
        raise ValidationFailed(details={"format": "one of text, srt, vtt, json"})
    data = await read_upload(audio, AUDIO_FORMATS, state.settings.ai_max_audio_mb)
    words_wanted = timestamps or format == "json"
    answer = await inference.infer(
        Task.speech_recognition,
        model,
        {
            "audio": _b64(data),
            "language": language,
            "word_timestamps": words_wanted,
            "beam_size": beam_size,
        },
    )
    body = answer.body
    segments = body["segments"]
    rendered = {
        "text": subtitles.to_text,
        "json": subtitles.to_text,
        "srt": subtitles.to_srt,
        "vtt": subtitles.to_vtt,
    }[format](segments)
    return schemas.TranscriptionPublic(
        transcription=rendered,
        format=format,
        language=body["language"],
        duration=body["duration"],
        word_count=len(subtitles.to_text(segments).split()),
        processing_time=body["processing_time"],
        segments=[
            schemas.TranscriptSegment(
                text=s["text"],
                start=s["start"],
                end=s["end"],
                confidence=s["confidence"],
                words=[schemas.TranscriptWord(**w) for w in s.get("words") or []]
                if words_wanted
                else None,
            )
            for s in segments
        ],
        **named(answer),
    )


def _language(value: str, field: str) -> str:
    code = value.strip().lower().replace("_", "-").split("-")[0]
    if code not in TRANSLATION_LANGUAGES:
        raise UnsupportedLanguage(
            f"Unsupported {field} '{value}'. Supported: {', '.join(TRANSLATION_LANGUAGES)}"
        )
    return code


@router.post("/ai/translate", response_model=schemas.TranslatePublic, summary="Translate text")
async def translate(
    body: schemas.TranslateRequest,
    principal: CurrentPrincipal,
    inference: InferenceDep,
    state: StateDep,
) -> schemas.TranslatePublic:
    _check_text(body.text, state.settings.ai_max_text_chars)
    target = _language(body.target_language, "target_language")
    source = _language(body.source_language, "source_language") if body.source_language else None
    if source == target:
        raise ValidationFailed(details={"target_language": "must differ from the source"})
    model = body.model
    if model is None:
        model = _translator_for(inference, source, target)
    answer = await inference.infer(
        Task.translation,
        model,
        {"text": body.text, "source_language": source, "target_language": target},
    )
    result = answer.body
    return schemas.TranslatePublic(
        translated_text=result["translated_text"],
        source_language=result["source_language"],
        target_language=result["target_language"],
        confidence=result.get("confidence"),
        processing_time=result["processing_time"],
        **named(answer),
    )


def _translator_for(inference: InferenceService, source: str | None, target: str) -> str:
    """A loaded translation model that covers the pair (any source when it is unknown)."""
    loaded = [
        s.spec
        for s in inference.models.values()
        if s.spec.task is Task.translation and inference.ready_nodes(s.spec.name)
    ]
    for spec in sorted(loaded, key=lambda s: (s.baseline, s.name)):
        nodes = inference.ready_nodes(spec.name)
        pairs = spec.languages or (nodes[0].languages if nodes else None)
        if pairs is None:
            return spec.name
        if any(
            p.endswith(f"-{target}") and (source is None or p == f"{source}-{target}")
            for p in pairs
        ):
            return spec.name
    pair = f"{source or 'auto'}→{target}"
    raise ModelNotReady(
        f"No loaded translation model handles {pair}. " + how_to_deploy(Task.translation)
    )


def _check_text(text: str, limit: int) -> None:
    if len(text) > limit:
        raise PayloadTooLarge(f"text exceeds {limit} characters")


@router.post("/ai/summarize", response_model=schemas.SummarizePublic, summary="Summarize text")
async def summarize(
    body: schemas.SummarizeRequest,
    principal: CurrentPrincipal,
    inference: InferenceDep,
    state: StateDep,
) -> schemas.SummarizePublic:
    _check_text(body.text, state.settings.ai_max_text_chars)
    answer = await inference.infer(
        Task.summarization,
        body.model,
        {"text": body.text, "max_length": body.max_length, "format": body.format},
    )
    r = answer.body
    return schemas.SummarizePublic(
        summary=r["summary"],
        original_length=r["original_length"],
        summary_length=r["summary_length"],
        compression_ratio=r["compression_ratio"],
        processing_time=r["processing_time"],
        **named(answer),
    )


@router.post("/ai/analyze", response_model=schemas.AnalyzePublic, summary="Sentiment analysis")
async def analyze(
    body: schemas.AnalyzeRequest,
    principal: CurrentPrincipal,
    inference: InferenceDep,
    state: StateDep,
) -> schemas.AnalyzePublic:
    _check_text(body.text, state.settings.ai_max_text_chars)
    answer = await inference.infer(Task.sentiment, body.model, {"text": body.text})
    r = answer.body
    return schemas.AnalyzePublic(
        sentiment=r["sentiment"],
        score=r["score"],
        confidence=r["confidence"],
        emotions=r["emotions"],
        language=r["language"],
        processing_time=r["processing_time"],
        **named(answer),
    )


# --- media enhancement ----------------------------------------------------------------------


@router.post(
    "/audio/denoising",
    summary="Denoise audio (RNNoise); answers a WAV file",
    response_class=Response,
    responses={200: {"content": {"audio/wav": {}}, "description": "The denoised WAV"}},
)
async def denoise(
    principal: CurrentPrincipal,
    inference: InferenceDep,
    state: StateDep,
    audio: Annotated[UploadFile, File()],
    noise_reduction_level: Annotated[str, Form()] = "medium",
    preserve_speech: Annotated[bool, Form()] = True,
    model: Annotated[str | None, Form()] = None,
) -> Response:
    started = time.perf_counter()
    if noise_reduction_level not in ("low", "medium", "high"):
        raise ValidationFailed(details={"noise_reduction_level": "one of low, medium, high"})
    data = await read_upload(audio, AUDIO_FORMATS, state.settings.ai_max_audio_mb)
    answer = await inference.infer(
        Task.audio_denoising,
        model,
        {
            "audio": _b64(data),
            "noise_reduction_level": noise_reduction_level,
            "preserve_speech": preserve_speech,
        },
    )
    wav = base64.b64decode(answer.body["audio"])
    return Response(
        content=wav,
        media_type="audio/wav",
        headers={
            "X-Processing-Time": f"{time.perf_counter() - started:.3f}",
            "X-Noise-Reduction-DB": f"{answer.body['noise_reduction_db']:.2f}",
            "X-Model": answer.model,
            "Content-Disposition": 'attachment; filename="denoised.wav"',
        },
    )


@router.post(
    "/video/enhancement",
    response_model=schemas.EnhancementPublic,
    summary="Enhance a video (FFmpeg filters); the result is a media item",
)
async def enhance_video(
    principal: CurrentPrincipal,
    inference: InferenceDep,
    state: StateDep,
    session: SessionDep,
    video: Annotated[UploadFile, File(description="MP4, WebM or MKV")],
    enhancement_type: Annotated[str, Form()],
    target_resolution: Annotated[str | None, Form()] = None,
    quality: Annotated[str, Form()] = "medium",
    model: Annotated[str | None, Form()] = None,
) -> schemas.EnhancementPublic:
    settings = state.settings
    if enhancement_type not in (
        "super_resolution",
        "denoising",
        "stabilization",
        "color_correction",
    ):
        raise ValidationFailed(
            details={
                "enhancement_type": "super_resolution, denoising, stabilization or color_correction"
            }
        )
    if quality not in ("low", "medium", "high"):
        raise ValidationFailed(details={"quality": "one of low, medium, high"})
    data = await read_upload(video, VIDEO_FORMATS, settings.ai_max_video_mb, kind="video")
    answer = await inference.infer(
        Task.video_enhancement,
        model,
        {
            "video": _b64(data),
            "enhancement_type": enhancement_type,
            "target_resolution": target_resolution,
            "quality": quality,
        },
    )
    r = answer.body
    encoded = base64.b64decode(r["video"])
    media = await _store_video(
        state, session, principal.user.id, encoded, enhancement_type, video.filename or "video"
    )
    return schemas.EnhancementPublic(
        enhanced_video_id=str(media.id),
        url=media_service.public(media, settings).url,
        processing_time=r["processing_time"],
        enhancement_type=enhancement_type,
        original_resolution=r["original_resolution"],
        enhanced_resolution=r["enhanced_resolution"],
        file_size=len(encoded),
        duration=r["duration"],
        **named(answer),
    )


async def _store_video(
    state: Any, session: Any, owner_id: uuid.UUID, data: bytes, kind: str, original: str
) -> Media:
    """The enhanced file as a media item of its owner (with the usual thumbnail job)."""
    media_id = uuid.uuid4()
    key = media_service.object_key(media_id, "mp4")
    with tempfile.TemporaryDirectory(prefix="konfer-enhanced-") as tmp:
        path = Path(tmp) / "enhanced.mp4"
        path.write_bytes(data)
        from konfer.api.media import ops  # PyAV only when a video is enhanced

        info = await run_in_thread(lambda: ops.probe(path, check_decode=True))
        facts = media_service.inspect_media(info, "mp4")
        await state.storage.put(key, io.BytesIO(data), len(data), facts.mime_type)
    stem = original.rsplit(".", 1)[0] if "." in original else original
    media = Media(
        id=media_id,
        owner_id=owner_id,
        meeting_id=None,
        filename=f"{stem}-{kind.replace('_', '-')}.mp4"[:255],
        description=f"{kind.replace('_', ' ')} of {original}"[:1000],
        file_type=facts.file_type,
        container=facts.container,
        mime_type=facts.mime_type,
        size=len(data),
        object_key=key,
        duration=facts.duration,
        width=facts.width,
        height=facts.height,
        bitrate=facts.bitrate,
        video_codec=facts.video_codec,
        audio_codec=facts.audio_codec,
        frame_rate=facts.frame_rate,
        sample_rate=facts.sample_rate,
        channels=facts.channels,
        source=MediaSource.job.value,
        download_count=0,
        created_at=utcnow(),
    )
    session.add(media)
    session.add(media_service.auto_thumbnail_job(media, state.settings))
    await session.commit()
    return media


# --- transcripts of recordings -------------------------------------------------------------


@router.post(
    "/recording/{recording_id}/transcript",
    summary="Transcribe and summarize a completed recording (speaker = track owner)",
)
async def make_transcript(
    recording_id: uuid.UUID,
    principal: CurrentPrincipal,
    inference: InferenceDep,
    state: StateDep,
    session: SessionDep,
    model: Annotated[str | None, Query()] = None,
    language: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    rec, role = await recordings_service.get_visible(session, principal, recording_id)
    if not principal.is_admin:
        recordings_service.ensure_manages(role)
    if rec.status != RecordingStatus.completed.value:
        raise Conflict("Only a completed recording can be transcribed")
    return await transcripts.transcribe(state, inference, rec, model, language)


@router.get(
    "/recording/{recording_id}/transcript",
    summary="The transcript and summary of a recording",
)
async def get_transcript(
    recording_id: uuid.UUID,
    principal: CurrentPrincipal,
    state: StateDep,
    session: SessionDep,
) -> dict[str, Any]:
    rec, _role = await recordings_service.get_visible(session, principal, recording_id)
    found = await transcripts.stored(state, rec)
    if found is None:
        raise NotFound(
            f"Recording '{recording_id}' has no transcript yet; a host makes one with "
            f"POST /api/v1/recording/{recording_id}/transcript"
        )
    return found
