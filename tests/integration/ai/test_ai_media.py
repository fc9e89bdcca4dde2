"""Audio denoising and video enhancement through the api and real model servers."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tests import media_samples as samples
from tests.conftest import ApiClient
from tests.helpers import assert_error
from tests.integration.ai.conftest import espeak, read_wav, write_wav


def snr_db(clean: np.ndarray, signal: np.ndarray) -> float:
    n = min(len(clean), len(signal))
    clean, signal = clean[:n], signal[:n]
    # The denoiser may delay and rescale: align by the best gain before comparing.
    gain = float(np.dot(clean, signal) / max(np.dot(clean, clean), 1e-9))
    noise = signal - gain * clean
    return 10 * np.log10(np.sum((gain * clean) ** 2) / max(np.sum(noise**2), 1e-9))


async def test_denoising_raises_snr_and_reports_measured_reduction(
    api: ApiClient, ai: dict[str, Any], speech_dir: Path
) -> None:
    speech_path = espeak("Please send the quarterly report before Friday.", speech_dir / "d.wav")
    speech, rate = read_wav(speech_path.read_bytes())
    # espeak speaks at 22.05 kHz; resample to 48 kHz (RNNoise's rate) for the comparison.
    t_new = np.arange(int(len(speech) * 48000 / rate)) / 48000
    clean = np.interp(t_new, np.arange(len(speech)) / rate, speech)
    clean = np.concatenate([np.zeros(24000), clean, np.zeros(24000)])
    rng = np.random.default_rng(7)
    noisy = clean + rng.normal(0, 0.5 * np.std(clean), len(clean))
    before = snr_db(clean, noisy)
    r = await api.post(
        "/api/v1/audio/denoising",
        headers=ai["user"]["headers"],
        files={"audio": ("noisy.wav", write_wav(noisy, 48000), "audio/wav")},
        data={"noise_reduction_level": "medium"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    assert r.headers["x-model"] == "rnnoise"
    assert float(r.headers["x-processing-time"]) > 0
    reported = float(r.headers["x-noise-reduction-db"])
    out, out_rate = read_wav(r.content)
    assert out_rate == 48000
    after = snr_db(clean, out)
    assert after > before + 3, (before, after)
    assert reported > 3
    r = await api.post(
        "/api/v1/audio/denoising",
        headers=ai["user"]["headers"],
        files={"audio": ("noisy.wav", write_wav(noisy, 48000), "audio/wav")},
        data={"noise_reduction_level": "extreme"},
    )
    assert_error(r, 400, "VALIDATION_ERROR")


def decoded_size(data: bytes) -> tuple[int, int, int]:
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(video=0))
        return frames[0].width, frames[0].height, len(frames)


@pytest.mark.parametrize(
    ("kind", "target", "expected"),
    [
        ("super_resolution", "320x240", (320, 240)),
        ("denoising", None, (160, 120)),
        ("stabilization", "192x144", (192, 144)),
        ("color_correction", None, (160, 120)),
    ],
)
async def test_each_enhancement_stores_a_decodable_video_of_the_requested_size(
    api: ApiClient, ai: dict[str, Any], kind: str, target: str | None, expected: tuple[int, int]
) -> None:
    source = samples.media("mp4", seconds=1.0, width=160, height=120, fps=10)
    data = {"enhancement_type": kind, "quality": "low" if kind == "denoising" else "medium"}
    if target:
        data["target_resolution"] = target
    h = ai["user"]["headers"]
    r = await api.post(
        "/api/v1/video/enhancement",
        headers=h,
        files={"video": ("clip.mp4", source, "video/mp4")},
        data=data,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "ffmpeg-filters"
    assert body["original_resolution"] == "160x120"
    assert body["enhanced_resolution"] == f"{expected[0]}x{expected[1]}"
    assert body["url"].endswith(f"/api/v1/media/download/{body['enhanced_video_id']}")
    item = await api.get(f"/api/v1/media/info/{body['enhanced_video_id']}", headers=h)
    assert item.status_code == 200, item.text
    assert item.json()["resolution"] == f"{expected[0]}x{expected[1]}"
    download = await api.get(f"/api/v1/media/download/{body['enhanced_video_id']}", headers=h)
    assert download.status_code == 200
    assert len(download.content) == body["file_size"]
    width, height, frames = decoded_size(download.content)
    assert (width, height) == expected
    assert frames >= 8


async def test_enhancement_refuses_bad_format_type_and_resolution(
    api: ApiClient, ai: dict[str, Any]
) -> None:
    h = ai["user"]["headers"]
    clip = samples.media("mp4", seconds=0.5, width=160, height=120, fps=10)
    r = await api.post(
        "/api/v1/video/enhancement",
        headers=h,
        files={"video": ("a.wav", samples.media("wav", seconds=0.2), "audio/wav")},
        data={"enhancement_type": "denoising"},
    )
    assert_error(r, 400, "UNSUPPORTED_FORMAT")
    r = await api.post(
        "/api/v1/video/enhancement",
        headers=h,
        files={"video": ("c.mp4", clip, "video/mp4")},
        data={"enhancement_type": "sparkle"},
    )
    assert_error(r, 400, "VALIDATION_ERROR")
    r = await api.post(
        "/api/v1/video/enhancement",
        headers=h,
        files={"video": ("c.mp4", clip, "video/mp4")},
        data={"enhancement_type": "super_resolution", "target_resolution": "huge"},
    )
    assert_error(r, 400, "VALIDATION_ERROR")
