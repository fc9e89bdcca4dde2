"""Models the platform team deploys (ONNX and CTranslate2 from MinIO), routes with no model
at all, and the AI rate limit."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from minio import Minio

from konfer.core.inference import ModelSpec
from tests.conftest import SettingsFactory, service_env
from tests.helpers import assert_error
from tests.integration.ai.conftest import espeak


def iris_like_onnx() -> bytes:
    """A tiny scikit-learn classifier, converted with skl2onnx (plain tensor outputs)."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 0.3, (40, 2)), rng.normal(2, 0.3, (40, 2))]).astype(np.float32)
    y = np.array([0] * 40 + [1] * 40)
    model = LogisticRegression().fit(x, y)
    onx = to_onnx(model, x[:1], options={id(model): {"zipmap": False}})
    return bytes(onx.SerializeToString())


def loudness_detector_onnx() -> bytes:
    """An audio model: calls speech 'spoof' when its mean level is high. Labels in metadata."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Abs", ["audio"], ["mag"]),
            helper.make_node("ReduceMean", ["mag"], ["level"], keepdims=1),
            helper.make_node("Mul", ["level", "scale"], ["spoof"]),
            helper.make_node("Neg", ["spoof"], ["bona"]),
            helper.make_node("Concat", ["bona", "spoof"], ["scores"], axis=1),
        ],
        "loudness",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, None])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor("scale", TensorProto.FLOAT, [1], [40.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = "labels", "bonafide,spoof"
    return bytes(model.SerializeToString())


SOURCE_WORDS = ["hello", "world", "good", "morning", "friends"]
TARGET_WORDS = ["hallo", "welt", "guten", "morgen", "freunde"]


def tiny_ct2_translator(folder: Path, *, ends: bool = True) -> None:
    """A one-layer Transformer with seeded random weights, saved by CTranslate2 itself, with a
    word-level ``tokenizer.json``: what ``ct2-transformers-converter`` leaves, small enough to
    build here. Its German is nonsense; the serving path around it is what is under test.
    With ``ends=False`` it never emits its end token (a bias rules ``</s>`` out)."""
    from ctranslate2.specs import transformer_spec
    from ctranslate2.specs.model_spec import LayerSpec
    from tokenizers import Tokenizer, models, pre_tokenizers

    width, ffn = 16, 32
    specials = ["<unk>", "<s>", "</s>"]
    source, target = specials + SOURCE_WORDS, specials + TARGET_WORDS
    rng = np.random.default_rng(7)

    def shape(path: str) -> tuple[int, ...]:
        if path.endswith(("embeddings.weight", "embeddings0.weight")) or "projection" in path:
            return (len(source) if path.startswith("encoder") else len(target), width)
        if "ffn.linear_0" in path:
            return (ffn, width)
        if "ffn.linear_1" in path:
            return (width, ffn)
        if "self_attention.linear0" in path:
            return (3 * width, width)  # fused query, key, value
        if "attention.linear1" in path and "self_attention" not in path:
            return (2 * width, width)  # cross-attention: fused key, value
        return (width, width)

    def fill(layer: LayerSpec, prefix: str) -> None:
        for name, value in list(vars(layer).items()):
            path = f"{prefix}{name}"
            if isinstance(value, LayerSpec):
                fill(value, f"{path}.")
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, LayerSpec):
                        fill(item, f"{path}{i}.")
            elif value is None:  # a required weight
                if path.endswith("gamma"):
                    setattr(layer, name, np.ones(width, np.float32))
                elif path.endswith("beta"):
                    setattr(layer, name, np.zeros(width, np.float32))
                else:
                    setattr(layer, name, rng.normal(0, 0.5, shape(path)).astype(np.float32))

    spec = transformer_spec.TransformerSpec.from_config(1, 2)
    fill(spec, "")
    if not ends:
        bias = np.zeros(len(target), np.float32)
        bias[target.index("</s>")] = -1e4
        spec.decoder.projection.bias = bias
    spec.register_source_vocabulary(source)
    spec.register_target_vocabulary(target)
    spec.validate()
    spec.save(str(folder))
    vocab = {word: i for i, word in enumerate(specials + SOURCE_WORDS + TARGET_WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(specials)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "konfer.json").write_text(json.dumps({"languages": ["en-de"]}))


class RecordingTranslator:
    """The real CTranslate2 translator, keeping what each decode produced."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.hypotheses: list[list[str]] = []

    def translate_batch(self, *args: Any, **kwargs: Any) -> Any:
        results = self.real.translate_batch(*args, **kwargs)
        self.hypotheses += [list(r.hypotheses[0]) for r in results]
        return results


