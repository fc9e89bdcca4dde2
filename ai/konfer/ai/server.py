"""``konfer model-server``: one model behind ``kserve.ModelServer``.

The same entry point runs as a local child process of the api (local runtime) and as the
container of a KServe InferenceService that the operator creates for an ``InferenceModel``
(kubernetes runtime). It picks the runtime from the task and runtime named on the command
line, loads the model before it listens (so ready means ready), and serves kserve's V1 and
V2 REST protocol, health and readiness, ``/metrics``, plus ``/konfer/models/{name}``: what
the api needs to know about the model (task, languages, device, baseline or not).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from konfer.ai.base import KonferModel
from konfer.core.inference import ModelSpec, Runtime, Task
from konfer.core.process import announce, http_url
from konfer.core.settings import Settings

log = logging.getLogger(__name__)


class UnsupportedRuntime(ValueError):
    """No runtime serves this task with this runtime name."""


def build_model(spec: ModelSpec, settings: Settings, device: str = "cpu") -> KonferModel:
    """The model object for a spec; not loaded yet."""
    task, runtime = spec.task, spec.runtime
    if runtime is Runtime.onnx:
        from konfer.ai.runtimes.onnx import OnnxModel

        return OnnxModel(spec, settings, device)
    if task is Task.speech_recognition and runtime in (Runtime.faster_whisper, Runtime.ctranslate2):
        from konfer.ai.runtimes.whisper import WhisperModel

        return WhisperModel(spec, settings, device)
    if task is Task.translation and runtime is Runtime.ctranslate2:
        from konfer.ai.runtimes.ct2_translate import Ct2TranslateModel

        return Ct2TranslateModel(spec, settings, device)
    if runtime is Runtime.builtin:
        builtins: dict[Task, Any] = {}
        if task is Task.audio_denoising:
            from konfer.ai.runtimes.denoise import DenoiseModel

            builtins[task] = DenoiseModel
        elif task is Task.video_enhancement:
            from konfer.ai.runtimes.video import VideoModel

            builtins[task] = VideoModel
        elif task in (Task.sentiment, Task.summarization, Task.translation):
            from konfer.ai.runtimes import text

            builtins.update(
                {
                    Task.sentiment: text.SentimentModel,
                    Task.summarization: text.SummaryModel,
                    Task.translation: text.TranslateModel,
                }
            )
        elif task is Task.emotion_detection:
            from konfer.ai.runtimes.emotion import EmotionBaseline

            builtins[task] = EmotionBaseline
        if task in builtins:
            model: KonferModel = builtins[task](spec, settings, device)
            return model
    raise UnsupportedRuntime(
        f"no {runtime.value} runtime for task {task.value}; "
        "deploy it with runtime onnx (tensors; emotion and synthesis detection from audio) "
        "or ctranslate2 (speech-recognition, translation)"
    )


@dataclass(frozen=True, slots=True)
class ServeOptions:
    spec: ModelSpec
    host: str = "0.0.0.0"  # noqa: S104 - a pod listens on its own address
    port: int = 8080
    device: str = "cpu"
    url_file: Path | None = None  # where to say which port 0 became


def _add_info_route(model: KonferModel) -> None:
    from fastapi import HTTPException
    from kserve import model_server

    async def info(name: str) -> dict[str, Any]:
        if name != model.name:
            raise HTTPException(404, f"no model {name}")
        return {**model.describe(), "ready": model.ready}

    model_server.app.add_api_route("/konfer/models/{name}", info, methods=["GET"])


def serve(settings: Settings, options: ServeOptions) -> None:
    """Load the model, then serve it until SIGTERM."""
    from kserve import ModelServer
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from kserve.protocol.rest.server import RESTServer

    from konfer.ai import metrics

    # kserve answers through ORJSONResponse, which this FastAPI deprecates on every request.
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")
    metrics.install_node_gauges(settings.resolved_ai_cache_dir)
    model = build_model(options.spec, settings, options.device)
    model.load()
    log.info("model loaded", extra={"model": model.name, "seconds": model.load_seconds})
    _add_info_route(model)

    class _Server(ModelServer):
        """kserve's server with the listen address ours to choose (it binds 0.0.0.0)."""

        def start(self, models: list[Any]) -> None:
            self._register_and_check_atleast_one_model_is_ready(models)
            rest = RESTServer(
                FASTAPI_APP_IMPORT_STRING,
                self.dataplane,
                self.model_repository_extension,
                self.http_port,
                workers=1,
                grace_period=self.grace_period,
                timeout_keep_alive=self.timeout_keep_alive,
            )
            rest.config.host = options.host
            self._rest_server = rest
            sock = rest.config.bind_socket()
            if options.url_file is not None:
                announce(options.url_file, http_url(options.host, sock.getsockname()[1]))
            self.servers.append(_serve_rest(rest, sock))
            self.setup_event_loop()
            self.register_signal_handler()
            asyncio.run(self._serve())

    async def _serve_rest(rest: RESTServer, sock: socket.socket) -> None:
        """``RESTServer.start`` on a socket bound here (it binds its own, to a fixed port)."""
        rest.create_application()
        await rest._server.serve(sockets=[sock])

    server = _Server(http_port=options.port, enable_grpc=False, workers=1, grace_period=5)
    server.start([model])
