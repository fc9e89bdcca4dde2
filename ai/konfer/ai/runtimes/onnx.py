"""``runtime: onnx`` — serve an ONNX model the platform team deploys (storage URI).

Two ways in. V2 tensor requests whose inputs name the graph's inputs run as they are and
return every graph output (any model, any task). Task calls from the api (emotion
detection, synthesis detection) send audio: it is decoded to 16 kHz mono float32 and fed
as a ``[1, samples]`` tensor to the first input; the first output is read as scores over
the labels found in the model's metadata (``labels``, comma-separated) or ``labels.txt``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse

from konfer.ai import audio
from konfer.ai.base import KonferModel, invalid
from konfer.ai.models import ModelFilesError, resolve
from konfer.core.inference import Task

_SYNTHETIC = {"synthetic", "fake", "spoof", "deepfake", "generated"}
_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(string)": np.object_,
}
# By dtype name: onnxruntime may hand back numpy.longlong, a class distinct from int64.
_V2 = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32", "bool": "BOOL"}


def _find(folder: Path) -> Path:
    if folder.is_file():
        return folder
    direct = folder / "model.onnx"
    if direct.is_file():
        return direct
    found = sorted(folder.rglob("*.onnx"))
    if not found:
        raise ModelFilesError(f"{folder}: no .onnx file")
    return found[0]


class OnnxModel(KonferModel):
    def load_model(self) -> None:
        import onnxruntime

        folder = resolve(self.spec.storage_uri, self.settings)
        if folder is None:
            raise ModelFilesError("the onnx runtime needs a storage URI")
        path = _find(folder)
        providers = ["CPUExecutionProvider"]
        if self.device == "gpu":
            providers.insert(0, "CUDAExecutionProvider")
        options = onnxruntime.SessionOptions()
        if self.settings.ai_cpu_threads:
            options.intra_op_num_threads = self.settings.ai_cpu_threads
        self.session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=providers
        )
        meta = self.session.get_modelmeta().custom_metadata_map
        labels = meta.get("labels")
        labels_file = path.parent / "labels.txt"
        if labels:
            self.labels = [x.strip() for x in labels.split(",")]
        elif labels_file.is_file():
            self.labels = [x.strip() for x in labels_file.read_text().splitlines() if x.strip()]
        else:
            self.labels = []

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["inputs"] = [
            {"name": i.name, "shape": i.shape, "type": i.type} for i in self.session.get_inputs()
        ]
        info["outputs"] = [
            {"name": o.name, "shape": o.shape, "type": o.type} for o in self.session.get_outputs()
        ]
        info["labels"] = self.labels
        return info

    def infer_tensors(self, request: InferRequest) -> InferResponse | None:
        wanted = {i.name: i for i in self.session.get_inputs()}
        given = {t.name: t for t in request.inputs}
        if not given or not set(given) <= set(wanted):
            return None
        feed: dict[str, np.ndarray] = {}
        for name, tensor in given.items():
            dtype = _TYPES.get(wanted[name].type)
            if dtype is None:
                raise invalid(f"input {name}: type {wanted[name].type} is not served")
            feed[name] = np.asarray(tensor.as_numpy(), dtype=dtype)
        with self._gate:
            results = self.session.run(None, feed)
        outputs = []
        for meta, value in zip(self.session.get_outputs(), results, strict=True):
            array = np.asarray(value)
            datatype = _V2.get(array.dtype.name)
            if datatype is None:
                raise invalid(f"output {meta.name} is not a plain tensor (zipmap?)")
            out = InferOutput(name=meta.name, shape=list(array.shape), datatype=datatype)
            out.set_data_from_numpy(array, binary_data=False)
            outputs.append(out)
        return InferResponse(
            response_id=request.id or "",
            model_name=self.name,
            infer_outputs=outputs,
            parameters={"model": self.name},
        )

    def _scores(self, samples: np.ndarray) -> np.ndarray:
        first = self.session.get_inputs()[0]  # called from infer: the gate is already held
        raw = self.session.run(None, {first.name: samples.reshape(1, -1)})[0]
        scores = np.asarray(raw, dtype=np.float64).reshape(-1)
        if scores.min() < 0 or abs(scores.sum() - 1) > 1e-3:  # logits: softmax them
            exp = np.exp(scores - scores.max())
            scores = exp / exp.sum()
        return scores

    def infer(self, request: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        if self.spec.task not in (Task.emotion_detection, Task.synthesis_detection):
            raise invalid("this model takes V2 tensors named after its inputs")
        samples = audio.decode(audio.payload_bytes(request, "audio"), 16000)
        scores = self._scores(samples)
        labels = self.labels or [f"class_{i}" for i in range(len(scores))]
        if len(labels) != len(scores):
            raise invalid(f"the model returned {len(scores)} scores for {len(labels)} labels")
        ranked = sorted(zip(labels, scores.tolist(), strict=True), key=lambda p: -p[1])
        elapsed = round(time.perf_counter() - started, 4)
        if self.spec.task is Task.synthesis_detection:
            synthetic = sum(s for label, s in ranked if label.lower() in _SYNTHETIC)
            return {
                "is_synthetic": synthetic >= 0.5,
                "confidence": round(max(synthetic, 1 - synthetic), 4),
                "authenticity_score": round(1 - synthetic, 4),
                "scores": dict(ranked),
                "processing_time": elapsed,
            }
        duration = round(len(samples) / 16000, 3)
        return {
            "emotions": [
                {
                    "emotion": ranked[0][0],
                    "confidence": round(ranked[0][1], 4),
                    "start_time": 0.0,
                    "end_time": duration,
                }
            ],
            "dominant_emotion": ranked[0][0],
            "scores": dict(ranked),
            "processing_time": elapsed,
        }
