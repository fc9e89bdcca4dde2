"""``runtime: ctranslate2`` for translation: a CTranslate2 translator folder from a storage
URI (Opus-MT, NLLB, M2M100 converted with ``ct2-transformers-converter``), tokenized with
the folder's ``tokenizer.json`` (Hugging Face ``tokenizers``, no sentencepiece needed).

An optional ``konfer.json`` in the folder names the pairs (``{"languages": ["en-zh"]}``)
and, for multilingual models, the target-language token (``{"target_prefix": {"zh":
"zho_Hans"}}``). No such model ships in a package; the tests build a tiny one with
CTranslate2's own model specs.
"""

from __future__ import annotations

import json
import time
from typing import Any

from konfer.ai.base import KonferModel, invalid, unsupported_language
from konfer.ai.models import ModelFilesError, resolve
from konfer.ai.runtimes.text import text_field


class Ct2TranslateModel(KonferModel):
    def load_model(self) -> None:
        import ctranslate2
        import tokenizers

        folder = resolve(self.spec.storage_uri, self.settings)
        if folder is None or not (folder / "model.bin").is_file():
            raise ModelFilesError(f"{self.spec.storage_uri}: not a CTranslate2 model folder")
        if not (folder / "tokenizer.json").is_file():
            raise ModelFilesError(f"{self.spec.storage_uri}: tokenizer.json is missing")
        gpu = self.device == "gpu"
        self.translator = ctranslate2.Translator(
            str(folder),
            device="cuda" if gpu else "cpu",
            compute_type="float16" if gpu else "int8",
            intra_threads=self.settings.ai_cpu_threads,
        )
        self.tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        meta_file = folder / "konfer.json"
        self.meta: dict[str, Any] = json.loads(meta_file.read_text()) if meta_file.is_file() else {}

    def languages(self) -> list[str] | None:
        pairs = self.spec.languages or self.meta.get("languages")
        return list(pairs) if pairs else None

    def infer(self, request: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        text = text_field(request)
        target = str(request.get("target_language") or "").lower().split("-")[0]
        source_raw = request.get("source_language")
        pairs = self.languages() or []
        candidates = [p for p in pairs if p.endswith(f"-{target}")]
        if source_raw:
            source = str(source_raw).lower().split("-")[0]
        elif len(candidates) == 1:
            source = candidates[0].split("-")[0]
        else:
            raise invalid("give source_language for this model")
        if pairs and f"{source}-{target}" not in pairs:
            raise unsupported_language(
                f"model {self.name} translates {', '.join(pairs)}, not {source}-{target}"
            )
        tokens = self.tokenizer.encode(text).tokens
        prefix = self.meta.get("target_prefix", {}).get(target)
        # A sentence's translation is rarely over twice its length: the bound keeps a model
        # that never emits its end token from decoding for the default 256 steps.
        results = self.translator.translate_batch(
            [tokens],
            target_prefix=[[prefix]] if prefix else None,
            beam_size=2,
            max_decoding_length=2 * len(tokens) + 16,
        )
        hypothesis = list(results[0].hypotheses[0])
        if prefix and hypothesis[:1] == [prefix]:
            hypothesis = hypothesis[1:]
        ids = [i for i in (self.tokenizer.token_to_id(t) for t in hypothesis) if i is not None]
        return {
            "translated_text": self.tokenizer.decode(ids, skip_special_tokens=True),
            "source_language": source,
            "target_language": target,
            "confidence": None,
            "processing_time": round(time.perf_counter() - started, 4),
        }
