"""Transcripts of recordings: one audio stream per speaker, as the recorder writes them."""

from __future__ import annotations

import datetime as dt
import io
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from konfer.api.db.models import Recording, RecordingStatus
from tests.conftest import ApiClient
from tests.helpers import assert_error
from tests.integration.ai.conftest import espeak, read_wav

RATE = 16000


def per_track_file(voices: list[tuple[str, np.ndarray, float]]) -> bytes:
    """An MKV with one FLAC stream per (title, samples, start seconds), like a recording."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        streams = []
        for title, _, _ in voices:
            stream = out.add_stream("flac", rate=RATE)
            stream.layout = "mono"  # type: ignore[union-attr]
            stream.metadata["title"] = title
            streams.append(stream)
        for stream, (_, samples, start) in zip(streams, voices, strict=True):
            pcm = samples.astype(np.int16)
            offset = round(start * RATE)
            for i in range(0, len(pcm), 1024):
                chunk = pcm[i : i + 1024]
                frame = av.AudioFrame(format="s16", layout="mono", samples=len(chunk))
                frame.planes[0].update(chunk.tobytes())
                frame.sample_rate, frame.pts = RATE, offset + i
                frame.time_base = Fraction(1, RATE)
                for packet in stream.encode(frame):  # type: ignore[union-attr]
                    out.mux(packet)
            for packet in stream.encode():  # type: ignore[union-attr]
                out.mux(packet)
    return buf.getvalue()


def voice(text: str, path: Path) -> np.ndarray:
    samples, rate = read_wav(espeak(text, path).read_bytes())
    t = np.arange(int(len(samples) * RATE / rate)) / RATE
    return np.interp(t, np.arange(len(samples)) / rate, samples)


async def test_a_recording_transcript_names_each_track_owner_with_timestamps(
    api: ApiClient, ai: dict[str, Any], speech_dir: Path
) -> None:
    host, guest = ai["admin"], ai["user"]
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    r = await api.post(
        "/api/v1/meetings",
        headers=host["headers"],
        json={"title": "Budget review", "start_time": start},
    )
    assert r.status_code == 201, r.text
    meeting_id = uuid.UUID(r.json()["meeting_id"])
    host_id, guest_id = host["user_id"], guest["user_id"]
    blob = per_track_file(
        [
            (
                f"{host_id} microphone",
                voice("Good morning, let us review the budget.", speech_dir / "h.wav"),
                0.0,
            ),
            (
                f"{guest_id} microphone",
                voice("The travel budget is too high.", speech_dir / "g.wav"),
                4.0,
            ),
        ]
    )
    state = api.app.state.konfer
    key = f"recordings/{meeting_id}/{uuid.uuid4()}.mkv"
    await state.storage.put(key, io.BytesIO(blob), len(blob), "video/x-matroska")
    rec_id = uuid.uuid4()
    async with state.sessionmaker() as session:
        session.add(
            Recording(
                id=rec_id,
                meeting_id=meeting_id,
                started_by=uuid.UUID(host_id),
                status=RecordingStatus.completed.value,
                format="mkv",
                layout="per-track",
                object_key=key,
            )
        )
        await session.commit()

    url = f"/api/v1/recording/{rec_id}/transcript"
    assert_error(await api.get(url, headers=host["headers"]), 404, "RESOURCE_NOT_FOUND")
    r = await api.post(url, headers=host["headers"], params={"model": "whisper-tiny.en"})
    assert r.status_code == 200, r.text
    made = r.json()
    assert made["model"] == "whisper-tiny.en"
    by_speaker = {s["speaker"]: s for s in made["segments"]}
    assert set(by_speaker) == {host["username"], guest["username"]}
    assert "budget" in by_speaker[host["username"]]["text"].lower()
    first, second = by_speaker[host["username"]], by_speaker[guest["username"]]
    assert first["start"] < 1.0
    assert second["start"] >= 3.9  # the guest's track starts 4 s into the recording
    assert second["words"][0]["start"] >= 3.9
    assert made["segments"] == sorted(made["segments"], key=lambda s: s["start"])
    assert made["summary"]["model"] == "textrank"
    assert made["summary"]["text"]
    assert f"{host['username']}:" in made["text"]
    # Stored: anyone who may see the recording reads the same transcript.
    r = await api.get(url, headers=host["headers"])
    assert r.status_code == 200
    assert r.json()["segments"] == made["segments"]
    # Not a member of the meeting: the recording does not exist for them.
    assert_error(await api.get(url, headers=guest["headers"]), 404, "RESOURCE_NOT_FOUND")


async def complete_a_recording(
    api: ApiClient, host: dict[str, Any], speech_dir: Path, settings: dict[str, bool]
) -> uuid.UUID:
    """A meeting with ``settings`` and a recording of it that completes now, the way the
    recordings service completes one (the hook runs in the completing transaction)."""
    from konfer.api.inference import transcripts

    start = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    r = await api.post(
        "/api/v1/meetings",
        headers=host["headers"],
        json={"title": "Retro", "start_time": start, "settings": settings},
    )
    assert r.status_code == 201, r.text
    meeting_id = uuid.UUID(r.json()["meeting_id"])
    blob = per_track_file(
        [(f"{host['user_id']} microphone", voice("Thank you all.", speech_dir / "t.wav"), 0.0)]
    )
    state = api.app.state.konfer
    key = f"recordings/{meeting_id}/{uuid.uuid4()}.mkv"
    await state.storage.put(key, io.BytesIO(blob), len(blob), "video/x-matroska")
    rec_id = uuid.uuid4()
    async with state.sessionmaker() as session:
        rec = Recording(
            id=rec_id,
            meeting_id=meeting_id,
            started_by=uuid.UUID(host["user_id"]),
            status=RecordingStatus.recording.value,
            format="mkv",
            layout="per-track",
            object_key=key,
        )
        session.add(rec)
        await session.commit()
        rec.status = RecordingStatus.completed.value
        await transcripts.on_recording_completed(session, rec)
        await session.commit()
    await transcripts.pending()
    return rec_id


async def test_a_completed_recording_is_transcribed_by_the_completion_hook(
    api: ApiClient, ai: dict[str, Any], speech_dir: Path
) -> None:
    from konfer.api.inference import transcripts
    from konfer.api.services import recordings as recordings_service

    assert transcripts.on_recording_completed in recordings_service._completion_hooks
    host = ai["admin"]
    rec_id = await complete_a_recording(api, host, speech_dir, {})  # instance-wide switch on
    r = await api.get(f"/api/v1/recording/{rec_id}/transcript", headers=host["headers"])
    assert r.status_code == 200, r.text
    assert r.json()["speakers"] == [host["username"]]
    assert "thank" in r.json()["segments"][0]["text"].lower()


async def test_only_meetings_that_enable_transcription_are_transcribed(
    api: ApiClient, ai: dict[str, Any], speech_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the instance-wide switch off, ``settings.enable_transcription`` decides."""
    monkeypatch.setattr(api.app.state.konfer.settings, "ai_transcribe_recordings", False)
    host = ai["admin"]
    wanted = await complete_a_recording(api, host, speech_dir, {"enable_transcription": True})
    other = await complete_a_recording(api, host, speech_dir, {})
    r = await api.get(f"/api/v1/recording/{wanted}/transcript", headers=host["headers"])
    assert r.status_code == 200, r.text
    assert "thank" in r.json()["segments"][0]["text"].lower()
    r = await api.get(f"/api/v1/recording/{other}/transcript", headers=host["headers"])
    assert_error(r, 404, "RESOURCE_NOT_FOUND")
