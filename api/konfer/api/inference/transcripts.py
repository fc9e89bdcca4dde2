"""Transcripts of recordings: who said what, when, and a summary.

A recording's per-track file holds one audio stream per microphone, titled
``"<user_id> <source>"`` by the recorder and shifted to the recording's timeline. Each
stream is transcribed on its own (so the speaker is the track's owner, never guessed),
segments are merged by time, and a summary is added when a summarization model is
loaded. The result is stored as JSON beside the recording
(``transcripts/<meeting>/<recording>.json``) and served by
``GET /api/v1/recording/{id}/transcript``. Called by that route's POST.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from konfer.api.db.models import Meeting, Recording, RecordingStatus, User
from konfer.api.inference.errors import ModelNotReady
from konfer.api.inference.service import InferenceService
from konfer.api.media.upload import run_in_thread
from konfer.api.services import meetings as meeting_service
from konfer.api.services import recordings as recordings_service
from konfer.api.state import AppState
from konfer.core.errors import KonferError, ValidationFailed
from konfer.core.inference import Task
from konfer.core.timeutil import isoformat, utcnow

if TYPE_CHECKING:  # PyAV and NumPy load only when a transcript is made, not with the api
    import numpy as np

RATE = 16000
log = logging.getLogger(__name__)


def transcript_key(rec: Recording) -> str:
    return f"transcripts/{rec.meeting_id}/{rec.id}.json"


def _wav(samples: np.ndarray) -> bytes:
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


def split_tracks(path: Path) -> list[dict[str, Any]]:
    """Each audio stream as 16 kHz mono WAV, with its owner and where it starts."""
    import av
    import numpy as np

    tracks: list[dict[str, Any]] = []
    with av.open(str(path)) as container:
        for stream in container.streams.audio:
            title = str(stream.metadata.get("title") or stream.metadata.get("TITLE") or "")
            owner, _, source = title.partition(" ")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            chunks: list[np.ndarray] = []
            start: float | None = None
            container.seek(0)
            for frame in container.decode(stream):
                if start is None and frame.time is not None:
                    start = max(0.0, float(frame.time))
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
            if not chunks:
                continue
            tracks.append(
                {
                    "owner": owner or None,
                    "source": source or "microphone",
                    "start": start or 0.0,
                    "wav": _wav(np.concatenate(chunks)),
                }
            )
    return tracks


async def _download(state: AppState, key: str, target: Path) -> None:
    with target.open("wb") as out:
        async for chunk in state.storage.read(key):
            out.write(chunk)


async def _names(state: AppState, owners: set[str]) -> dict[str, str]:
    names: dict[str, str] = {}
    async with state.sessionmaker() as session:
        for owner in owners:
            try:
                user = await session.get(User, uuid.UUID(owner))
            except ValueError:
                continue
            if user is not None:
                names[owner] = user.username
    return names


async def transcribe(
    state: AppState,
    inference: InferenceService,
    rec: Recording,
    model: str | None = None,
    language: str | None = None,
) -> dict[str, Any]:
    """Transcribe and summarize a completed recording; store and return the transcript."""
    key = rec.extra_object_keys[0] if rec.extra_object_keys else rec.object_key
    if key is None:
        raise ValidationFailed("The recording has no stored file")
    inference.choose(Task.speech_recognition, model)  # 503 before any download
    with tempfile.TemporaryDirectory(prefix="konfer-transcript-") as tmp:
        path = Path(tmp) / "recording"
        await _download(state, key, path)
        tracks = await run_in_thread(lambda: split_tracks(path))
    if not tracks:
        raise ValidationFailed("The recording has no audio to transcribe")
    names = await _names(state, {t["owner"] for t in tracks if t["owner"]})
    segments: list[dict[str, Any]] = []
    used_model = None
    for track in tracks:
        answer = await inference.infer(
            Task.speech_recognition,
            model,
            {
                "audio": base64.b64encode(track["wav"]).decode(),
                "language": language,
                "word_timestamps": True,
            },
        )
        used_model = answer.model
        for seg in answer.body["segments"]:
            if not seg["text"]:
                continue
            shift = track["start"]
            segments.append(
                {
                    "speaker_id": track["owner"],
                    "speaker": names.get(track["owner"] or "", track["owner"] or "unknown"),
                    "source": track["source"],
                    "start": round(seg["start"] + shift, 3),
                    "end": round(seg["end"] + shift, 3),
                    "text": seg["text"],
                    "words": [
                        {
                            **w,
                            "start": round(w["start"] + shift, 3),
                            "end": round(w["end"] + shift, 3),
                        }
                        for w in seg.get("words") or []
                    ],
                }
            )
    segments.sort(key=lambda s: (s["start"], s["speaker"]))
    full_text = " ".join(s["text"] for s in segments)
    summary: dict[str, Any] | None = None
    if full_text.strip():
        try:
            answer = await inference.infer(
                Task.summarization,
                None,
                {"text": full_text, "max_length": 150, "format": "bullet_points"},
            )
            summary = {"text": answer.body["summary"], "model": answer.model}
        except ModelNotReady as exc:
            summary = {"text": None, "model": None, "reason": exc.message}
    transcript = {
        "recording_id": str(rec.id),
        "meeting_id": str(rec.meeting_id),
        "model": used_model,
        "language": language,
        "created_at": isoformat(utcnow()),
        "speakers": sorted({s["speaker"] for s in segments}),
        "segments": segments,
        "text": "\n".join(f"[{s['start']:.1f}s] {s['speaker']}: {s['text']}" for s in segments),
        "summary": summary,
    }
    blob = json.dumps(transcript).encode()
    await state.storage.put(transcript_key(rec), io.BytesIO(blob), len(blob), "application/json")
    return transcript


async def stored(state: AppState, rec: Recording) -> dict[str, Any] | None:
    key = transcript_key(rec)
    if await state.storage.stat(key) is None:
        return None
    data = b"".join([chunk async for chunk in state.storage.read(key)])
    result: dict[str, Any] = json.loads(data)
    return result


# --- after a recording completes ----------------------------------------------------------

_states: list[AppState] = []
_tasks: set[asyncio.Task[None]] = set()


def attach(state: AppState) -> None:
    """This replica transcribes the recordings it completes, when switched on."""
    if state not in _states:
        _states.append(state)


def detach(state: AppState) -> None:
    if state in _states:
        _states.remove(state)
    for task in list(_tasks):
        if task.get_name() == f"transcript-{id(state)}":
            task.cancel()


async def _after_commit(state: AppState, recording_id: uuid.UUID) -> None:
    """Wait for the completing transaction to commit, then transcribe."""
    inference = state.inference
    if inference is None:
        return
    for _ in range(300):
        async with state.sessionmaker() as session:
            rec = await session.get(Recording, recording_id)
            if rec is not None and rec.status == RecordingStatus.completed.value:
                break
        await asyncio.sleep(0.1)
    else:
        return
    try:
        await transcribe(state, inference, rec)
    except KonferError as exc:
        log.warning(
            "recording not transcribed",
            extra={"recording_id": str(recording_id), "reason": exc.message},
        )


@recordings_service.on_completed
async def on_recording_completed(session: AsyncSession, rec: Recording) -> None:
    """Completion hook: schedule the transcript on the replica that owns this session,
    for a meeting with ``settings.enable_transcription`` (or every meeting, with
    ``KONFER_AI_TRANSCRIBE_RECORDINGS``)."""
    state = next((s for s in _states if s.engine is session.bind), None)
    if state is None:
        return
    if not state.settings.ai_transcribe_recordings:
        meeting = await session.get(Meeting, rec.meeting_id)
        if meeting is None or not meeting_service.meeting_settings(meeting).enable_transcription:
            return
    task = asyncio.create_task(_after_commit(state, rec.id), name=f"transcript-{id(state)}")
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def pending() -> None:
    """Wait for scheduled transcripts (tests, shutdown)."""
    if _tasks:
        await asyncio.gather(*list(_tasks), return_exceptions=True)
