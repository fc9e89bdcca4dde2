"""The web client in Chromium: time from clicking Join to the first remote frame, and the
browser's own view of the media path (getStats round-trip time and jitter) through the SFU.

Why: a meeting is judged by how fast the other person appears after pressing Join and
how smooth they look afterwards. This drives the real web client (``web/``) in Debian's
headless Chromium with a fake camera and microphone, against a real ``konfer api``
replica with the SFU, all on 127.0.0.1 — the same setup as ``tests/e2e``.

- A presenter joins once and keeps publishing camera and microphone.
- A viewer opens the join screen (device check running), clicks Join, and the page marks
  ``konfer:first-remote-frame`` when the first frame of the presenter's video is presented
  (``requestVideoFrameCallback``); the time from the ``konfer:join-click`` mark to it is one
  sample. The viewer leaves and does it again: one warm-up, then ``--joins`` measured.
  Intermediate marks split the time: REST join answered, signaling ``joined``, first
  remote track negotiated.
- Then both stay for ``--steady`` seconds and both pages sample ``RTCPeerConnection.getStats``
  once a second: the selected ICE pair's ``currentRoundTripTime`` (STUN, browser ↔ SFU),
  ``remote-inbound-rtp.roundTripTime`` (RTCP, the SFU's receiver reports on what the
  browser publishes) and ``inbound-rtp.jitter`` (what the browser receives from the SFU).

Target (issue 10): first remote frame under 1.5 s (p50).

How to run::

    bash scripts/with-services.sh .venv/bin/python bench/browser.py

It rewrites the "## Browser" section of ``docs/benchmarks.md`` (``--no-write`` leaves the
file alone). The run takes about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/browser.py` puts bench/, not the root, first
    sys.path.insert(0, str(ROOT))

from bench.common import fresh_postgres_url, write_section  # noqa: E402
from playwright.async_api import async_playwright  # noqa: E402

from tests.e2e.browser import (  # noqa: E402
    CHROMIUM,
    Person,
    click_join,
    create_meeting,
    join,
    launch,
    new_person,
    open_join_screen,
    sign_up,
    unique,
    wait_video_playing,
)
from tests.integration.replicas import cluster  # noqa: E402

SECTION = "## Browser"
TARGET_FIRST_FRAME_MS = 1500.0
MARKS = ("join-answered", "joined", "first-remote-track", "first-remote-frame")

TIMINGS = """
() => {
  const at = (name) => {
    const e = performance.getEntriesByName("konfer:" + name);
    return e.length ? e[0].startTime : null;
  };
  const click = at("join-click");
  const out = {};
  for (const name of %s) {
    const t = at(name);
    out[name] = t === null || click === null ? null : t - click;
  }
  return out;
}
""" % list(MARKS)  # noqa: UP031

STATS = """
async () => {
  const out = { ice_rtt: [], rtcp_rtt: [], jitter_video: [], jitter_audio: [],
                fps: [], height: [], jb_delay: [], pair_local: [] };
  // Only tracks on screen now: a subscriber connection keeps the m-lines (and the
  // statistics) of tracks that ended, such as the viewer's earlier joins.
  const live = new Set();
  for (const el of document.querySelectorAll("video, audio")) {
    if (el.srcObject) el.srcObject.getTracks().forEach((t) => live.add(t));
  }
  for (const pc of window.__konferE2E.pcs) {
    if (pc.connectionState !== "connected") continue;
    for (const receiver of pc.getReceivers()) {
      if (!live.has(receiver.track)) continue;
      (await receiver.getStats()).forEach((s) => {
        if (s.type !== "inbound-rtp" || s.jitter === undefined) return;
        out[s.kind === "video" ? "jitter_video" : "jitter_audio"].push(s.jitter);
        if (s.kind !== "video") return;
        if (s.framesPerSecond) out.fps.push(s.framesPerSecond);
        if (s.frameHeight) out.height.push(s.frameHeight);
        if (s.jitterBufferEmittedCount) {
          out.jb_delay.push(s.jitterBufferDelay / s.jitterBufferEmittedCount);
        }
      });
    }
  }
  for (const pc of window.__konferE2E.pcs) {
    if (pc.connectionState !== "connected") continue;
    const report = await pc.getStats();
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    report.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) {
        const pair = byId.get(s.selectedCandidatePairId);
        if (!pair) return;
        if (pair.currentRoundTripTime !== undefined) out.ice_rtt.push(pair.currentRoundTripTime);
        out.pair_local.push(byId.get(pair.localCandidateId).address);
      } else if (s.type === "remote-inbound-rtp" && s.roundTripTime !== undefined) {
        out.rtcp_rtt.push(s.roundTripTime);
      }
    });
  }
  return out;
}
"""


@dataclass
class Report:
    joins: list[dict[str, float | None]] = field(default_factory=list)
    warmup: dict[str, float | None] = field(default_factory=dict)
    stats: dict[str, list[float]] = field(default_factory=dict)
    pair_local: dict[str, int] = field(default_factory=dict)  # selected pairs' local address
    busy_cores: float = 0.0
    wall_s: float = 0.0


def machine_busy_ticks() -> int:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4]  # less idle and iowait


async def first_frame(viewer: Person, meeting_id: str) -> dict[str, float | None]:
    """Join screen → Join → first remote frame; then leave. The page's marks, in ms."""
    await open_join_screen(viewer, meeting_id)
    await click_join(viewer)
    await viewer.page.wait_for_function(
        "() => performance.getEntriesByName('konfer:first-remote-frame').length > 0",
        timeout=30_000,
    )
    timings: dict[str, float | None] = await viewer.page.evaluate(TIMINGS)
    await viewer.page.get_by_role("button", name="Leave").click()
    await viewer.page.get_by_role("heading", name="You left the meeting.").wait_for()
    return timings


