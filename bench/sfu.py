"""SFU forwarding cost, measured beside aiortc's MediaRelay and a bare uvloop UDP relay.

Why: the SFU (``konfer sfu``) forwards publishers' encoded RTP to subscribers without
decoding or encoding (design §3). What that saves is only meaningful next to what aiortc
does by default, ``aiortc.contrib.media.MediaRelay`` (decode once, re-encode for every
subscriber), and its per-packet cost only next to the floor of a Python event loop, a
uvloop process that receives a UDP datagram and sends it on once. All three are measured
in the same run on the same machine, so the ratios hold where absolute numbers would not.

What runs (everything on 127.0.0.1; each box its own process):

* the system under test: a real ``konfer sfu`` (uvloop, ``KONFER_SFU_ICE_HOSTS=127.0.0.1``)
  or the MediaRelay server of this file (``mediarelay`` subcommand, aiortc on uvloop);
* client workers (``worker`` subcommand): real aiortc peers gathering on 127.0.0.1 only.
  Publishers replay a pre-encoded clip (VP8 640x480 30 fps ≈ 0.9 Mbit/s, one keyframe a
  second, plus Opus 20 ms frames) through aiortc's own packetizer, so no client encodes
  in real time; subscribers hook their receivers (``konfer.sfu.aiortc_hooks``) to count
  RTP packets and frames instead of decoding, so 80 of them fit beside the server on two
  cores. At most 20 subscribers share a worker process;
* the bare relay (``udp-relay`` subcommand), driven from this process.

Run ``.venv/bin/python bench/sfu.py`` (4 to 7 minutes, after waiting up to 5 for other
processes to leave the cores alone). It prints markdown tables and rewrites the "## SFU"
section of ``docs/benchmarks.md`` (``--no-write`` to leave it). ``--profile 10`` adds a
py-spy profile of the SFU at the largest fan-out (py-spy comes with the dev extra).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import contextlib
import fractions
import json
import math
import os
import platform
import random
import re
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol, cast

import av
import httpx
import uvicorn
import uvloop
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs.opus import OpusEncoder
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/sfu.py` puts bench/, not the root, first
    sys.path.insert(0, str(ROOT))

from bench.common import DOC, write_section  # noqa: E402

from konfer.sfu import aiortc_hooks  # noqa: E402
from tests.helpers import free_port  # noqa: E402
from tests.integration.sfu_peers import (  # noqa: E402
    LOOPBACK,
    Keys,
    Participant,
    gather_on_loopback,
    new_pc,
    sfu_process,
)

SECTION = "## SFU"

FANOUT = (1, 10, 20, 40, 80)  # subscribers of one publisher, through the SFU
RELAY_FANOUT = (1, 10, 20)  # the same through MediaRelay (it saturates the machine by 20)
MESH = 6  # participants of a full-mesh call, each publishing and receiving the others
WINDOW_S = 10.0  # measured seconds per point
SETTLE_S = 3.0  # after every subscriber receives frames, before the window opens
PER_WORKER = 20  # subscribers per client process
QUIET_CORES = 0.3  # background load (cores) under which the machine counts as quiet
QUIET_WAIT_S = 300.0  # how long to wait for a quiet machine before measuring anyway
RETRY_CORES = 0.5  # a window with more background load than this is measured once more

WIDTH, HEIGHT, FPS = 640, 480, 30
CLIP_FRAMES = 60  # two seconds, keyframes at frames 0 and 30
VIDEO_CLOCK = 90000
AUDIO_RATE, AUDIO_SAMPLES = 48000, 960
PTS_JITTER = 1500  # RTP ticks of random offset per frame: makes each stream's timestamps unique
MARK_HISTORY = 3600  # frames kept per received video stream (two minutes)
SEND_HISTORY = 3600  # frames kept per published video track
MATCH_HISTORY_S = 60.0  # how late a frame may arrive and still be timed (MediaRelay lags)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MASK32 = 0xFFFFFFFF

# -- /proc ---------------------------------------------------------------------------------


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def machine_busy_seconds() -> float:
    """CPU seconds not idle (user, nice, system, irq, softirq) on all cores since boot.

    With tick accounting a process's system time includes the softirq ticks it was
    interrupted by (loopback delivery of what it sends), so softirq belongs in the total.
    """
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (values[0] + values[1] + values[2] + values[5] + values[6]) / CLOCK_TICKS


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def child_with_arg(arg: str) -> int:
    """Our child process with ``arg`` as one of its arguments (the SFU, by its meeting id)."""
    for pid in children_of(os.getpid()):
        with contextlib.suppress(OSError):
            if arg.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                return pid
    raise RuntimeError(f"no child process with {arg!r} on its command line")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


class CpuMeter:
    """CPU of a set of our processes, and what the rest of the machine used meanwhile."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.t0 = time.monotonic()
        self.ours0 = self._ours()
        self.busy0 = machine_busy_seconds()

    def _ours(self) -> float:
        total = 0.0
        for pid in self.pids:
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return total

    def background_cores(self) -> float:
        elapsed = time.monotonic() - self.t0
        ours = self._ours() - self.ours0
        busy = machine_busy_seconds() - self.busy0
        return max(0.0, (busy - ours) / elapsed)


async def wait_for_quiet(wait_s: float) -> tuple[float, float]:
    """Sample the background load; wait (up to QUIET_WAIT_S) while other work keeps cores busy.

    Returns (load first seen, load when measuring starts), in cores.
    """
    own = [os.getpid()]
    meter = CpuMeter(own)
    await asyncio.sleep(2.0)
    first = last = meter.background_cores()
    deadline = time.monotonic() + wait_s
    while last > QUIET_CORES and time.monotonic() < deadline:
        print(
            f"waiting: other processes keep {last:.2f} cores busy (top: {busiest()})",
            file=sys.stderr,
            flush=True,
        )
        meter = CpuMeter(own)
        await asyncio.sleep(10.0)
        last = meter.background_cores()
    return first, last


def busiest() -> str:
    """The three busiest processes of the machine over 0.5 s, for the log."""

    def snapshot() -> dict[int, tuple[float, str]]:
        out = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = (entry / "stat").read_text()
                    name = stat.split("(", 1)[1].rsplit(")", 1)[0]
                    fields = stat.rsplit(")", 1)[1].split()
                    out[int(entry.name)] = ((int(fields[11]) + int(fields[12])) / CLOCK_TICKS, name)
        return out

    before = snapshot()
    time.sleep(0.5)
    after = snapshot()
    usage = sorted(((after[p][0] - before[p][0]) / 0.5, after[p][1]) for p in after if p in before)[
        -3:
    ]
    return ", ".join(f"{name} {cores:.0%}" for cores, name in reversed(usage))


# -- the replayed media --------------------------------------------------------------------


@dataclass
class Clip:
    """Pre-encoded media that publishers replay: VP8 frames and Opus packets."""

    video: list[bytes]
    audio: list[bytes]

    def save(self, path: Path) -> None:
        path.write_text(
            json.dumps(
                {
                    "video": [base64.b64encode(b).decode() for b in self.video],
                    "audio": [base64.b64encode(b).decode() for b in self.audio],
                }
            )
        )

    @classmethod
    def load(cls, path: Path) -> Clip:
        raw = json.loads(path.read_text())
        return cls(
            [base64.b64decode(s) for s in raw["video"]], [base64.b64decode(s) for s in raw["audio"]]
        )

    @property
    def video_kbps(self) -> float:
        return sum(map(len, self.video)) * 8 * FPS / len(self.video) / 1000