@pytest.mark.parametrize("words", [1, 4, 40])
def test_a_ctranslate2_translator_stops_decoding_at_twice_the_input_plus_16(
    tmp_path: Path, words: int
) -> None:
    """A model that never emits its end token would decode 256 tokens for any input without
    the cap; with it, a sentence of n tokens decodes exactly 2n + 16 and stops."""
    from konfer.ai.runtimes.ct2_translate import Ct2TranslateModel
    from konfer.core.settings import Settings

    tiny_ct2_translator(tmp_path, ends=False)
    spec = ModelSpec(
        name="en-de-ct2",
        task="translation",
        runtime="ctranslate2",
        storage_uri=f"file://{tmp_path}",
    )
    model = Ct2TranslateModel(spec, Settings(ai_cache_dir=tmp_path / "cache"), "cpu")
    model.load_model()
    recorder = RecordingTranslator(model.translator)
    model.translator = recorder
    text = " ".join(SOURCE_WORDS[i % len(SOURCE_WORDS)] for i in range(words))
    answer = model.infer({"text": text, "source_language": "en", "target_language": "de"})
    assert answer["target_language"] == "de"
    (hypothesis,) = recorder.hypotheses
    assert len(hypothesis) == 2 * words + 16


@pytest.fixture(scope="module")
def minio_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    endpoint = service_env("KONFER_TEST_S3_ENDPOINT")
    client = Minio(
        endpoint,
        access_key=service_env("KONFER_TEST_S3_ACCESS_KEY"),
        secret_key=service_env("KONFER_TEST_S3_SECRET_KEY"),
        secure=False,
    )
    bucket = "konfer-models-test"
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
    for prefix, blob in (("iris/v1", iris_like_onnx()), ("loudness/v1", loudness_detector_onnx())):
        client.put_object(bucket, f"{prefix}/model.onnx", io.BytesIO(blob), len(blob))
    ct2 = tmp_path_factory.mktemp("ct2-en-de")
    tiny_ct2_translator(ct2)
    for path in ct2.iterdir():
        client.fput_object(bucket, f"en-de-ct2/v1/{path.name}", str(path))
    return {"endpoint": endpoint, "bucket": bucket}