async def benchmark(base_url: str, joins: int, steady: float) -> Report:
    report = Report()
    started = time.monotonic()
    async with async_playwright() as pw:
        browser = await launch(pw)
        presenter = await new_person(browser, base_url, unique("presenter"))
        viewer = await new_person(browser, base_url, unique("viewer"))
        await asyncio.gather(sign_up(presenter), sign_up(viewer))
        meeting_id = await create_meeting(presenter, "Browser benchmark")
        await join(presenter, meeting_id)
        report.warmup = await first_frame(viewer, meeting_id)
        for i in range(joins):
            timings = await first_frame(viewer, meeting_id)
            report.joins.append(timings)
            print(f"join {i + 1}/{joins}: first remote frame {fmt(timings['first-remote-frame'])}")
        # Steady state: both in the room, both publishing; sample each page once a second.
        await join(viewer, meeting_id)
        await asyncio.gather(
            wait_video_playing(viewer, presenter.user_id),
            wait_video_playing(presenter, viewer.user_id),
        )
        await asyncio.sleep(2)  # let RTCP reports and the jitter estimate settle
        ticks0, t0 = machine_busy_ticks(), time.monotonic()
        samples: dict[str, list[float]] = {}
        for _ in range(int(steady)):
            for p in (presenter, viewer):
                got: dict[str, list[Any]] = await p.page.evaluate(STATS)
                for address in got.pop("pair_local"):
                    report.pair_local[address] = report.pair_local.get(address, 0) + 1
                for key, values in got.items():
                    samples.setdefault(key, []).extend(values)
            await asyncio.sleep(1)
        ticks = machine_busy_ticks() - ticks0
        report.busy_cores = ticks / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0)
        report.stats = samples
        await browser.close()
    report.wall_s = time.monotonic() - started
    return report


def fmt(ms: float | None) -> str:
    return "n/a" if ms is None else f"{ms:,.0f} ms"


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return re.sub(r"\s+\d+-Core Processor$", "", line.split(":", 1)[1].strip())
    return platform.processor() or "unknown"


