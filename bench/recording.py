"""Recording cost: ``konfer recorder`` (stream copy) beside aiortc's MediaRecorder.

Why: the recorder writes what the SFU forwards without decoding or encoding (design §4).
What that saves only means something next to the default way to record with aiortc,
``aiortc.contrib.media.MediaRecorder`` (decode every track, encode it again into the
file), measured in the same run on the same machine with the same tracks.

What runs (all on 127.0.0.1, each its own process): a real ``konfer sfu``; two aiortc
publishers in this process (camera 320x240 30 fps VP8 + Opus each: four tracks); then,
one after the other, a real ``konfer recorder`` (hidden subscriber, recorder token, local
storage, reporting to a small status sink in this process) and the MediaRecorder
subscriber of this file (``mediarecorder`` subcommand, same SFU client, no tap). For
each: CPU of the recording process (user + system from ``/proc/<pid>/stat``) over one
window after its first frame, resident memory sampled every second, and for the
recorder the time from SIGTERM to the "completed" report (the file is in storage and
downloadable at that moment).

Run ``.venv/bin/python bench/recording.py`` (about 2 minutes). It prints a table and
rewrites the "## Recording" section of ``docs/benchmarks.md`` (``--no-write`` to leave
it). ``--window`` sets the CPU window in seconds (default 20).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import write_section  # noqa: E402

from tests.integration.sfu_peers import (  # noqa: E402
    Keys,
    Participant,
    PatternVideo,
    ToneAudio,
    eventually,
    gather_on_loopback,
    sfu_process,
)

TICKS = os.sysconf("SC_CLK_TCK")
LOAD_AT_START = os.getloadavg()[0]
TRACKS = 4


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sink:
    """The api's report route, as far as a recorder needs it."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, dict[str, Any]]] = []
        self.port = 0  # the port the kernel gave the sink, once it is running

    async def report(self, request: Request) -> JSONResponse:
        self.reports.append((time.monotonic(), await request.json()))
        return JSONResponse({"stop": False, "status": "recording"})

    def first(self, phase: str) -> float | None:
        return next((t for t, r in self.reports if r.get("phase") == phase), None)

    @contextlib.asynccontextmanager
    async def running(self) -> Any:
        app = Starlette(
            routes=[
                Route("/api/v1/internal/recordings/{rid}/report", self.report, methods=["POST"])
            ]
        )
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off")
        )
        task = asyncio.create_task(server.serve())
        assert await eventually(lambda: server.started, 10), "the status sink did not start"
        self.port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.should_exit = True
            await task


BASELINE_WINDOW_S = 60.0


async def measure(pid: int, window: float) -> dict[str, float]:
    before, t0 = cpu_seconds(pid), time.monotonic()
    rss = [rss_mb(pid)]
    while time.monotonic() - t0 < window:
        await asyncio.sleep(1.0)
        rss.append(rss_mb(pid))
    cpu = (cpu_seconds(pid) - before) / (time.monotonic() - t0)
    return {"cpu": cpu, "rss_start": rss[0], "rss_end": rss[-1], "rss_max": max(rss)}