def encode_clip() -> Clip:
    """Two seconds of 640x480 VP8 at ≈ 0.9 Mbit/s and one second of Opus (a 440 Hz tone).

    The picture is fresh coarse noise every frame (20-pixel cells, not aligned to VP8's
    16-pixel macroblocks), so every frame costs bits the way a moving camera picture does.
    """
    rng = random.Random(20261121)
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    codec.bit_rate = 1_000_000
    codec.gop_size = FPS
    codec.qmin, codec.qmax = 2, 56
    codec.time_base = fractions.Fraction(1, FPS)
    codec.framerate = fractions.Fraction(FPS)
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "crf": "30"}
    cell = 20
    video: list[bytes] = []
    chroma = bytes([128]) * (WIDTH * HEIGHT // 4)
    for n in range(CLIP_FRAMES):
        rows = [
            bytes(
                v
                for v in bytes(96 + rng.getrandbits(6) for _ in range(WIDTH // cell))
                for _ in range(cell)
            )
            for _ in range(HEIGHT // cell)
        ]
        frame = av.VideoFrame(width=WIDTH, height=HEIGHT, format="yuv420p")
        frame.planes[0].update(b"".join(row for row in rows for _ in range(cell)))
        frame.planes[1].update(bytes([128 + n % 32]) * (WIDTH * HEIGHT // 4))
        frame.planes[2].update(chroma)
        frame.pts = n
        video += [bytes(p) for p in codec.encode(frame)]
    video += [bytes(p) for p in codec.encode(None)]
    encoder = OpusEncoder()
    audio: list[bytes] = []
    n = 0
    while len(audio) < AUDIO_RATE // AUDIO_SAMPLES:
        samples = array.array(
            "h",
            (
                int(8000 * math.sin(2 * math.pi * 440 * (n * AUDIO_SAMPLES + i) / AUDIO_RATE))
                for i in range(AUDIO_SAMPLES)
            ),
        )
        sound = av.AudioFrame(format="s16", layout="mono", samples=AUDIO_SAMPLES)
        sound.planes[0].update(samples.tobytes())
        sound.sample_rate = AUDIO_RATE
        sound.pts = n * AUDIO_SAMPLES
        sound.time_base = fractions.Fraction(1, AUDIO_RATE)
        audio += encoder.encode(sound)[0]
        n += 1
    return Clip(video, audio)


class ReplayTrack(MediaStreamTrack):
    """Yields the clip's encoded packets in real time; aiortc's sender only packetizes them.

    Video timestamps get a random offset per frame (``PTS_JITTER`` ticks, from ``seed``),
    so the sequence of RTP timestamp differences identifies a stream at the subscriber
    even after MediaRelay decoded and re-encoded it (it keeps each frame's pts).
    """

    def __init__(self, kind: str, packets: list[bytes], seed: int) -> None:
        super().__init__()
        self.kind = kind
        self.packets = packets
        self.rng = random.Random(seed)
        self.n = 0
        self.start: float | None = None
        video = kind == "video"
        self.rate = FPS if video else AUDIO_RATE // AUDIO_SAMPLES
        self.step = VIDEO_CLOCK // FPS if video else AUDIO_SAMPLES
        self.jitter = PTS_JITTER if video else 0
        self.time_base = fractions.Fraction(1, VIDEO_CLOCK if video else AUDIO_RATE)

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self.start is None:
            self.start = now
        else:
            await asyncio.sleep(max(0.0, self.start + self.n / self.rate - now))
        packet = av.Packet(self.packets[self.n % len(self.packets)])
        packet.pts = self.n * self.step + (self.rng.randrange(self.jitter) if self.jitter else 0)
        packet.time_base = self.time_base
        self.n += 1
        return packet


# -- client side (worker processes) --------------------------------------------------------


class Stream:
    """One track received by one subscriber: RTP packets counted, never decoded.

    A video frame counts as delivered when its last packet (RTP marker bit) arrives and no
    sequence number was missing since the previous frame's last packet.
    """

    __slots__ = ("broken", "frames", "kind", "last_seq", "packets")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.packets = 0
        self.last_seq = -1
        self.broken = False
        self.frames: deque[tuple[int, float]] = deque(maxlen=MARK_HISTORY)

    async def on_rtp(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        now = time.monotonic()
        self.packets += 1
        if self.kind != "video":
            return
        seq = packet.sequence_number
        if self.last_seq >= 0 and seq != (self.last_seq + 1) & 0xFFFF:
            self.broken = True
        self.last_seq = seq
        if packet.marker:
            if not self.broken:
                self.frames.append((packet.timestamp, now))
            self.broken = False


async def ignore_rtcp(packet: Any) -> None:
    return None


def log_sent_frames(pc: RTCPeerConnection, log: deque[tuple[int, float]]) -> None:
    """Record (RTP timestamp, time) whenever the publisher hands a video frame's last packet
    to its socket: the send side of the latency measurement."""
    video = next(t for t in pc.getTransceivers() if t.kind == "video")
    video_pt = aiortc_hooks.transceiver_codecs(video)[0].payloadType
    transport = video.sender.transport
    original = transport._send_rtp

    async def send_rtp(data: bytes) -> None:
        await original(data)
        if data[1] & 0x80 and data[1] & 0x7F == video_pt:
            log.append((int.from_bytes(data[4:8], "big"), time.monotonic()))

    transport._send_rtp = send_rtp  # type: ignore[method-assign]


class Client(Protocol):
    name: str
    subscribes: bool
    streams: dict[int, Stream]
    sent: deque[tuple[int, float]]

    async def close(self) -> None: ...


class SfuClient(Participant):
    """A meeting client of the SFU (its control API), counting what it receives."""

    def __init__(
        self, base: str, keys: Keys, meeting_id: str, *, name: str, subscribe: bool
    ) -> None:
        super().__init__(base, keys, meeting_id, can_subscribe=subscribe)
        self.name = name
        self.subscribes = subscribe
        self.streams: dict[int, Stream] = {}
        self.sent: deque[tuple[int, float]] = deque(maxlen=SEND_HISTORY)

    async def publish_clip(self, clip: Clip, seed: int) -> None:
        await self.publish(
            ReplayTrack("audio", clip.audio, seed), ReplayTrack("video", clip.video, seed)
        )
        assert self.publisher is not None
        log_sent_frames(self.publisher, self.sent)

    async def _on_message(self, message: dict[str, Any]) -> None:
        if message["type"] != "offer" or message["pc"] != "subscriber":
            return
        if self.subscriber is None:
            self.subscriber = new_pc()
        pc = self.subscriber
        await pc.setRemoteDescription(RTCSessionDescription(message["sdp"]["sdp"], "offer"))
        for transceiver in pc.getTransceivers():
            if id(transceiver.receiver) not in self.streams:
                stream = self.streams[id(transceiver.receiver)] = Stream(transceiver.kind)
                aiortc_hooks.hook_receiver(transceiver.receiver, stream.on_rtp, ignore_rtcp)
        await pc.setLocalDescription(await pc.createAnswer())
        answer: dict[str, Any] = {
            "type": "answer",
            "pc": "subscriber",
            "sdp": {"type": "answer", "sdp": pc.localDescription.sdp},
        }
        if message.get("offer_id") is not None:
            answer["offer_id"] = message["offer_id"]
        r = await self.http.post(f"/v1/peers/{self.peer_id}/signal", json=answer)
        r.raise_for_status()


class RelayClient:
    """A client of the MediaRelay server: one publishing and one receiving connection."""

    def __init__(self, base: str, *, name: str, subscribe: bool) -> None:
        self.name = name
        self.peer_id = uuid.uuid4().hex
        self.subscribes = subscribe
        self.http = httpx.AsyncClient(base_url=base, timeout=60)
        self.publisher: RTCPeerConnection | None = None
        self.subscriber: RTCPeerConnection | None = None
        self.streams: dict[int, Stream] = {}
        self.sent: deque[tuple[int, float]] = deque(maxlen=SEND_HISTORY)

    async def publish_clip(self, clip: Clip, seed: int) -> None:
        pc = self.publisher = new_pc()
        pc.addTransceiver(ReplayTrack("audio", clip.audio, seed), direction="sendonly")
        pc.addTransceiver(ReplayTrack("video", clip.video, seed), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        r = await self.http.post(
            "/publish", json={"peer_id": self.peer_id, "sdp": pc.localDescription.sdp}
        )
        r.raise_for_status()
        await pc.setRemoteDescription(RTCSessionDescription(r.json()["sdp"], "answer"))
        log_sent_frames(pc, self.sent)

    async def subscribe(self) -> None:
        publishers = [
            p
            for p in (await self.http.get("/publishers")).json()["publishers"]
            if p != self.peer_id
        ]
        pc = self.subscriber = new_pc()
        for _ in publishers:
            for kind in ("audio", "video"):
                transceiver = pc.addTransceiver(kind, direction="recvonly")
                stream = self.streams[id(transceiver.receiver)] = Stream(kind)
                aiortc_hooks.hook_receiver(transceiver.receiver, stream.on_rtp, ignore_rtcp)
        await pc.setLocalDescription(await pc.createOffer())
        r = await self.http.post(
            "/subscribe",
            json={
                "peer_id": self.peer_id,
                "sdp": pc.localDescription.sdp,
                "publishers": publishers,
            },
        )
        r.raise_for_status()
        await pc.setRemoteDescription(RTCSessionDescription(r.json()["sdp"], "answer"))

    async def close(self) -> None:
        for pc in (self.publisher, self.subscriber):
            if pc is not None:
                await pc.close()
        await self.http.aclose()


class Worker:
    """The client side of one worker process: commands in on stdin, JSON lines out."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.mode: str = args.mode
        self.base: str = args.base
        self.meeting: str = args.meeting
        self.keys = Keys(Path(args.keys)) if args.mode == "sfu" else None
        self.clip = Clip.load(Path(args.clip))
        self.prefix: str = args.name
        self.clients: list[SfuClient | RelayClient] = []

    async def add(self, count: int, publish: bool, subscribe: bool) -> dict[str, Any]:
        for _ in range(count):
            name = f"{self.prefix}-{len(self.clients)}"
            seed = random.randrange(1 << 30)
            if self.mode == "sfu":
                assert self.keys is not None
                participant = SfuClient(
                    self.base, self.keys, self.meeting, name=name, subscribe=subscribe
                )
                self.clients.append(participant)
                await participant.join()
                if publish:
                    await participant.publish_clip(self.clip, seed)
            else:
                client = RelayClient(self.base, name=name, subscribe=subscribe)
                self.clients.append(client)
                if publish:
                    await client.publish_clip(self.clip, seed)
                elif subscribe:
                    await client.subscribe()
        return {"clients": len(self.clients)}

    async def subscribe(self) -> dict[str, Any]:
        """MediaRelay clients that publish subscribe only once every publisher is in."""
        for client in self.clients:
            if isinstance(client, RelayClient) and client.subscribes and not client.subscriber:
                await client.subscribe()
        return {}

    async def flowing(self, video_streams: int, wait_s: float) -> dict[str, Any]:
        """Wait until every subscriber gets complete video frames on ``video_streams`` tracks."""
        deadline = time.monotonic() + wait_s
        subscribers = [c for c in self.clients if c.subscribes]
        while True:
            now = time.monotonic()
            ready = sum(
                1
                for c in subscribers
                if sum(
                    1
                    for s in c.streams.values()
                    if s.kind == "video" and s.frames and now - s.frames[-1][1] < 1.0
                )
                >= video_streams
            )
            if ready == len(subscribers) or now > deadline:
                return {"ready": ready, "subscribers": len(subscribers)}
            await asyncio.sleep(0.1)

    async def window(self, t0: float, t1: float, history: float) -> dict[str, Any]:
        """Count what arrives between t0 and t1 (monotonic clock, shared by all processes)."""
        await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        cpu0 = time.process_time()
        before = {
            (i, key): s.packets for i, c in enumerate(self.clients) for key, s in c.streams.items()
        }
        await asyncio.sleep(max(0.0, t1 - time.monotonic()))
        cpu1 = time.process_time()
        streams = []
        for i, c in enumerate(self.clients):
            for key, s in c.streams.items():
                streams.append(
                    {
                        "client": c.name,
                        "kind": s.kind,
                        "packets": s.packets - before.get((i, key), s.packets),
                        "frames": [[ts, t] for ts, t in s.frames if t0 <= t <= t1],
                    }
                )
        sent = {
            c.name: [[ts, t] for ts, t in c.sent if t0 - history <= t <= t1]
            for c in self.clients
            if c.sent
        }
        return {"cpu_s": cpu1 - cpu0, "streams": streams, "sent": sent}

    async def close(self) -> dict[str, Any]:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.close()
        return {}


async def worker_main(args: argparse.Namespace) -> None:
    # Replies go to the original stdout; anything a library prints goes to stderr.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    gather_on_loopback()
    worker = Worker(args)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        op = command.pop("op")
        try:
            reply = await getattr(worker, op)(**command)
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
        if op == "close":
            return


# -- the MediaRelay server (aiortc's default path) -----------------------------------------


class MediaRelayServer:
    """aiortc's way to serve many subscribers: ``MediaRelay`` over decoded tracks.

    Every publisher track is decoded once by its receiver; ``MediaRelay.subscribe`` (its
    default, buffered) hands the frames to each subscriber's sender, which encodes them
    again for that subscriber (aiortc's VP8 and Opus encoders, in its thread pool).
    """

    def __init__(self) -> None:
        self.relay = MediaRelay()
        self.tracks: dict[str, dict[str, MediaStreamTrack]] = {}
        self.drains: dict[str, list[asyncio.Task[None]]] = {}
        self.pcs: list[RTCPeerConnection] = []

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def publishers(self, request: Request) -> JSONResponse:
        return JSONResponse({"publishers": list(self.tracks)})

    async def publish(self, request: Request) -> JSONResponse:
        body = await request.json()
        peer_id = body["peer_id"]
        pc = new_pc()
        self.pcs.append(pc)
        tracks = self.tracks.setdefault(peer_id, {})
        drains = self.drains.setdefault(peer_id, [])

        @pc.on("track")
        def _track(track: MediaStreamTrack) -> None:
            tracks[track.kind] = track
            # Until someone subscribes, read the decoded frames away (as aiortc's examples
            # do with a MediaBlackhole) so they do not pile up in the track's queue.
            drains.append(asyncio.create_task(self._drain(track)))

        await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return JSONResponse({"sdp": pc.localDescription.sdp})

    async def _drain(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()

    async def subscribe(self, request: Request) -> JSONResponse:
        body = await request.json()
        pc = new_pc()
        self.pcs.append(pc)
        await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "offer"))
        for publisher in body["publishers"]:
            for task in self.drains.pop(publisher, []):
                task.cancel()
            for kind in ("audio", "video"):
                pc.addTrack(self.relay.subscribe(self.tracks[publisher][kind]))
        await pc.setLocalDescription(await pc.createAnswer())
        return JSONResponse({"sdp": pc.localDescription.sdp})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/healthz", self.health),
                Route("/publishers", self.publishers),
                Route("/publish", self.publish, methods=["POST"]),
                Route("/subscribe", self.subscribe, methods=["POST"]),
            ]
        )


async def mediarelay_main(port: int) -> None:
    gather_on_loopback()
    server = MediaRelayServer()
    config = uvicorn.Config(
        server.app(),
        host=LOOPBACK,
        port=port,
        loop="none",
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    await uvicorn.Server(config).serve()


# -- the bare uvloop UDP relay -------------------------------------------------------------


class UdpRelay(asyncio.DatagramProtocol):
    """Receive a datagram, send it once to the sink: the floor of a Python packet path."""

    def __init__(self, sink: tuple[str, int]) -> None:
        self.sink = sink
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is no subclass

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, self.sink)


async def udp_relay_main(port: int, sink_port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(
        lambda: UdpRelay((LOOPBACK, sink_port)), local_addr=(LOOPBACK, port)
    )
    print("ready", flush=True)
    await asyncio.Event().wait()


class Sink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.count = 0

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.count += 1


# -- orchestration -------------------------------------------------------------------------


class WorkerProcess:
    """A ``worker`` subprocess and its command pipe."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.clients = 0

    @classmethod
    async def start(
        cls, name: str, mode: str, base: str, meeting: str, keys: Path, clip: Path
    ) -> WorkerProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "worker", "--mode", mode, "--base", base,
            "--meeting", meeting, "--keys", str(keys), "--clip", str(clip), "--name", name,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 26,
        )  # fmt: skip
        return cls(proc, name)

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} exited")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"worker {self.name}: {op}: {reply['error']}")
        return reply

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.call("close"), 20)
        if self.proc.returncode is None:
            self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


class Fleet:
    """The client processes of one system under test."""

    spawned = 0  # worker processes started by this run, for unique names

    def __init__(self, mode: str, base: str, meeting: str, workdir: Path, clip: Path) -> None:
        self.mode = mode
        self.base = base
        self.meeting = meeting
        self.workdir = workdir
        self.clip = clip
        self.workers: list[WorkerProcess] = []
        self.subscribers: list[WorkerProcess] = []

    async def spawn(self) -> WorkerProcess:
        Fleet.spawned += 1
        name = f"w{Fleet.spawned}"
        keys = self.workdir / f"keys-{name}"
        if self.mode == "sfu":  # its own copy: Keys() rewrites jwks.json in its folder
            shutil.copytree(self.workdir / "keys" / "keys", keys / "keys")
        worker = await WorkerProcess.start(
            name, self.mode, self.base, self.meeting, keys, self.clip
        )
        self.workers.append(worker)
        return worker

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers]

    async def add_publisher(self) -> None:
        worker = await self.spawn()
        await worker.call("add", count=1, publish=True, subscribe=False)

    async def add_subscribers(self, count: int) -> None:
        """Spread new subscribers over worker processes, PER_WORKER each, joining in parallel."""
        plan: list[tuple[WorkerProcess, int]] = []
        while count > 0:
            worker = next((w for w in self.subscribers if w.clients < PER_WORKER), None)
            if worker is None:
                worker = await self.spawn()
                self.subscribers.append(worker)
            take = min(count, PER_WORKER - worker.clients)
            worker.clients += take
            count -= take
            plan.append((worker, take))
        await asyncio.gather(
            *(w.call("add", count=n, publish=False, subscribe=True) for w, n in plan)
        )

    async def add_mesh(self, participants: int) -> None:
        half = participants // 2
        workers = [await self.spawn(), await self.spawn()]
        await asyncio.gather(
            *(
                w.call("add", count=n, publish=True, subscribe=True)
                for w, n in zip(workers, (half, participants - half), strict=True)
            )
        )
        if self.mode == "relay":
            await asyncio.gather(*(w.call("subscribe") for w in workers))

    async def wait_flowing(self, video_streams: int, wait_s: float = 40.0) -> tuple[int, int]:
        replies = await asyncio.gather(
            *(w.call("flowing", video_streams=video_streams, wait_s=wait_s) for w in self.workers)
        )
        return sum(r["ready"] for r in replies), sum(r["subscribers"] for r in replies)

    async def window(self, t0: float, t1: float, history: float) -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(
                *(w.call("window", t0=t0, t1=t1, history=history) for w in self.workers)
            )
        )

    async def close(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.workers))


@dataclass
class Point:
    """One measured window of one system."""

    system: str  # "sfu" or "relay"
    scenario: str  # "fanout" or "mesh"
    subscribers: int  # subscribers (fan-out) or participants (mesh)
    video_streams: int  # forwarded video streams (subscriber x publisher pairs)
    cpu_pct: float  # server process, % of one core
    sys_share: float  # of that, the share in kernel mode (sendto/recvfrom and loopback)
    rss_mb: float
    fps_min: float
    fps_median: float
    fps_sent: float  # what the publishers sent, for reference
    below_29: int  # video streams under 29 fps
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    matched: str  # video streams whose frames could be timed / all video streams
    received_pps: float  # RTP packets per second arriving at all subscribers together
    frames_per_s: float  # complete video frames per second at all subscribers together
    forwarded_pps: float = 0.0  # SFU metrics: packets sent to subscribers per second
    forwarded_video_pps: float = 0.0
    forwarded_bytes_per_packet: float = 0.0
    client_cores: float = 0.0
    background_cores: float = 0.0

    @property
    def us_per_packet(self) -> float | None:
        if not self.forwarded_pps:
            return None
        return self.cpu_pct / 100 * 1e6 / self.forwarded_pps

    @property
    def ms_per_frame(self) -> float | None:
        """Server CPU per video frame delivered to a subscriber (work-normalized cost)."""
        return self.cpu_pct * 10 / self.frames_per_s if self.frames_per_s else None


TS_SLACK = (0, -1, 1, -2, 2)  # MediaRelay's decode + encode may round a timestamp by a tick


def sent_at(log: dict[int, float], ts: int) -> float | None:
    for d in TS_SLACK:
        sent = log.get((ts + d) & MASK32)
        if sent is not None:
            return sent
    return None


def match_latencies(
    frames: list[tuple[int, float]], logs: dict[str, dict[int, float]]
) -> list[float] | None:
    """Latency of each received frame: arrival of its last packet - when it was sent.

    A subscriber's RTP timestamps are the publisher's plus an unknown constant (the SFU's
    per-subscriber offset; MediaRelay's encoder origin). Every publisher frame carries a
    random offset, so one constant makes the received timestamps land on a publisher's
    sent timestamps and every other constant does not: try each pairing of the first
    received frame with a frame sent in the MATCH_HISTORY_S before it, keep the one that explains
    the most of the first 40 frames. None when no publisher explains 80 % of them.
    """
    if not frames:
        return None
    probe = frames[:40]
    ts0, arrived0 = probe[0]
    best: tuple[int, str, int] = (0, "", 0)
    for publisher, log in logs.items():
        for ts, sent in log.items():
            if not arrived0 - MATCH_HISTORY_S <= sent <= arrived0:
                continue
            offset = (ts0 - ts) & MASK32
            score = sum(1 for t, _ in probe if sent_at(log, t - offset) is not None)
            if score > best[0]:
                best = (score, publisher, offset)
    score, publisher, offset = best
    if score < 0.8 * len(probe):
        return None
    log = logs[publisher]
    latencies = []
    for ts, arrived in frames:
        sent_time = sent_at(log, ts - offset)
        if sent_time is not None:
            latencies.append(arrived - sent_time)
    return latencies


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def sfu_counters(base: str) -> dict[str, float]:
    """Forwarded packets and bytes by kind, from the SFU's /metrics."""
    async with httpx.AsyncClient(base_url=base) as http:
        text = (await http.get("/metrics")).text
    out: dict[str, float] = {}
    pattern = re.compile(r'^konfer_sfu_forwarded_(packets|bytes)_total\{.*kind="(\w+)".*\} (\S+)$')
    for line in text.splitlines():
        m = pattern.match(line)
        if m:
            out[f"{m[1]}_{m[2]}"] = float(m[3])
    out["t"] = time.monotonic()
    return out


async def measure(
    fleet: Fleet,
    server_pid: int,
    *,
    system: str,
    scenario: str,
    subscribers: int,
    metrics_base: str | None,
) -> Point:
    """A window; one more when other processes were busy in it, keeping the quieter one."""
    point = await measure_window(
        fleet, server_pid, system=system, scenario=scenario, subscribers=subscribers,
        metrics_base=metrics_base,
    )  # fmt: skip
    if point.background_cores > RETRY_CORES:
        again = await measure_window(
            fleet, server_pid, system=system, scenario=scenario, subscribers=subscribers,
            metrics_base=metrics_base,
        )  # fmt: skip
        point = min(point, again, key=lambda p: p.background_cores)
    return point


async def measure_window(
    fleet: Fleet,
    server_pid: int,
    *,
    system: str,
    scenario: str,
    subscribers: int,
    metrics_base: str | None,
) -> Point:
    """One window: server CPU and RSS from /proc, frames and latency from the clients."""
    history = MATCH_HISTORY_S
    before = await sfu_counters(metrics_base) if metrics_base else None
    t0 = time.monotonic() + 0.5
    t1 = t0 + WINDOW_S
    replies_task = asyncio.ensure_future(fleet.window(t0, t1, history))
    await asyncio.sleep(t0 - time.monotonic())
    meter = CpuMeter([server_pid, os.getpid(), *fleet.pids])
    user0, sys0 = cpu_times(server_pid)
    await asyncio.sleep(t1 - time.monotonic())
    user1, sys1 = cpu_times(server_pid)
    cpu = user1 - user0 + sys1 - sys0
    elapsed = time.monotonic() - meter.t0
    background = meter.background_cores()
    rss = rss_mb(server_pid)
    after = await sfu_counters(metrics_base) if metrics_base else None
    replies = await replies_task

    logs: dict[str, dict[int, float]] = {}
    sent_fps: list[float] = []
    for reply in replies:
        for name, entries in reply["sent"].items():
            logs[name] = {int(ts): t for ts, t in entries}
            sent_fps.append(sum(1 for _, t in entries if t0 <= t <= t1) / WINDOW_S)
    fps: list[float] = []
    latencies: list[float] = []
    matched = 0
    received = 0
    for reply in replies:
        for stream in reply["streams"]:
            received += stream["packets"]
            if stream["kind"] != "video":
                continue
            frames = [(int(ts), t) for ts, t in stream["frames"]]
            fps.append(len(frames) / WINDOW_S)
            lat = match_latencies(frames, logs)
            if lat is not None:
                matched += 1
                latencies += lat
    point = Point(
        system=system,
        scenario=scenario,
        subscribers=subscribers,
        video_streams=len(fps),
        cpu_pct=cpu / elapsed * 100,
        sys_share=(sys1 - sys0) / cpu if cpu else 0.0,
        rss_mb=rss,
        fps_min=min(fps) if fps else 0.0,
        fps_median=statistics.median(fps) if fps else 0.0,
        fps_sent=statistics.mean(sent_fps) if sent_fps else 0.0,
        below_29=sum(1 for f in fps if f < 29.0),
        latency_p50_ms=percentile(latencies, 0.5) * 1000 if latencies else None,
        latency_p95_ms=percentile(latencies, 0.95) * 1000 if latencies else None,
        matched=f"{matched}/{len(fps)}",
        received_pps=received / WINDOW_S,
        frames_per_s=sum(fps),
        client_cores=sum(r["cpu_s"] for r in replies) / WINDOW_S,
        background_cores=background,
    )
    if before and after:
        span = after["t"] - before["t"]

        def rate(key: str) -> float:
            return (after.get(key, 0.0) - before.get(key, 0.0)) / span

        point.forwarded_video_pps = rate("packets_video")
        point.forwarded_pps = point.forwarded_video_pps + rate("packets_audio")
        bytes_ps = rate("bytes_video") + rate("bytes_audio")
        point.forwarded_bytes_per_packet = (
            bytes_ps / point.forwarded_pps if point.forwarded_pps else 0
        )
    print(progress(point), file=sys.stderr, flush=True)
    return point


def progress(p: Point) -> str:
    lat = f"{p.latency_p50_ms:.1f}/{p.latency_p95_ms:.1f} ms" if p.latency_p50_ms else "n/a"
    return (
        f"{p.system} {p.scenario} n={p.subscribers}: cpu {p.cpu_pct:.1f}% rss {p.rss_mb:.0f} MB "
        f"fps min {p.fps_min:.1f} med {p.fps_median:.1f} (sent {p.fps_sent:.1f}) lat {lat} "
        f"matched {p.matched} fwd {p.forwarded_pps:.0f} pkt/s clients {p.client_cores:.2f} cores "
        f"background {p.background_cores:.2f} cores"
    )


@contextlib.asynccontextmanager
async def mediarelay_process() -> AsyncIterator[tuple[str, int]]:
    """This file's MediaRelay server in its own process; yields (base URL, pid)."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "mediarelay", "--port", str(port)
    )
    base = f"http://{LOOPBACK}:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            deadline = time.monotonic() + 30
            while True:
                if proc.returncode is not None:
                    raise RuntimeError("the MediaRelay server exited")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/healthz")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("the MediaRelay server did not start")
                await asyncio.sleep(0.1)
        yield base, proc.pid
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def settle(fleet: Fleet, video_streams: int) -> None:
    ready, total = await fleet.wait_flowing(video_streams)
    if ready < total:
        print(f"warning: only {ready}/{total} subscribers receive video", file=sys.stderr)
    await asyncio.sleep(SETTLE_S)


@dataclass
class Profile:
    """Where the SFU's Python thread spends its time at the largest fan-out (py-spy)."""

    subscribers: int
    seconds: float
    samples: int
    top: list[tuple[str, float]]  # function (file:line) -> share of samples, self time


async def profile_sfu(pid: int, subscribers: int, seconds: float, out: Path) -> Profile | None:
    """Sample the SFU with py-spy (``--gil``: only while it runs Python or C called from it).

    C code called from Python (the uvloop ``sendto`` syscall, libsrtp) shows as the Python
    line that called it. py-spy comes with the dev extra; without it the profile is skipped.
    """
    spy = Path(sys.executable).with_name("py-spy")
    found = str(spy) if spy.exists() else shutil.which("py-spy")
    if found is None:
        print("--profile: py-spy is not installed; skipped", file=sys.stderr)
        return None
    proc = await asyncio.create_subprocess_exec(
        found, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250",
        "--gil", "--nonblocking", "--format", "raw", "--output", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    if await proc.wait() != 0:
        print("--profile: py-spy failed (it needs ptrace permission)", file=sys.stderr)
        return None
    return summarize_folded(out, subscribers, seconds)


def summarize_folded(out: Path, subscribers: int, seconds: float) -> Profile:
    """Self samples per leaf frame from py-spy's folded stacks ("a;b;c 12" lines)."""
    counts: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        leaf = stack.rsplit(";", 1)[-1]
        counts[leaf] = counts.get(leaf, 0) + int(n)
        total += int(n)
    top = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)[:15]
    return Profile(subscribers, seconds, total, [(name, n / total) for name, n in top])


@dataclass
class Upkeep:
    """The SFU with every subscriber connected but its publisher muted: no forwarding."""

    subscribers: int
    cpu_pct: float
    sys_share: float


async def mute_and_measure(base: str, keys: Keys, meeting: str, pid: int, n: int) -> Upkeep:
    """Mute the publisher (as a host would) and measure what the connections alone cost.

    The SFU still receives and counts the publisher's packets, then drops them in
    ``PublishedTrack.forward``; RTCP, ICE consent checks, the tick and the control API's
    long-polls go on for every subscriber.
    """
    token = keys.token(str(uuid.uuid4()), meeting, room_admin=True)
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        peers = (await http.get("/v1/peers")).json()["peers"]
        for peer in peers:
            if peer["tracks"]:
                r = await http.post(
                    f"/v1/peers/{peer['peer_id']}/media",
                    json={"audio_enabled": False, "video_enabled": False},
                )
                r.raise_for_status()
    await asyncio.sleep(2.0)
    user0, sys0 = cpu_times(pid)
    t0 = time.monotonic()
    await asyncio.sleep(WINDOW_S)
    user1, sys1 = cpu_times(pid)
    cpu = user1 - user0 + sys1 - sys0
    upkeep = Upkeep(n, cpu / (time.monotonic() - t0) * 100, (sys1 - sys0) / cpu if cpu else 0.0)
    print(
        f"sfu muted n={n}: cpu {upkeep.cpu_pct:.1f}% (kernel {upkeep.sys_share:.0%})",
        file=sys.stderr,
        flush=True,
    )
    return upkeep


async def run_sfu(
    workdir: Path, keys: Keys, clip: Path, fanout: Sequence[int], profile_s: float
) -> tuple[list[Point], Profile | None, Upkeep | None]:
    points = []
    profile = None
    upkeep = None
    meeting = str(uuid.uuid4())
    async with sfu_process(keys, meeting) as base:
        pid = child_with_arg(meeting)
        fleet = Fleet("sfu", base, meeting, workdir, clip)
        try:
            await fleet.add_publisher()
            joined = 0
            for n in fanout:
                await fleet.add_subscribers(n - joined)
                joined = n
                await settle(fleet, 1)
                points.append(
                    await measure(
                        fleet, pid, system="sfu", scenario="fanout", subscribers=n,
                        metrics_base=base,
                    )
                )  # fmt: skip
            if profile_s > 0:  # after the measured windows, so it perturbs none of them
                profile = await profile_sfu(pid, joined, profile_s, workdir / "sfu.folded")
            upkeep = await mute_and_measure(base, keys, meeting, pid, joined)
        finally:
            await fleet.close()
    meeting = str(uuid.uuid4())
    async with sfu_process(keys, meeting) as base:
        pid = child_with_arg(meeting)
        fleet = Fleet("sfu", base, meeting, workdir, clip)
        try:
            await fleet.add_mesh(MESH)
            await settle(fleet, MESH - 1)
            points.append(
                await measure(
                    fleet, pid, system="sfu", scenario="mesh", subscribers=MESH, metrics_base=base
                )
            )
        finally:
            await fleet.close()
    return points, profile, upkeep


async def run_relay(workdir: Path, clip: Path, fanout: Sequence[int]) -> list[Point]:
    """MediaRelay, a fresh server per point: once it falls behind, its queues never recover."""
    points = []
    for n in [*fanout, 0]:
        async with mediarelay_process() as (base, pid):
            fleet = Fleet("relay", base, "", workdir, clip)
            try:
                if n:
                    await fleet.add_publisher()
                    await fleet.add_subscribers(n)
                    await settle(fleet, 1)
                    scenario, count = "fanout", n
                else:
                    await fleet.add_mesh(MESH)
                    await settle(fleet, MESH - 1)
                    scenario, count = "mesh", MESH
                points.append(
                    await measure(
                        fleet, pid, system="relay", scenario=scenario, subscribers=count,
                        metrics_base=None,
                    )
                )  # fmt: skip
            finally:
                await fleet.close()
    return points


@dataclass
class BareRelay:
    rate_pps: float
    size: int
    cpu_pct: float
    sys_share: float
    relayed_pps: float

    @property
    def us_per_packet(self) -> float:
        return self.cpu_pct / 100 * 1e6 / self.relayed_pps if self.relayed_pps else 0.0


async def run_bare_relay(rate: float, size: int) -> BareRelay:
    """Drive the bare relay at ``rate`` datagrams/s of ``size`` bytes for one window."""
    loop = asyncio.get_running_loop()
    sink_transport, sink = await loop.create_datagram_endpoint(Sink, local_addr=(LOOPBACK, 0))
    sink_port = sink_transport.get_extra_info("sockname")[1]
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "udp-relay", "--port", str(port), "--sink-port", str(sink_port),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setblocking(False)
    payload = os.urandom(size)
    try:
        assert proc.stdout is not None
        await asyncio.wait_for(proc.stdout.readline(), 60)  # "ready": imported and bound

        async def drive(seconds: float) -> None:
            start = time.monotonic()
            sent = 0
            while (now := time.monotonic()) < start + seconds:
                due = int((now - start) * rate)
                while sent < due:
                    with contextlib.suppress(BlockingIOError):
                        sender.sendto(payload, (LOOPBACK, port))
                    sent += 1
                await asyncio.sleep(0.002)

        driving = asyncio.ensure_future(drive(WINDOW_S + 3.0))
        await asyncio.sleep(1.5)
        (u0, s0), n0, t0 = cpu_times(proc.pid), sink.count, time.monotonic()
        await asyncio.sleep(WINDOW_S)
        (u1, s1), n1, t1 = cpu_times(proc.pid), sink.count, time.monotonic()
        await driving
    finally:
        sender.close()
        sink_transport.close()
        proc.terminate()
        await proc.wait()
    cpu = u1 - u0 + s1 - s0
    point = BareRelay(
        rate, size, cpu / (t1 - t0) * 100, (s1 - s0) / cpu if cpu else 0.0, (n1 - n0) / (t1 - t0)
    )
    print(
        f"bare uvloop relay: {point.relayed_pps:.0f} pkt/s of {size} B, cpu {point.cpu_pct:.1f}% "
        f"= {point.us_per_packet:.2f} µs/pkt",
        file=sys.stderr,
        flush=True,
    )
    return point


# -- report --------------------------------------------------------------------------------


@dataclass
class Report:
    sfu: list[Point]
    relay: list[Point]
    bare: BareRelay
    clip_kbps: float
    background_first: float
    background_start: float
    minutes: float
    profile: Profile | None = None
    upkeep: Upkeep | None = None
    date: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))

    def find(self, system: str, scenario: str, n: int) -> Point | None:
        points = self.sfu if system == "sfu" else self.relay
        return next((p for p in points if p.scenario == scenario and p.subscribers == n), None)

    @property
    def fanout(self) -> list[Point]:
        return [p for p in self.sfu if p.scenario == "fanout"]

    @property
    def windows(self) -> list[Point]:
        return self.sfu + self.relay

    @property
    def background_max(self) -> float:
        return max(p.background_cores for p in self.windows)

    @property
    def quiet_windows(self) -> int:
        return sum(1 for p in self.windows if p.background_cores <= QUIET_CORES)


def ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def num(value: float | None) -> str:
    """Three significant digits or so."""
    if value is None:
        return "—"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 10 else f"{value:,.1f}"


def times(a: float | None, b: float | None) -> str:
    """How many times b is a (b ÷ a), for "MediaRelay costs Nx the SFU"."""
    if a is None or b is None or a <= 0:
        return "—"
    r = b / a
    return f"{r:.0f}x" if r >= 10 else f"{r:.1f}x"


def fanout_table(report: Report) -> str:
    head = (
        "| Subscribers | SFU CPU % | MediaRelay CPU % | CPU ratio | SFU RSS MB | MediaRelay RSS MB "
        "| SFU fps min / median | MediaRelay fps min / median | SFU latency p50 / p95 ms "
        "| MediaRelay latency p50 / p95 ms | latency ratio p50 |\n"
        "|---:|---:|---:|---:|---:|---:|---|---|---|---|---:|"
    )
    ns = sorted({p.subscribers for p in report.sfu + report.relay if p.scenario == "fanout"})
    rows = [head]
    for n in ns:
        s, r = report.find("sfu", "fanout", n), report.find("relay", "fanout", n)
        rows.append(_pair_row(str(n), s, r))
    s, r = report.find("sfu", "mesh", MESH), report.find("relay", "mesh", MESH)
    rows.append(_pair_row(f"mesh of {MESH} ({MESH * (MESH - 1)} video streams)", s, r))
    return "\n".join(rows)


def _pair_row(label: str, s: Point | None, r: Point | None) -> str:
    def cpu(p: Point | None) -> str:
        return "not measured" if p is None else f"{p.cpu_pct:.1f}"

    def rss(p: Point | None) -> str:
        return "—" if p is None else f"{p.rss_mb:.0f}"

    def fps(p: Point | None) -> str:
        return "—" if p is None else f"{p.fps_min:.1f} / {p.fps_median:.1f}"

    def lat(p: Point | None) -> str:
        return "—" if p is None else f"{ms(p.latency_p50_ms)} / {ms(p.latency_p95_ms)}"

    return (
        f"| {label} | {cpu(s)} | {cpu(r)} "
        f"| {times(s.cpu_pct if s else None, r.cpu_pct if r else None)} "
        f"| {rss(s)} | {rss(r)} | {fps(s)} | {fps(r)} | {lat(s)} | {lat(r)} "
        f"| {times(s.latency_p50_ms if s else None, r.latency_p50_ms if r else None)} |"
    )


def detail_table(report: Report) -> str:
    rows = [
        "| System | Scenario | n | video streams | fps sent | streams < 29 fps | timed streams "
        "| RTP pkt/s at subscribers | forwarded pkt/s | bytes/pkt | server kernel share "
        "| server CPU ms / delivered frame | SFU µs / forwarded pkt "
        "| client cores | background cores |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in report.sfu + report.relay:
        us = p.us_per_packet
        rows.append(
            f"| {'SFU' if p.system == 'sfu' else 'MediaRelay'} | {p.scenario} | {p.subscribers} "
            f"| {p.video_streams} | {p.fps_sent:.1f} | {p.below_29} | {p.matched} "
            f"| {p.received_pps:,.0f} | {p.forwarded_pps:,.0f} "
            f"| {p.forwarded_bytes_per_packet:.0f} | {p.sys_share:.0%} | {num(p.ms_per_frame)} "
            f"| {'—' if us is None else f'{us:.1f}'} "
            f"| {p.client_cores:.2f} | {p.background_cores:.2f} |"
        )
    return "\n".join(rows)


@dataclass
class CostModel:
    fixed_pct: float  # intercept: the SFU with its publisher and no subscriber
    per_subscriber_pct: float  # slope: one more subscriber (one video + one audio stream)
    per_packet_us: float  # slope of CPU against forwarded packets/s
    video_pps: float  # per forwarded video stream
    audio_pps: float  # per forwarded audio stream

    @property
    def per_video_pct(self) -> float:
        return self.per_packet_us * self.video_pps / 1e4

    @property
    def per_audio_pct(self) -> float:
        return self.per_packet_us * self.audio_pps / 1e4


def fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares line: (intercept, slope)."""
    mx, my = statistics.mean(xs), statistics.mean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return my - slope * mx, slope


def cost_model(report: Report) -> CostModel:
    points = report.fanout
    fixed, per_sub = fit([p.subscribers for p in points], [p.cpu_pct for p in points])
    _, per_pps = fit([p.forwarded_pps for p in points], [p.cpu_pct for p in points])
    last = max(points, key=lambda p: p.subscribers)
    video_pps = last.forwarded_video_pps / last.subscribers
    audio_pps = (last.forwarded_pps - last.forwarded_video_pps) / last.subscribers
    return CostModel(fixed, per_sub, per_pps * 1e4, video_pps, audio_pps)


def verdicts(report: Report) -> list[tuple[str, str, bool | None]]:
    out: list[tuple[str, str, bool | None]] = []
    top = report.find("sfu", "fanout", 80)
    if top is not None:
        ok = top.cpu_pct < 15.0 and top.fps_min >= 29.0
        out.append(
            (
                "80 subscribers of one 30 fps publisher under 15 % of one core, every "
                "subscriber at ≥ 29 fps",
                f"{top.cpu_pct:.1f} % of a core; slowest subscriber {top.fps_min:.1f} fps "
                f"({top.below_29} of {top.video_streams} under 29)",
                ok,
            )
        )
    s20, r20 = report.find("sfu", "fanout", 20), report.find("relay", "fanout", 20)
    if r20 is not None and s20 is not None and s20.cpu_pct > 0:
        ratio = r20.cpu_pct / s20.cpu_pct
        per_frame = (
            f"; per delivered frame {r20.ms_per_frame / s20.ms_per_frame:.0f}x, since "
            f"MediaRelay delivered only {r20.fps_median:.1f} fps"
            if r20.ms_per_frame and s20.ms_per_frame
            else ""
        )
        out.append(
            (
                "≥ 15x less CPU than MediaRelay at 20 subscribers",
                f"MediaRelay {r20.cpu_pct:.0f} % vs SFU {s20.cpu_pct:.1f} %: {ratio:.0f}x"
                f"{per_frame}",
                ratio >= 15.0,
            )
        )
    if top is not None and top.us_per_packet is not None:
        ratio = top.us_per_packet / report.bare.us_per_packet
        out.append(
            (
                "per forwarded packet within 3x of the bare uvloop relay",
                f"SFU {top.us_per_packet:.1f} µs vs bare relay {report.bare.us_per_packet:.1f} µs "
                f"per packet: {ratio:.1f}x",
                ratio <= 3.0,
            )
        )
    return out


def verdict_lines(report: Report) -> str:
    lines = []
    for target, measured, ok in verdicts(report):
        state = "**met**" if ok else "**missed**"
        lines.append(f"- {target}: {measured}: {state}")
    return "\n".join(lines)


def section(report: Report) -> str:
    model = cost_model(report)
    bare = report.bare
    top = report.find("sfu", "fanout", max(p.subscribers for p in report.fanout))
    assert top is not None
    per_core_video = 100 / model.per_video_pct if model.per_video_pct > 0 else 0.0
    mesh = report.find("sfu", "mesh", MESH)
    mesh_line = ""
    if mesh is not None:
        predicted = MESH * model.fixed_pct + MESH * (MESH - 1) * model.per_subscriber_pct
        mesh_line = (
            f"- Check against the mesh of {MESH}: {MESH} publishers x fixed cost + "
            f"{MESH * (MESH - 1)} subscriber streams x per-subscriber cost predicts "
            f"{predicted:.1f} %; measured {mesh.cpu_pct:.1f} %.\n"
        )
    noisy = ""
    if report.background_max > QUIET_CORES:
        noisy = (
            "; **other work ran during some windows: read their rows (last column of the "
            "details) as noisy**"
        )
    return f"""{SECTION}

Written by `make bench` (`bench/sfu.py`); rerun it to refresh this section.

- Date: {report.date}
- Machine: {os.cpu_count()} cores (nproc), CPU "{cpu_model()}"
- Software: Python {platform.python_version()}, aiortc {version("aiortc")}, \
PyAV {version("av")}, uvloop {version("uvloop")}
- Background load (machine CPU time minus the benchmark's own processes): \
{report.background_first:.2f} cores busy before the run, {report.background_start:.2f} when \
it started; {report.quiet_windows} of {len(report.windows)} windows under \
{QUIET_CORES:g} cores, at most {report.background_max:.2f}{noisy}
- Run time: {report.minutes:.1f} min after the wait for a quiet machine; every point is one {
        WINDOW_S:g} s window after all \
subscribers receive video and {SETTLE_S:g} s more (a second window right after when other \
processes kept more than {RETRY_CORES:g} cores busy in the first; the quieter one is kept)

### Method

- Media: every publisher replays the same pre-encoded clip through aiortc's own sender
  (its packetizer, RTP and SRTP; no real-time encoder in any client): VP8 640x480 at
  {FPS} fps, ≈ {report.clip_kbps:.0f} kbit/s, a keyframe every second, and Opus in 20 ms
  packets. The SFU forwards both tracks to every subscriber.
- SFU: the real `konfer sfu` process (uvloop) with `KONFER_SFU_ICE_HOSTS=127.0.0.1`,
  driven through its control API by aiortc clients from `tests/integration/sfu_peers.py`.
  MediaRelay: a small aiortc server in this file, also on uvloop, that subscribes every
  subscriber connection to `MediaRelay().subscribe(track)` (the default, buffered): the
  publisher's tracks are decoded once and encoded again for each subscriber by aiortc's
  VP8/Opus encoders (500 kbit/s default; no subscriber sends REMB). Each server is its
  own process; its CPU (user + system, all threads) comes from `/proc/<pid>/stat` over
  the window and is shown as % of one core (MediaRelay's encoder threads can use both
  cores, so it can exceed 100 %). RSS is `VmRSS` at the end of the window.
- Clients: aiortc peers in separate worker processes (at most {PER_WORKER} subscribers each,
  uvloop, gathering on 127.0.0.1 only). Subscribers do not decode: a hook on each receiver
  (`konfer.sfu.aiortc_hooks.hook_receiver`) counts RTP packets and frames instead. Decoding
  80 VP8 streams would need several cores on this 2-core machine and starve the server
  being measured; frame delivery and timing can be read from RTP headers alone.
- Delivered fps: per subscriber and video track, frames whose last packet (marker bit)
  arrived in the window with no sequence number missing since the previous frame, ÷
  window. "fps min" is the slowest subscriber.
- Added latency: publishers log when each video frame's last packet goes to their socket
  (RTP timestamp, monotonic clock); subscribers log when a frame's last packet arrives.
  The clip's frames carry random timestamp offsets, so one constant per subscriber maps
  received RTP timestamps onto sent ones (the SFU rewrites timestamps by a constant;
  MediaRelay keeps each frame's pts through decode and encode); the matching constant is
  the one that explains the received sequence. Latency = arrival - send of the same frame,
  pooled over all subscribers; on loopback the network adds about 0.1 ms, so this is what
  the server (and the receiving client's event loop) adds. MediaRelay includes aiortc's
  jitter buffer (it releases a frame when the next one starts), decoding and encoding.
- CPU per forwarded packet: SFU CPU ÷ the packets it sent (`konfer_sfu_forwarded_packets_total`
  from its `/metrics`, audio + video). Bare relay: a uvloop process whose datagram
  protocol sends every datagram it receives once to a sink, driven by this process at the
  SFU's forwarded rate at {top.subscribers} subscribers ({bare.rate_pps:,.0f} datagrams/s of
  {bare.size} B); its CPU ÷ datagrams relayed.
- Loopback and the kernel: a datagram sent to 127.0.0.1 is delivered into the receiving
  socket inside the sender's `sendto` (softirq run on the way out), and this kernel
  accounts CPU by ticks without IRQ-time accounting, so that work is the sender's system
  time. The SFU therefore also pays its subscribers' kernel receive path, which on a real
  network runs on their machines; "server kernel share" shows how much of its CPU is
  system time. The bare relay pays the same, so the per-packet ratio is like for like.
- MediaRelay is measured at {
        ", ".join(str(p.subscribers) for p in report.relay if p.scenario == "fanout")
    } subscribers and in the mesh,
  each on a fresh server: from about 10 subscribers its encoders need more than the
  machine's two cores, frames queue without bound in its buffered relay, and more
  subscribers would only measure a saturated machine (at 40 or 80 it would also starve
  the client processes). 20 is where the target compares the two. Once saturated its
  CPU is capped by the machine while it delivers fewer frames, so the plain CPU ratio
  understates the difference; "server CPU ms / delivered frame" normalizes by the work
  done.

### Results

{fanout_table(report)}

Ratios are MediaRelay ÷ SFU. Details per window:

{detail_table(report)}

Bare uvloop UDP relay (receive once, send once): {bare.relayed_pps:,.0f} datagrams/s of \
{bare.size} B relayed at {bare.cpu_pct:.1f} % of a core = **{bare.us_per_packet:.2f} µs \
per packet**; the SFU at {top.subscribers} subscribers: **{top.us_per_packet or 0:.2f} µs \
per forwarded packet** ({(top.us_per_packet or 0) / bare.us_per_packet:.1f}x).

### Cost model

Fitted over the SFU fan-out points (least squares):

- Fixed: {model.fixed_pct:.2f} % of a core (the process with one publisher, no subscriber).
- Per subscriber of one publisher (one video + one audio stream): \
{model.per_subscriber_pct:.3f} % of a core.
- Per forwarded packet (slope against forwarded packets/s): {model.per_packet_us:.2f} µs.
- Per forwarded stream, at this clip's packet rates: video ({model.video_pps:.0f} pkt/s) \
≈ {model.per_video_pct:.3f} % of a core, audio ({model.audio_pps:.0f} pkt/s) ≈ \
{model.per_audio_pct:.3f} %.
- So one core forwards ≈ {per_core_video:,.0f} video streams (video alone), or \
≈ {100 / max(model.per_subscriber_pct, 1e-9):,.0f} audio+video subscriptions; within \
design §3's budget of 60 % of a core, ≈ {60 / max(model.per_subscriber_pct, 1e-9):,.0f}.
{mesh_line}{upkeep_text(report, model)}
### Targets

{verdict_lines(report)}
{profile_text(report.profile)}"""


def source_line(frame: str) -> str:
    """The code at a py-spy frame such as ``PublishedTrack.forward (sfu/forwarding.py:339)``."""
    m = re.search(r"\(([^()]+):(\d+)\)$", frame)
    if m is None:
        return ""
    bases = [Path(p) for p in sys.path if p] + [ROOT / d / "konfer" for d in ("sfu", "core")]
    for base in bases:
        path = base / m[1]
        if path.is_file():
            lines = path.read_text().splitlines()
            n = int(m[2])
            return lines[n - 1].strip().replace("|", "\\|") if 0 < n <= len(lines) else ""
    return ""


def upkeep_text(report: Report, model: CostModel) -> str:
    """Split the cost at the largest fan-out into connection upkeep and forwarding."""
    up = report.upkeep
    top = report.find("sfu", "fanout", up.subscribers) if up else None
    if up is None or top is None or not top.forwarded_pps:
        return ""
    forwarding = top.cpu_pct - up.cpu_pct
    kernel = top.cpu_pct * top.sys_share - up.cpu_pct * up.sys_share
    per_packet = forwarding / 100 * 1e6 / top.forwarded_pps
    kernel_us = kernel / 100 * 1e6 / top.forwarded_pps
    per_sub = (up.cpu_pct - model.fixed_pct) / up.subscribers
    bare = report.bare
    return (
        f"- Split at {up.subscribers} subscribers, by muting the publisher for one more window "
        f"(everything connected, nothing forwarded): {up.cpu_pct:.1f} % of a core "
        f"({up.sys_share:.0%} kernel) is upkeep, i.e. ≈ {per_sub:.3f} % per subscriber "
        "above the fixed cost (aiortc's RTCP loops, ICE consent checks, the tick, the "
        f"control API's long-poll); forwarding itself is {forwarding:.1f} %, "
        f"{per_packet:.1f} µs per forwarded packet, of which {kernel_us:.1f} µs kernel "
        f"(`sendto`, with loopback delivery) and {per_packet - kernel_us:.1f} µs user "
        "(SRTP protect through pylibsrtp, the header, uvloop). The bare relay spends "
        f"{bare.sys_share:.0%} of its {bare.us_per_packet:.1f} µs per packet in the kernel.\n"
    )


def profile_text(profile: Profile | None) -> str:
    if profile is None:
        return ""
    rows = "\n".join(
        f"| {share:.1%} | `{name}` | `{source_line(name)}` |" for name, share in profile.top
    )
    return f"""
### Profile

py-spy (`--profile {profile.seconds:g}`, `--gil --nonblocking`, 250 Hz) on the SFU at \
{profile.subscribers} subscribers after the measured windows: {profile.samples} samples while \
it held the GIL. Self time by line; C code shows as the Python line that called it
(`sendto` is uvloop's UDP send, i.e. the system call; libsrtp runs under
`Session.__process`). Samples are wall-clock: time the SFU spends descheduled inside a
call (a `sendto` that wakes a subscriber's process, a busy machine) counts as well, so
read the CPU split above for cost and this for where the thread is.

| share | where | code |
|---:|---|---|
{rows}
"""


def print_report(report: Report) -> None:
    print(fanout_table(report))
    print()
    print(detail_table(report))
    print()
    bare = report.bare
    print(f"bare uvloop relay: {bare.us_per_packet:.2f} µs per packet at {bare.relayed_pps:,.0f}/s")
    model = cost_model(report)
    print(
        f"cost model: fixed {model.fixed_pct:.2f} %, "
        f"per subscriber {model.per_subscriber_pct:.3f} %"
        f", per packet {model.per_packet_us:.2f} µs, per video stream {model.per_video_pct:.3f} %"
        f", per audio stream {model.per_audio_pct:.3f} %"
    )
    print()
    print(verdict_lines(report))
    print(upkeep_text(report, model))
    print(profile_text(report.profile))


async def benchmark(args: argparse.Namespace) -> Report:
    first, start = await wait_for_quiet(args.quiet_wait)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="konfer-bench-sfu-") as tmp:
        workdir = Path(tmp)
        clip = encode_clip()
        clip_path = workdir / "clip.json"
        clip.save(clip_path)
        print(
            f"clip: {len(clip.video)} VP8 frames, {clip.video_kbps:.0f} kbit/s; "
            f"{len(clip.audio)} Opus packets",
            file=sys.stderr,
            flush=True,
        )
        keys = Keys(workdir / "keys")
        sfu, profile, upkeep = await run_sfu(workdir, keys, clip_path, args.fanout, args.profile)
        relay = await run_relay(workdir, clip_path, args.relay_fanout) if args.relay_fanout else []
        top = max((p for p in sfu if p.scenario == "fanout"), key=lambda p: p.subscribers)
        bare = await run_bare_relay(top.forwarded_pps, int(top.forwarded_bytes_per_packet) + 30)
    return Report(
        sfu,
        relay,
        bare,
        clip.video_kbps,
        first,
        start,
        (time.monotonic() - started) / 60,
        profile,
        upkeep,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print only; leave the doc")
    parser.add_argument(
        "--fanout", type=int, nargs="+", default=list(FANOUT), help="SFU subscriber counts"
    )
    parser.add_argument(
        "--relay-fanout", type=int, nargs="*", default=list(RELAY_FANOUT),
        help="MediaRelay subscriber counts (none: skip MediaRelay)",
    )  # fmt: skip
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="after the largest SFU fan-out, sample the SFU with py-spy (if installed)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=QUIET_WAIT_S,
        help="seconds to wait for a quiet machine before measuring anyway",
    )
    sub = parser.add_subparsers(dest="command")
    worker = sub.add_parser("worker", help="internal: aiortc clients, commands on stdin")
    for name in ("--mode", "--base", "--meeting", "--keys", "--clip", "--name"):
        worker.add_argument(name, required=True)
    relay = sub.add_parser("mediarelay", help="internal: the MediaRelay server")
    relay.add_argument("--port", type=int, required=True)
    udp = sub.add_parser("udp-relay", help="internal: the bare uvloop UDP relay")
    udp.add_argument("--port", type=int, required=True)
    udp.add_argument("--sink-port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "worker":
        uvloop.run(worker_main(args))
    elif args.command == "mediarelay":
        uvloop.run(mediarelay_main(args.port))
    elif args.command == "udp-relay":
        uvloop.run(udp_relay_main(args.port, args.sink_port))
    else:
        report = uvloop.run(benchmark(args))
        print_report(report)
        if not args.no_write:
            write_section(SECTION, section(report))
            print(f"\nwrote {DOC.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