def chromium_version() -> str:
    try:
        out = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def joins_table(report: Report) -> str:
    rows = [
        "| Phase (ms after the Join click) | p50 | p90 | min | max |",
        "|---|---:|---:|---:|---:|",
    ]
    names = {
        "join-answered": "`POST /meetings/{id}/join` answered",
        "joined": "signaling `joined` (socket open, room entered)",
        "first-remote-track": "first remote track (subscriber offer answered)",
        "first-remote-frame": "**first remote frame presented**",
    }
    for mark in MARKS:
        values = [j[mark] for j in report.joins if j.get(mark) is not None]
        cells = [f"{pct(values, q):,.0f}" for q in (0.5, 0.9)] if values else ["n/a", "n/a"]
        cells += [f"{min(values):,.0f}", f"{max(values):,.0f}"] if values else ["n/a", "n/a"]
        rows.append(f"| {names[mark]} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def stats_table(stats: dict[str, list[float]]) -> str:
    rows = ["| getStats value | samples | p50 | p90 |", "|---|---:|---:|---:|"]
    spec = [
        ("ice_rtt", "ICE candidate-pair `currentRoundTripTime` (STUN, browser ↔ SFU)", 1000, "ms"),
        ("rtcp_rtt", "`remote-inbound-rtp.roundTripTime` (RTCP from the SFU)", 1000, "ms"),
        ("jitter_video", "`inbound-rtp.jitter`, video received via the SFU", 1000, "ms"),
        ("jitter_audio", "`inbound-rtp.jitter`, audio received via the SFU", 1000, "ms"),
        ("jb_delay", "video jitter-buffer delay (`jitterBufferDelay ÷ emitted`)", 1000, "ms"),
        ("fps", "video frames per second decoded", 1, "fps"),
        ("height", "video frame height", 1, "px"),
    ]
    for key, label, scale, unit in spec:
        values = [v * scale for v in stats.get(key, [])]
        if not values:
            rows.append(f"| {label} | 0 | n/a | n/a |")
            continue
        p50, p90 = pct(values, 0.5), pct(values, 0.9)
        digits = 2 if unit == "ms" and p90 < 10 else 0
        rows.append(
            f"| {label} | {len(values)} | {p50:.{digits}f} {unit} | {p90:.{digits}f} {unit} |"
        )
    return "\n".join(rows)


def render(report: Report, joins: int, steady: float) -> str:
    frames = [j["first-remote-frame"] for j in report.joins if j["first-remote-frame"] is not None]
    p50 = statistics.median(frames) if frames else float("nan")
    met = "met" if p50 < TARGET_FIRST_FRAME_MS else "**missed**"
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    pairs = ", ".join(f"{n} with local {a}" for a, n in sorted(report.pair_local.items()))
    return f"""{SECTION}

Written by `bench/browser.py`; rerun it to refresh this section.

- Date: {now}
- Machine: {os.cpu_count()} cores (nproc), CPU "{cpu_model()}"; in the steady-state window
  the whole machine kept {report.busy_cores:.2f} cores busy (two browsers, the api, the SFU,
  PostgreSQL, Redis)
- Software: {chromium_version()} (headless, driven by Playwright
  {version("playwright")}), Python {platform.python_version()}, aiortc {version("aiortc")}
- Setup: one `konfer api` replica with `KONFER_SFU_ENABLED=true` and
  `KONFER_SFU_ICE_HOSTS=127.0.0.1` on PostgreSQL and Redis from `scripts/with-services.sh`;
  two browser contexts with Chromium's fake camera (640x360 asked, VP8) and microphone
  (Opus); every candidate but 127.0.0.1 dropped in the page (`tests/e2e/loopback_only.js`).
  Whole run {report.wall_s:.0f} s.

### Method

- A presenter joins once and keeps publishing. A viewer opens the join screen (camera
  preview and microphone meter running, as a person would see it), clicks **Join now**,
  and the web client marks the click and the first presented frame of the presenter's
  video (`requestVideoFrameCallback` on the tile's `<video>`). The viewer leaves and joins
  again: one warm-up join (first remote frame
  {fmt(report.warmup.get("first-remote-frame"))}, not counted), then {joins} measured.
- What a join includes: the REST join (media token), the page switching to the room, the
  signaling socket and `join`, the api registering the peer at the SFU, the SFU's
  subscriber offer and the browser's answer, ICE and DTLS on loopback, the SFU asking the
  presenter for a keyframe, and decoding it. The publisher connection (the viewer's own
  camera) is negotiated at the same time and is not waited for.
- Steady state: both stay {steady:.0f} s; each page samples `getStats()` once a second on
  both of its connections; the table pools the samples of both pages, counting only
  tracks on screen (a subscriber connection keeps the statistics of tracks that ended).

### Results: Join to first remote frame ({joins} joins)

{joins_table(report)}

Target: first remote frame under {TARGET_FIRST_FRAME_MS:,.0f} ms (p50).
Measured {p50:,.0f} ms: target {met}.

### Results: the media path as the browser sees it

{stats_table(report.stats)}

Round-trip times are on loopback, so they show what the SFU process and the two browsers
add (scheduling on 2 shared cores), not a network. Chromium reports the STUN round-trip
time and `inbound-rtp.jitter` in whole milliseconds, so 1 ms there means "at most about
1 ms". Selected ICE pairs sampled: {pairs}.
The SFU offers only 127.0.0.1 and the pages signal only 127.0.0.1, but Chromium also
pairs its sockets on the machine's other addresses with the SFU's 127.0.0.1 candidate
(it ranks loopback below Ethernet) and the SFU accepts them as peer-reflexive: the pairs
with a non-loopback local address carry packets addressed to 127.0.0.1 that stay on the
`lo` device but come from that address.
"""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--joins", type=int, default=10, help="measured joins (default 10)")
    parser.add_argument("--steady", type=float, default=10.0, help="steady-state seconds")
    parser.add_argument("--no-write", action="store_true", help="print only; leave the doc")
    args = parser.parse_args(argv)
    database_url = fresh_postgres_url()
    redis_url = os.environ["KONFER_TEST_REDIS_URL"]
    with tempfile.TemporaryDirectory(prefix="konfer-bench-browser-") as tmp:
        os.chdir(tmp)  # replicas start in the cwd: keep a developer's .env out of them
        with cluster(
            Path(tmp),
            database_url,
            redis_url,
            KONFER_SFU_ENABLED="true",
            KONFER_SFU_ICE_HOSTS="127.0.0.1",
        ) as c:
            replica = c.start()
            report = asyncio.run(benchmark(replica.http, args.joins, args.steady))
        os.chdir(ROOT)
    text = render(report, args.joins, args.steady)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