async def run_recorder(
    sfu: str, keys: Keys, meeting: str, workdir: Path, window: float, layout: str = "per-track"
) -> dict[str, float]:
    rid = str(uuid.uuid4())
    sink = Sink()
    token = keys.token(
        rid, meeting, can_publish=False, can_publish_sources=[], hidden=True, recorder=True
    )
    async with sink.running():
        env = {
            **os.environ,
            "KONFER_RECORDER_TOKEN": token,
            "KONFER_RECORDER_CALLBACK_URL": f"http://127.0.0.1:{sink.port}",
            "KONFER_DATA_DIR": str(workdir / "data"),
            "KONFER_S3_ENDPOINT": "",
            "KONFER_SFU_ICE_HOSTS": "127.0.0.1",
            "KONFER_RECORDER_TERMINATION_LOG": str(workdir / "termination-log"),
            "KONFER_JSON_LOGS": "false",
            "KONFER_LOG_LEVEL": "WARNING",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "konfer.cli.main", "recorder",
            "--recording-id", rid, "--meeting-id", meeting, "--sfu-url", sfu, "--format", "webm",
            "--layout", layout,
            env=env, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert await eventually(lambda: sink.first("recording") is not None, 30), "no media"
        await asyncio.sleep(3)  # every track started
        result = await measure(proc.pid, window)
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = await proc.communicate()
        done = sink.first("completed")
        assert done is not None, out.decode()
        summary = json.loads(out.decode().strip().splitlines()[-1])
        final = next(r for t, r in sink.reports if r.get("phase") == "completed")
        compose_cpu = float(final["quality_metrics"].get("compose_cpu_seconds", 0.0))
        decoders = final["quality_metrics"]["decoders_created"]
        result.update(
            compose_cpu=compose_cpu,
            stop_to_stored=done - stopped,
            decoders=float(decoders),
            size_mb=summary["sizeBytes"] / 1e6,
            seconds=summary["durationSeconds"],
        )
    return result


async def run_mediarecorder(
    sfu: str, keys: Keys, meeting: str, workdir: Path, window: float
) -> dict[str, float]:
    token = keys.token(
        str(uuid.uuid4()), meeting, can_publish=False, can_publish_sources=[], hidden=True
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "mediarecorder", sfu, token, str(workdir / "aiortc.webm"),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line.strip() == b"recording", line
    await asyncio.sleep(3)
    result = await measure(proc.pid, window)
    proc.send_signal(signal.SIGTERM)
    await proc.wait()
    return result


async def mediarecorder_main(sfu: str, token: str, path: str) -> None:
    """A subscriber recording with aiortc's MediaRecorder (decode + encode), for comparison."""
    from aiortc.contrib.media import MediaRecorder

    from konfer.sfu.recorder.sfu_client import SfuSubscriber

    gather_on_loopback()
    recorder = MediaRecorder(path)
    tracks: list[Any] = []
    all_tracks = asyncio.Event()

    def on_track(remote: Any, receiver: Any) -> None:
        tracks.append(receiver.track)
        recorder.addTrack(receiver.track)
        if len(tracks) >= TRACKS:
            all_tracks.set()

    sub = SfuSubscriber(sfu, token, f"mr-{uuid.uuid4().hex[:8]}", on_track)
    await sub.join()
    runner = asyncio.create_task(sub.run())
    await all_tracks.wait()
    await recorder.start()
    print("recording", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    runner.cancel()
    await recorder.stop()
    await sub.close()


async def bench(window: float) -> dict[str, dict[str, float]]:
    gather_on_loopback()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        keys = Keys(workdir)
        meeting = str(uuid.uuid4())
        async with sfu_process(keys, meeting) as sfu:
            people = [Participant(sfu, keys, meeting) for _ in range(2)]
            for p in people:
                await p.join()
                await p.publish(PatternVideo(size=(320, 240)), ToneAudio(loud=True))
            results = {
                "recorder": await run_recorder(sfu, keys, meeting, workdir, window),
                "composed": await run_recorder(
                    sfu, keys, meeting, workdir, min(window, 10.0), "grid"
                ),
                # The baseline is for the CPU ratio; its memory over a long window is not ours.
                "mediarecorder": await run_mediarecorder(
                    sfu, keys, meeting, workdir, min(window, BASELINE_WINDOW_S)
                ),
            }
            for p in people:
                await p.close()
    return results


def render(results: dict[str, dict[str, float]], window: float, started: datetime) -> str:
    rec, mr, comp = results["recorder"], results["mediarecorder"], results["composed"]
    per_track = rec["cpu"] / TRACKS * 100
    mr_track = mr["cpu"] / TRACKS * 100
    verdict = "meets" if per_track < 1.0 else "misses"
    rows = [
        "| Recording process | CPU (% of a core) | per track | RSS start → end (max), MB |",
        "|---|---:|---:|---:|",
        f"| `konfer recorder`, stream copy | {rec['cpu'] * 100:.2f} | {per_track:.2f} "
        f"| {rec['rss_start']:.0f} → {rec['rss_end']:.0f} ({rec['rss_max']:.0f}) |",
        f"| aiortc MediaRecorder (decode + encode) | {mr['cpu'] * 100:.1f} | {mr_track:.1f} "
        f"| {mr['rss_start']:.0f} → {mr['rss_end']:.0f} ({mr['rss_max']:.0f}) |",
    ]
    return "\n".join(
        [
            "## Recording",
            "",
            "Written by `bench/recording.py`; rerun it to refresh this section.",
            "",
            f"- Date: {started:%Y-%m-%d %H:%M} UTC",
            f"- Machine: {os.cpu_count()} cores, {platform.machine()}; load average "
            f"{LOAD_AT_START:.1f} when the run started (other work shares the cores: "
            "absolute numbers are noisy, the ratio to MediaRecorder less so)",
            f"- Software: Python {platform.python_version()}, aiortc {version('aiortc')}, "
            f"PyAV {version('av')}",
            f"- Tracks: 2 publishers x (VP8 320x240 30 fps + Opus) = {TRACKS} tracks through a "
            f"real `konfer sfu`; `konfer recorder` measured over a {window:.0f} s window after "
            f"its first frame (+3 s), MediaRecorder over {min(window, BASELINE_WINDOW_S):.0f} s",
            "",
            *rows,
            "",
            f"- Stream copy: **{per_track:.2f} % of a core per recorded track** "
            f"({verdict} the < 1 % target); MediaRecorder needs "
            f"{mr['cpu'] / rec['cpu']:.0f}x the CPU for the same tracks. Where it goes "
            "(py-spy, 10 s at 200 Hz): about half is SRTP decryption (pylibsrtp) and most of "
            "the rest aiortc's receive path (RTP parsing, RTCP, NACK bookkeeping) that every "
            "WebRTC receiver pays; the tap and the spool writes do not show in the profile.",
            f"- Decoders created by the recorder: {rec['decoders']:.0f}.",
            f'- Stop → stored and downloadable (SIGTERM to the "completed" report, '
            f"{rec['seconds']:.0f} s / {rec['size_mb']:.1f} MB file, local storage): "
            f"{rec['stop_to_stored'] * 1000:.0f} ms.",
            f"- Memory: the recorder's RSS went {rec['rss_start']:.0f} → {rec['rss_end']:.0f} MB "
            f"over the window; frames go straight to spool files, nothing accumulates per "
            "frame (`--window 600` repeats this over 10 minutes).",
            f"- Composed (`--layout grid`, 1280x720 at 15 fps, VP8 + Opus mix, made after "
            f"stop from the spools): {comp['compose_cpu'] / comp['seconds']:.2f} s of CPU per "
            f"recorded second ({comp['compose_cpu']:.1f} s for {comp['seconds']:.0f} s; "
            f"{comp['decoders']:.0f} decoders), so stop → stored took "
            f"{comp['stop_to_stored']:.1f} s; while recording, the same process used "
            f"{comp['cpu'] * 100:.2f} % of a core (stream copy only).",
        ]
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "mediarecorder":
        import uvloop

        uvloop.run(mediarecorder_main(*sys.argv[2:5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    started = datetime.now(UTC)
    results = asyncio.run(bench(args.window))
    text = render(results, args.window, started)
    print(text)
    if not args.no_write:
        write_section("## Recording", text)


if __name__ == "__main__":
    main()
