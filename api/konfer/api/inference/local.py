"""The local runtime: each node is a ``konfer model-server`` child process on 127.0.0.1.

Started on demand (``/models/{id}/load``, or ``KONFER_AI_AUTOLOAD`` at start), stopped on
unload or when the api stops; ``--exit-with-parent`` makes a child die with a replica that
is killed outright. A child that exits on its own is reported to ``on_exit`` so the service
takes it out of rotation and records the failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from konfer.api.inference.errors import ModelLoadFailed
from konfer.api.inference.runtime import Node
from konfer.core.inference import BUILTIN_MODELS, ModelSpec
from konfer.core.process import announced
from konfer.core.settings import Settings
from konfer.core.timeutil import utcnow

log = logging.getLogger(__name__)


class LocalModelRuntime:
    name = "local"
    shared_nodes = False

    def __init__(
        self, settings: Settings, on_exit: Callable[[Node], Awaitable[None]] | None = None
    ) -> None:
        self.settings = settings
        self.on_exit = on_exit
        self._children: dict[str, tuple[Node, asyncio.subprocess.Process]] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self._http = httpx.AsyncClient(timeout=5)

    def specs(self) -> list[ModelSpec]:
        deployed = {m.name: m for m in self.settings.ai_models}
        return [m for m in BUILTIN_MODELS if m.name not in deployed] + list(deployed.values())

    async def start(self, spec: ModelSpec, node_id: str) -> Node:
        with tempfile.TemporaryDirectory(prefix="konfer-model-") as folder:
            return await self._start(spec, node_id, Path(folder) / "url")

    async def _start(self, spec: ModelSpec, node_id: str, url_file: Path) -> Node:
        """Start a model server on a port the kernel picks; it names the port in
        ``url_file`` once the model is loaded and the port bound."""
        node = Node(node_id=node_id, spec=spec, url="")
        device = "gpu" if self.settings.ai_device == "gpu" else spec.device.value
        node.device = device
        args = [
            "-m",
            "konfer.cli.main",
            "model-server",
            "--name",
            spec.name,
            "--task",
            spec.task.value,
            "--runtime",
            spec.runtime.value,
            "--device",
            device,
            "--host",
            "127.0.0.1",
            "--http-port",
            "0",
            "--url-file",
            str(url_file),
            "--exit-with-parent",
        ]
        if spec.storage_uri:
            args += ["--storage-uri", spec.storage_uri]
        env = {**os.environ, **self._child_env()}
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable, *args, env=env, stdin=asyncio.subprocess.DEVNULL
        )
        node.pid = process.pid
        self._children[node_id] = (node, process)
        deadline = started + self.settings.ai_server_start_timeout_seconds
        while True:
            if process.returncode is not None:
                self._children.pop(node_id, None)
                raise ModelLoadFailed(
                    f"Failed to load model: the model server exited with {process.returncode}"
                    " while loading (see the api's log)"
                )
            if time.monotonic() > deadline:
                await self._terminate(process)
                self._children.pop(node_id, None)
                raise ModelLoadFailed("Failed to load model: the model server did not get ready")
            if not node.url:
                node.url = announced(url_file) or ""
            if node.url:
                with contextlib.suppress(httpx.HTTPError):
                    ready = await self._http.get(f"{node.url}/v2/models/{spec.name}/ready")
                    if ready.status_code == 200:
                        break
            await asyncio.sleep(0.2)
        node.load_seconds = time.monotonic() - started
        node.loaded_at = node.last_seen = utcnow()
        node.status = "online"
        watcher = asyncio.create_task(self._watch(node, process), name=f"model-{node_id}")
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        log.info("model server ready", extra={"node_id": node_id, "model": spec.name})
        return node

    def _child_env(self) -> dict[str, str]:
        """The settings a model server needs, from this replica's (tests build them in
        process, so the environment alone would not carry them)."""
        s = self.settings
        env = {
            "HF_HUB_OFFLINE": "1",
            "KONFER_DATA_DIR": str(s.data_dir.resolve()),
            "KONFER_AI_CACHE_DIR": str(s.resolved_ai_cache_dir.resolve()),
            "KONFER_AI_CPU_THREADS": str(s.ai_cpu_threads),
            "KONFER_LOG_LEVEL": s.log_level,
            "KONFER_JSON_LOGS": "true" if s.json_logs else "false",
        }
        if s.s3_endpoint:
            env.update(
                {
                    "KONFER_S3_ENDPOINT": s.s3_endpoint,
                    "KONFER_S3_ACCESS_KEY": s.s3_access_key,
                    "KONFER_S3_SECRET_KEY": s.s3_secret_key.get_secret_value(),
                    "KONFER_S3_SECURE": "true" if s.s3_secure else "false",
                }
            )
            if s.s3_region:
                env["KONFER_S3_REGION"] = s.s3_region
        return env

    async def _watch(self, node: Node, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if node.status == "stopped":
            return
        log.error("model server exited", extra={"node_id": node.node_id, "returncode": code})
        node.status = "offline"
        node.error = f"exited with {code}"
        if self.on_exit is not None:
            await self.on_exit(node)

    async def _terminate(self, process: asyncio.subprocess.Process) -> None:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()

    async def stop(self, node: Node) -> None:
        node.status = "stopped"
        entry = self._children.pop(node.node_id, None)
        if entry is not None:
            await self._terminate(entry[1])

    async def release(self, spec: ModelSpec) -> None:
        """Nothing to do: a model's servers are its nodes, each stopped by ``stop``."""

    async def discover(self) -> list[Node]:
        return [node for node, _ in self._children.values()]

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(node) for node, _ in list(self._children.values())))
        for watcher in list(self._watchers):
            watcher.cancel()
        await self._http.aclose()
