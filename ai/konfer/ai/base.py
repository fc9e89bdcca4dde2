"""The one ``kserve.Model`` subclass every Konfer runtime builds on.

kserve hands ``predict`` either the V1 body (``{"instances": [...]}``) or a V2
``InferRequest``; runtimes see neither. They implement ``infer(request) -> result`` on
plain dicts (V2 inputs become fields: BYTES tensors as strings, others as numpy arrays)
and may override ``infer_tensors`` when they serve real tensors (the onnx runtime). The
answer goes back in the protocol it came in, with the model's name in it. Inference runs
in a worker thread so health and readiness probes keep answering while a long file is
transcribed; a semaphore bounds how many run at once.

Errors the api must tell apart travel as ``InvalidInput`` (HTTP 400) whose text starts
with a code: ``UNSUPPORTED_FORMAT:``, ``UNSUPPORTED_LANGUAGE:`` or ``VALIDATION_ERROR:``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from abc import abstractmethod
from typing import Any

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput

from konfer.ai import metrics
from konfer.core.inference import ModelSpec
from konfer.core.settings import Settings


def unsupported_format(message: str) -> InvalidInput:
    return InvalidInput(f"UNSUPPORTED_FORMAT: {message}")


def unsupported_language(message: str) -> InvalidInput:
    return InvalidInput(f"UNSUPPORTED_LANGUAGE: {message}")


def invalid(message: str) -> InvalidInput:
    return InvalidInput(f"VALIDATION_ERROR: {message}")


def request_from_v2(request: InferRequest) -> dict[str, Any]:
    """A V2 request as the dict runtimes read: each input by name, then the parameters."""
    fields: dict[str, Any] = {}
    for tensor in request.inputs:
        if tensor.datatype == "BYTES":
            values = [v.decode() if isinstance(v, bytes) else str(v) for v in tensor.data]
            fields[tensor.name] = values[0] if len(values) == 1 else values
        else:
            fields[tensor.name] = tensor.as_numpy()
    if request.parameters:
        fields.update({k: v for k, v in request.parameters.items() if k not in fields})
    return fields


class KonferModel(Model):
    """A model server's model: loads once, infers in a thread, names itself in answers."""

    # Heuristic stand-ins say so in every answer, whatever the deployment called them.
    BASELINE = False

    def __init__(self, spec: ModelSpec, settings: Settings, device: str = "cpu") -> None:
        super().__init__(spec.name)
        self.spec = spec
        self.settings = settings
        self.device = device
        self.load_seconds = 0.0
        self._gate = threading.BoundedSemaphore(1)

    def load(self) -> bool:
        started = time.perf_counter()
        self.load_model()
        self.load_seconds = time.perf_counter() - started
        metrics.LOAD_SECONDS.labels(self.name).set(self.load_seconds)
        self.ready = True
        return self.ready

    @abstractmethod
    def load_model(self) -> None:
        """Read the model's files and warm it up; raise when it cannot serve."""

    @abstractmethod
    def infer(self, request: dict[str, Any]) -> dict[str, Any]:
        """One request in, one JSON-able answer out (runs in a worker thread)."""

    def infer_tensors(self, request: InferRequest) -> InferResponse | None:
        """Runtimes serving raw tensors answer V2 requests here; None means 'use infer'."""
        return None

    def describe(self) -> dict[str, Any]:
        """What the api shows about this model (V1 metadata, /models)."""
        return {
            "name": self.name,
            "task": self.spec.task.value,
            "runtime": self.spec.runtime.value,
            "version": self.spec.version,
            "device": self.device,
            "baseline": self.is_baseline,
            "languages": self.languages(),
            "load_seconds": round(self.load_seconds, 3),
        }

    def languages(self) -> list[str] | None:
        return self.spec.languages

    @property
    def is_baseline(self) -> bool:
        return self.BASELINE or self.spec.baseline

    def _run(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._gate:
            return self.infer(request)

    async def predict(
        self,
        payload: dict[str, Any] | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        task = self.spec.task.value
        started = time.perf_counter()
        outcome = "error"
        metrics.IN_FLIGHT.labels(self.name).inc()
        try:
            if isinstance(payload, InferRequest):
                answer = await asyncio.to_thread(self.infer_tensors, payload)
                if answer is None:
                    result = await asyncio.to_thread(self._run, request_from_v2(payload))
                    answer = self._v2_answer(payload, result)
                outcome = "ok"
                return answer
            instances = payload.get("instances") if isinstance(payload, dict) else None
            if not isinstance(instances, list) or not instances:
                raise invalid('a V1 request is {"instances": [{...}]}')
            predictions = []
            for instance in instances:
                if not isinstance(instance, dict):
                    raise invalid("each instance is a JSON object")
                result = await asyncio.to_thread(self._run, instance)
                predictions.append(self._named(result))
            outcome = "ok"
            return {"predictions": predictions, "model": self.name}
        except InvalidInput:
            outcome = "invalid"
            raise
        finally:
            metrics.IN_FLIGHT.labels(self.name).dec()
            metrics.REQUESTS.labels(self.name, task, outcome).inc()
            metrics.LATENCY.labels(self.name, task).observe(time.perf_counter() - started)

    def _named(self, result: dict[str, Any]) -> dict[str, Any]:
        result.setdefault("model", self.name)
        if self.is_baseline:
            result.setdefault("baseline", True)
        return result

    def _v2_answer(self, request: InferRequest, result: dict[str, Any]) -> InferResponse:
        body = json.dumps(self._named(result), default=_jsonable)
        output = InferOutput(name="result", shape=[1], datatype="BYTES", data=[body])
        return InferResponse(
            response_id=request.id or uuid.uuid4().hex,
            model_name=self.name,
            infer_outputs=[output],
            parameters={"model": self.name},
        )


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