async def test_onnx_models_from_minio_serve_tensors_and_synthesis_detection(
    make_settings: SettingsFactory,
    open_client: Any,
    minio_models: dict[str, str],
    speech_dir: Path,
) -> None:
    settings = make_settings(
        "sqlite",
        s3_endpoint=minio_models["endpoint"],
        s3_access_key=service_env("KONFER_TEST_S3_ACCESS_KEY"),
        s3_secret_key=service_env("KONFER_TEST_S3_SECRET_KEY"),
        s3_bucket="konfer-onnx-app",
        ai_models=[
            ModelSpec(
                name="iris-onnx",
                task="sentiment",
                runtime="onnx",
                storage_uri=f"s3://{minio_models['bucket']}/iris/v1",
            ),
            ModelSpec(
                name="loudness-spoof",
                task="synthesis-detection",
                runtime="onnx",
                storage_uri=f"s3://{minio_models['bucket']}/loudness/v1",
            ),
        ],
        ai_autoload=["iris-onnx", "loudness-spoof"],
    )
    async with open_client(settings) as client:
        service = client.app.state.konfer.inference
        assert service._autoload_task is not None
        await service._autoload_task
        user = await client.signup()
        models = (await client.get("/api/v1/models", headers=user["headers"])).json()
        listed = {m["model_id"]: m for m in models["data"]["models"]}
        assert listed["iris-onnx"]["runtime"] == "onnx"
        assert listed["iris-onnx"]["status"] == "loaded"

        node = service.ready_nodes("iris-onnx")[0]
        async with httpx.AsyncClient(base_url=node.url) as direct:
            r = await direct.post(
                "/v2/models/iris-onnx/infer",
                json={
                    "inputs": [
                        {
                            "name": "X",
                            "shape": [2, 2],
                            "datatype": "FP32",
                            "data": [0.0, 0.1, 2.1, 1.9],
                        }
                    ]
                },
            )
            assert r.status_code == 200, r.text
            outputs = {o["name"]: o for o in r.json()["outputs"]}
            assert outputs["label"]["data"] == [0, 1]
            assert outputs["probabilities"]["shape"] == [2, 2]
            info = (await direct.get("/konfer/models/iris-onnx")).json()
            assert info["runtime"] == "onnx"
            assert info["inputs"][0]["name"] == "X"

        quiet = espeak("This is a quiet sentence.", speech_dir / "quiet.wav").read_bytes()
        r = await client.post(
            "/api/v1/speech/synthesis-detection",
            headers=user["headers"],
            files={"audio": ("q.wav", quiet, "audio/wav")},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "loudness-spoof"
        assert body["baseline"] is False
        assert isinstance(body["is_synthetic"], bool)
        assert body["authenticity_score"] == pytest.approx(
            1 - (body["confidence"] if body["is_synthetic"] else 1 - body["confidence"]), abs=1e-3
        )
        assert json.dumps(body)  # plain JSON


async def test_a_ctranslate2_translator_from_minio_serves_its_pairs_and_only_those(
    make_settings: SettingsFactory, open_client: Any, minio_models: dict[str, str]
) -> None:
    settings = make_settings(
        "sqlite",
        s3_endpoint=minio_models["endpoint"],
        s3_access_key=service_env("KONFER_TEST_S3_ACCESS_KEY"),
        s3_secret_key=service_env("KONFER_TEST_S3_SECRET_KEY"),
        s3_bucket="konfer-ct2-app",
        ai_models=[
            ModelSpec(
                name="en-de-ct2",
                task="translation",
                runtime="ctranslate2",
                storage_uri=f"s3://{minio_models['bucket']}/en-de-ct2/v1",
            )
        ],
        ai_autoload=["en-de-ct2"],
    )
    async with open_client(settings) as client:
        service = client.app.state.konfer.inference
        assert service._autoload_task is not None
        await service._autoload_task
        user = await client.signup()
        request = {"text": "hello good friends", "source_language": "en", "target_language": "de"}
        answers = []
        for _ in range(2):
            r = await client.post("/api/v1/ai/translate", headers=user["headers"], json=request)
            assert r.status_code == 200, r.text
            answers.append(r.json())
        body = answers[0]
        assert body["model"] == "en-de-ct2"  # chosen for the pair: no other model covers it
        assert body["baseline"] is False
        assert (body["source_language"], body["target_language"]) == ("en", "de")
        # Decoded by the model (bounded), detokenized into target words, special tokens gone.
        words = body["translated_text"].split()
        assert 0 < len(words) <= 2 * 3 + 16, body
        assert set(words) <= set(TARGET_WORDS), body
        assert answers[1]["translated_text"] == body["translated_text"]

        # Its pairs come from konfer.json: another target is refused, never invented.
        r = await client.post(
            "/api/v1/ai/translate",
            headers=user["headers"],
            json={**request, "target_language": "fr", "model": "en-de-ct2"},
        )
        err = assert_error(r, 400, "UNSUPPORTED_LANGUAGE")
        assert "en-de" in err["message"], err
        r = await client.post(
            "/api/v1/ai/translate",
            headers=user["headers"],
            json={**request, "target_language": "fr"},
        )
        assert_error(r, 503, "MODEL_NOT_READY")


ROUTES: list[tuple[str, dict[str, Any]]] = [
    ("/api/v1/speech/recognition", {"files": True}),
    ("/api/v1/speech/emotion", {"files": True}),
    ("/api/v1/speech/synthesis-detection", {"files": True}),
    ("/api/v1/ai/transcribe", {"files": True}),
    ("/api/v1/audio/denoising", {"files": True}),
    ("/api/v1/ai/summarize", {"json": {"text": "A. B."}}),
    ("/api/v1/ai/analyze", {"json": {"text": "fine"}}),
    ("/api/v1/ai/translate", {"json": {"text": "hi", "target_language": "pt"}}),
]


async def test_every_ai_route_without_a_model_answers_model_not_ready(
    make_settings: SettingsFactory, open_client: Any
) -> None:
    from tests import media_samples as samples

    wav = samples.media("wav", seconds=0.2)
    async with open_client(make_settings("sqlite")) as client:
        user = await client.signup()
        for path, kind in ROUTES:
            if kind.get("files"):
                r = await client.post(
                    path, headers=user["headers"], files={"audio": ("a.wav", wav, "audio/wav")}
                )
            else:
                r = await client.post(path, headers=user["headers"], json=kind["json"])
            err = assert_error(r, 503, "MODEL_NOT_READY")
            assert "deploy" in err["message"], path
        r = await client.post(
            "/api/v1/video/enhancement",
            headers=user["headers"],
            files={"video": ("c.mp4", samples.media("mp4", seconds=0.3), "video/mp4")},
            data={"enhancement_type": "denoising"},
        )
        assert_error(r, 503, "MODEL_NOT_READY")
        r = await client.post(
            "/api/v1/speech/recognition",
            headers=user["headers"],
            files={"audio": ("a.wav", wav, "audio/wav")},
            data={"model": "no-such-model"},
        )
        assert_error(r, 400, "VALIDATION_ERROR")
        listing = await client.get("/api/v1/nodes", headers=user["headers"])
        assert listing.json()["data"] == {"count": 0, "nodes": []}
        stats = await client.get("/api/v1/load-balancer/stats", headers=user["headers"])
        assert stats.json() == {"stats": {}}


async def test_ai_routes_share_the_ai_rate_limit_and_management_is_unlimited(
    make_settings: SettingsFactory, open_client: Any
) -> None:
    settings = make_settings(
        "sqlite", rate_limit_enabled=True, rate_limits={"ai": {"per_minute": 1, "burst": 2}}
    )
    async with open_client(settings) as client:
        user = await client.signup()
        h = user["headers"]
        r = await client.post("/api/v1/ai/analyze", headers=h, json={"text": "ok"})
        assert r.status_code == 503
        assert r.headers["x-ratelimit-limit"] == "1"
        r = await client.post("/api/v1/ai/summarize", headers=h, json={"text": "ok"})
        assert r.status_code == 503
        r = await client.post(
            "/api/v1/speech/emotion", headers=h, files={"audio": ("a.wav", b"RIFF", "audio/wav")}
        )
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["retry_after"] >= 1
        for _ in range(5):
            r = await client.get("/api/v1/models", headers=h)
            assert r.status_code == 200
            assert "x-ratelimit-limit" not in r.headers
