"""Speech recognition, transcription formats, emotion and synthesis detection, through the
api and real model servers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ApiClient
from tests.helpers import assert_error
from tests.integration.ai.conftest import espeak

SCRIPT = (
    "Good morning everyone. Today we will review the budget for the next quarter. "
    "Please send your reports before Friday. The project is on schedule. "
    "We need two more engineers for the testing team."
)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def wer(reference: str, hypothesis: str) -> float:
    ref, hyp = words(reference), words(hypothesis)
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hyp)] / len(ref)


@pytest.fixture(scope="session")
def script_wav(speech_dir: Path) -> bytes:
    return espeak(SCRIPT, speech_dir / "script.wav").read_bytes()


async def test_speech_recognition_transcribes_synthesized_speech_with_low_wer(
    api: ApiClient, ai: dict[str, Any], script_wav: bytes
) -> None:
    r = await api.post(
        "/api/v1/speech/recognition",
        headers=ai["user"]["headers"],
        files={"audio": ("script.wav", script_wav, "audio/wav")},
        data={"language": "en-US", "model": "whisper-base"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "whisper-base"
    assert body["language"] == "en-US"
    assert wer(SCRIPT, body["text"]) < 0.10, body["text"]
    assert 10 < body["duration"] < 20
    assert 0 < body["confidence"] <= 1
    # The right words, in order, at plausible times inside the audio.
    spoken = [w for w in body["words"] if words(w["word"])]
    assert len(spoken) >= 0.9 * len(words(SCRIPT))
    starts = [w["start_time"] for w in spoken]
    assert starts == sorted(starts)
    assert all(w["end_time"] >= w["start_time"] for w in spoken)
    assert spoken[-1]["end_time"] <= body["duration"] + 0.5
    budget = next(w for w in spoken if words(w["word"]) == ["budget"])
    friday = next(w for w in spoken if words(w["word"]) == ["friday"])
    # "budget" is spoken in the second sentence, "Friday" at the end of the third.
    assert 1.5 < budget["start_time"] < friday["start_time"] < body["duration"] * 0.75


async def test_transcribe_answers_valid_srt_vtt_and_json_with_word_timestamps(
    api: ApiClient, ai: dict[str, Any], script_wav: bytes
) -> None:
    results = {}
    for fmt in ("srt", "vtt", "json", "text"):
        r = await api.post(
            "/api/v1/ai/transcribe",
            headers=ai["user"]["headers"],
            files={"audio": ("s.wav", script_wav, "audio/wav")},
            data={"format": fmt, "language": "en", "model": "whisper-tiny.en"},
        )
        assert r.status_code == 200, r.text
        results[fmt] = r.json()
        assert results[fmt]["model"] == "whisper-tiny.en"
    srt = results["srt"]["transcription"]
    blocks = [b for b in srt.strip().split("\n\n") if b]
    assert blocks
    stamp = r"\d\d:\d\d:\d\d,\d\d\d --> \d\d:\d\d:\d\d,\d\d\d"
    for i, block in enumerate(blocks, 1):
        lines = block.split("\n")
        assert lines[0] == str(i)
        assert re.fullmatch(stamp, lines[1])
        assert lines[2].strip()
    vtt = results["vtt"]["transcription"]
    assert vtt.startswith("WEBVTT\n\n")
    cues = re.findall(r"(\d\d:\d\d:\d\d\.\d\d\d) --> (\d\d:\d\d:\d\d\.\d\d\d)\n(.+)", vtt)
    assert len(cues) == len(blocks)
    assert all(a <= b for a, b, _ in cues)
    as_json = results["json"]
    assert as_json["word_count"] == len(as_json["transcription"].split())
    assert all(seg["words"] for seg in as_json["segments"])
    assert results["text"]["segments"][0]["words"] is None  # timestamps=false
    assert "budget" in results["text"]["transcription"].lower()


async def test_speech_longer_than_a_window_is_batched_and_cut_into_short_cues(
    api: ApiClient, ai: dict[str, Any], speech_dir: Path
) -> None:
    """Over 30 s the server decodes VAD windows as a batch; each window comes back as
    one segment and must still reach the user as caption-sized cues, every word kept."""
    long_script = " ".join([SCRIPT] * 3)
    audio = espeak(long_script, speech_dir / "long.wav").read_bytes()
    r = await api.post(
        "/api/v1/ai/transcribe",
        headers=ai["user"]["headers"],
        files={"audio": ("long.wav", audio, "audio/wav")},
        data={"format": "json", "language": "en", "model": "whisper-tiny.en"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["duration"] > 30
    assert wer(long_script, body["transcription"]) < 0.10, body["transcription"]
    segments = body["segments"]
    assert len(segments) >= 6  # the script has 15 sentences in 3 windows at most
    for seg in segments:
        assert seg["end"] - seg["start"] <= 7.5, seg
        assert seg["words"], seg
        assert seg["start"] <= seg["words"][0]["start"] <= seg["words"][-1]["end"] <= seg["end"]
    starts = [seg["start"] for seg in segments]
    assert starts == sorted(starts)
    assert segments[-1]["end"] <= body["duration"] + 0.5


async def test_a_language_the_model_cannot_handle_is_refused(
    api: ApiClient, ai: dict[str, Any], script_wav: bytes
) -> None:
    r = await api.post(
        "/api/v1/speech/recognition",
        headers=ai["user"]["headers"],
        files={"audio": ("s.wav", script_wav, "audio/wav")},
        data={"language": "pt-BR", "model": "whisper-tiny.en"},
    )
    err = assert_error(r, 400, "UNSUPPORTED_LANGUAGE")
    assert "whisper-tiny.en" in err["message"]


async def test_unsupported_audio_format_and_missing_auth_are_refused(
    api: ApiClient, ai: dict[str, Any]
) -> None:
    for path in (
        "/api/v1/speech/recognition",
        "/api/v1/speech/emotion",
        "/api/v1/speech/synthesis-detection",
        "/api/v1/ai/transcribe",
        "/api/v1/audio/denoising",
    ):
        r = await api.post(
            path,
            headers=ai["user"]["headers"],
            files={"audio": ("notes.txt", b"this is not audio at all", "text/plain")},
        )
        err = assert_error(r, 400, "UNSUPPORTED_FORMAT")
        assert "wav, mp3, ogg, flac" in err["message"]
        r = await api.post(path, files={"audio": ("a.wav", b"RIFF", "audio/wav")})
        assert_error(r, 401, "MISSING_TOKEN")
    r = await api.post(
        "/api/v1/ai/transcribe",
        headers=ai["user"]["headers"],
        files={"audio": ("a.wav", b"RIFF\x00\x00\x00\x00WAVEjunk", "audio/wav")},
        data={"format": "docx"},
    )
    assert_error(r, 400, "VALIDATION_ERROR")


async def test_emotion_baseline_names_itself_and_uses_documented_labels(
    api: ApiClient, ai: dict[str, Any], script_wav: bytes
) -> None:
    r = await api.post(
        "/api/v1/speech/emotion",
        headers=ai["user"]["headers"],
        files={"audio": ("s.wav", script_wav, "audio/wav")},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "prosody-lexicon-baseline"
    assert body["baseline"] is True
    assert "heuristic" in body["method"]
    labels = {"happy", "sad", "angry", "neutral", "surprised", "fearful", "disgusted"}
    assert body["emotions"]
    assert {e["emotion"] for e in body["emotions"]} <= labels
    assert body["dominant_emotion"] in labels
    assert body["emotions"][-1]["end_time"] == pytest.approx(
        body["emotions"][-1]["start_time"] + 2.5, abs=2.5
    )


async def test_synthesis_detection_without_a_deployed_model_says_how_to_deploy_one(
    api: ApiClient, ai: dict[str, Any], script_wav: bytes
) -> None:
    r = await api.post(
        "/api/v1/speech/synthesis-detection",
        headers=ai["user"]["headers"],
        files={"audio": ("s.wav", script_wav, "audio/wav")},
    )
    err = assert_error(r, 503, "MODEL_NOT_READY")
    assert "InferenceModel" in err["message"]
    assert "synthesis-detection" in err["message"]
