"""Real api replicas as uvicorn processes sharing one PostgreSQL and one Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from tests.helpers import free_port

KONFER = str(Path(sys.executable).with_name("konfer"))


@dataclass
class Replica:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, token: str | None) -> str:
        query = f"?token={token}" if token is not None else ""
        return f"ws://127.0.0.1:{self.port}/ws/signaling{query}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@dataclass
class Cluster:
    env: dict[str, str]
    workdir: Path
    replicas: list[Replica] = field(default_factory=list)

    def start(self, **extra_env: str) -> Replica:
        port = free_port()
        log = self.workdir / f"replica-{port}.log"
        env = {
            **self.env,
            "KONFER_PORT": str(port),
            "KONFER_DATA_DIR": str(self.workdir / f"data-{port}"),
            **extra_env,
        }
        with log.open("wb") as out:
            proc = subprocess.Popen([KONFER, "api"], env=env, stdout=out, stderr=subprocess.STDOUT)
        replica = Replica(port, proc, log)
        self.replicas.append(replica)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{replica.http}/health/ready", timeout=2).status_code == 200:
                    return replica
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"replica failed to start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        for r in self.replicas:
            if r.proc.poll() is None:
                r.proc.terminate()
        for r in self.replicas:
            try:
                r.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                r.kill()


@contextmanager
def cluster(workdir: Path, database_url: str, redis_url: str, **env: str) -> Iterator[Cluster]:
    from konfer.core.keys import generate_key

    keys = workdir / "keys"
    generate_key(keys)  # every replica must sign and verify with the same keys
    base = {
        **os.environ,
        "KONFER_DATABASE_URL": database_url,
        "KONFER_REDIS_URL": redis_url,
        "KONFER_SIGNING_KEYS_DIR": str(keys),
        "KONFER_RATE_LIMIT_ENABLED": "false",
        "KONFER_LOG_LEVEL": "WARNING",
        "KONFER_PRESENCE_TTL_SECONDS": "2",
        "KONFER_PUBLIC_URL": "http://127.0.0.1",
        "KONFER_SFU_ENABLED": "false",
        "KONFER_SFU_ICE_HOSTS": "127.0.0.1",
        **env,
    }
    c = Cluster(base, workdir)
    try:
        yield c
    finally:
        c.stop()


async def recv_type(ws: ClientConnection, kind: str, within: float = 5.0) -> dict[str, Any]:
    """Next message of one type, skipping heartbeats and unrelated notifications."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise TimeoutError(f"no {kind!r} message within {within}s")
        msg: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), remaining))
        if msg.get("type") == kind:
            return msg


async def connect(url: str) -> ClientConnection:
    return await websockets.connect(url, max_size=None, open_timeout=10)
