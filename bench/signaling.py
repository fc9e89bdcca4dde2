"""Chat fan-out across two api replicas, against bare Redis pub/sub, and idle socket memory.

Why: a chat message in a meeting goes client → WebSocket → replica → PostgreSQL (the
message is stored) → Redis pub/sub → every replica holding a socket in the room → each
socket's send queue → client. This measures that path in one 50-participant room spread
over two real replicas, and states it as a ratio to a bare Redis pub/sub round trip
measured in the same run, on the same Redis, at the same paced rates, so the ratio says
what the product adds on top of the bus. It also counts how many idle, joined WebSocket
connections one replica holds within 1 GiB of memory. Target (issue text): p99 fan-out
latency under 25 ms at 500 chat messages/s.

How to run::

    make bench
    # or only this benchmark:
    bash scripts/with-services.sh .venv/bin/python bench/signaling.py

It needs PostgreSQL and Redis (``scripts/with-services.sh`` starts them on loopback and
exports ``KONFER_TEST_*``), starts its replicas as ``konfer api`` subprocesses through
``tests/integration/replicas.py``, prints markdown tables and rewrites the
"## Signaling" section of ``docs/benchmarks.md`` (``--no-write`` leaves the file alone).
All traffic stays on 127.0.0.1; the whole run takes about two minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import picows
import psycopg
import uvloop
import websockets
from picows import WSCloseCode, WSFrame, WSMsgType, WSTransport
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/signaling.py` puts bench/, not the root, first
    sys.path.insert(0, str(ROOT))

from bench.common import DOC, fresh_postgres_url, processes, require_env, write_section  # noqa: E402

from tests.integration.replicas import Cluster, Replica, cluster, recv_type  # noqa: E402

SECTION = "## Signaling"

USERS = 50  # one room, one socket per user, half on each replica
SENDERS_PER_REPLICA = 5
RATES = (100, 200, 300, 400, 500)  # chat messages/s offered, summed over all senders
STEP_S = 6.0
WARMUP_MESSAGES = 100
WARMUP_RATE = 50
BARE_MAX_MESSAGES = 10_000  # the closed-loop bare step: publish, await, publish ...
DRAIN_IDLE_S = 3.0  # a step ends this long after the last delivery when some are missing
DRAIN_CAP_S = 40.0
SUSTAINED = 0.95  # a rate is sustained when this share of it reaches every receiver
IDLE_SOCKETS = 1000  # per variant, each variant on its own fresh replica
IDLE_ROOM_SOCKETS = 100  # 50 users x 2 sockets (two tabs) per meeting: the room cap is 100
OPEN_CONCURRENCY = 50
REST_CONCURRENCY = 16
SETTLE_S = 3.0
TARGET_RATE = 500
FOREIGN_WARN_CORES = 0.25  # cores used by processes outside the benchmark
QUIET_WAIT_S = 20.0  # before each step, wait at most this long for them to calm down
TARGET_P99_MS = 25.0
GIB = 1024**3
PASSWORD = "bench-password-123"
PONG = json.dumps({"type": "pong"})
PONG_BYTES = PONG.encode()
# What websockets (and browsers) offer; the replicas decline it.
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
# On top of tests/integration/replicas.py's: presence TTL at its default (not the tests'
# 2 s), and no SFU process per meeting: this measures signaling, not media.
REPLICA_ENV = {"KONFER_PRESENCE_TTL_SECONDS": "120", "KONFER_SFU_ENABLED": "false"}
CLK_TCK = os.sysconf("SC_CLK_TCK")

Compression = str | None  # "deflate" (what browsers offer) or None
Variant = tuple[str, Compression]

# -- processes: CPU time and memory from /proc ------------------------------------------


def cpu_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks (0 once it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = raw.rsplit(")", 1)[1].split()  # the command name may contain spaces
    return int(fields[11]) + int(fields[12])


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _flag(argv: list[str], name: str) -> int | None:
    with contextlib.suppress(ValueError, IndexError):
        return int(argv[argv.index(name) + 1])
    return None


def service_pids(pg_port: int, redis_port: int) -> dict[str, list[int]]:
    """The PostgreSQL server (postmaster and its backends) and the Redis server we use."""
    procs = processes()
    postmaster = [
        pid for pid, _, comm, argv in procs if comm == "postgres" and _flag(argv, "-p") == pg_port
    ]
    pg = postmaster + [pid for pid, ppid, _, _ in procs if ppid in postmaster]
    redis = [
        pid
        for pid, _, comm, argv in procs
        if comm.startswith("redis-server") and any(f":{redis_port}" in a for a in argv)
    ]
    return {"postgres": pg, "redis": redis}


def machine_busy_ticks() -> int:
    """Busy clock ticks of all CPUs since boot (first line of /proc/stat, less idle)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values[:8]) - values[3] - values[4]  # user .. steal, less idle and iowait


@dataclass
class CpuMeter:
    """CPU seconds per named group of processes between ``start`` and ``stop``, and what
    every other process on the machine used meanwhile (the machine may be shared)."""

    groups: Callable[[], dict[str, list[int]]]
    _start: dict[str, dict[int, int]] = field(default_factory=dict)
    _t0: float = 0.0
    _busy0: int = 0

    def _snapshot(self) -> dict[str, dict[int, int]]:
        return {name: {pid: cpu_ticks(pid) for pid in pids} for name, pids in self.groups().items()}

    def start(self) -> None:
        self._start, self._t0 = self._snapshot(), time.perf_counter()
        self._busy0 = machine_busy_ticks()

    def stop(self) -> tuple[dict[str, float], float, float]:
        """(CPU seconds per group, wall seconds, CPU seconds of all other processes)."""
        end, wall = self._snapshot(), time.perf_counter() - self._t0
        busy = (machine_busy_ticks() - self._busy0) / CLK_TCK
        used = {
            name: sum(t - self._start.get(name, {}).get(pid, 0) for pid, t in ticks.items())
            / CLK_TCK
            for name, ticks in end.items()
        }
        return used, wall, max(0.0, busy - sum(used.values()))


def raise_fd_limit(wanted: int) -> int:
    """Lift the soft open-file limit towards the hard one; replicas inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return int(soft)


# -- REST set-up -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def expect(r: httpx.Response, status: int) -> dict[str, Any]:
    if r.status_code != status:
        raise RuntimeError(f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text}")
    body: dict[str, Any] = r.json()
    return body


async def bounded(limit: int, jobs: Sequence[Awaitable[Any]]) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(job: Awaitable[Any]) -> Any:
        async with gate:
            return await job

    return list(await asyncio.gather(*(one(j) for j in jobs)))


async def register(client: httpx.AsyncClient) -> User:
    name = f"b{uuid.uuid4().hex[:12]}"
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    user = expect(await client.post("/api/v1/auth/register", json=body), 201)
    login = {"username": name, "password": PASSWORD}
    tokens = expect(await client.post("/api/v1/auth/login", json=login), 200)
    return User(str(user["user_id"]), str(tokens["access_token"]))


async def create_meeting(client: httpx.AsyncClient, host: User) -> str:
    body = {
        "title": "Signaling benchmark",
        "start_time": "2030-01-01T10:00:00Z",
        "duration": 60,
        "max_participants": 100,
    }
    r = await client.post("/api/v1/meetings", headers=host.headers, json=body)
    return str(expect(r, 201)["meeting_id"])


async def rest_join(client: httpx.AsyncClient, user: User, meeting_id: str) -> None:
    expect(await client.post(f"/api/v1/meetings/{meeting_id}/join", headers=user.headers), 200)


def deflate_accepted(response_headers: Any) -> bool:
    """Whether the server accepted the permessage-deflate the client offered."""
    return "permessage-deflate" in response_headers.get("Sec-WebSocket-Extensions", "")


def deflate_negotiated(ws: ClientConnection) -> bool:
    return deflate_accepted(ws.response.headers if ws.response is not None else {})


async def open_joined(
    replica: Replica, user: User, meeting_id: str, compression: Compression
) -> ClientConnection:
    """An idle socket, joined. These use ``websockets``, not the room's picows listener: it
    can inflate, so the deflate variant still measures if a replica ever accepts the offer."""
    ws = await websockets.connect(
        replica.ws_url(user.token), compression=compression, max_size=None, open_timeout=60
    )
    await ws.send(json.dumps({"type": "join", "room_id": meeting_id}))
    await recv_type(ws, "joined", within=30)
    return ws


# -- latency steps -----------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(1, round(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Recorder:
    """What every receiving socket saw, by step: (seq, receive time, receiver)."""

    received: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)

    def count(self, step: int) -> int:
        return len(self.received.get(step, ()))


@dataclass(frozen=True, slots=True)
class Step:
    label: str
    rate: int  # asked for; 0 for the closed-loop bare step
    offered: float  # what the pacer achieved, messages/s
    messages: int
    receivers: int
    deliveries: int
    lost: int
    delivered_per_s: float  # deliveries per second, first send to last receipt
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_s: dict[str, float]
    wall_s: float
    other_s: float  # CPU seconds used by processes outside the benchmark meanwhile

    @property
    def messages_per_s(self) -> float:
        """Messages per second that reached every receiver."""
        return self.delivered_per_s / self.receivers


Send = Callable[[int, str], Awaitable[None]]


async def pace(send: Send, rate: float, count: int, tag: str) -> list[int]:
    """Offer ``count`` messages at ``rate``/s on an absolute schedule (0: back to back,
    each after the previous send returned); their send times."""
    sent = [0] * count
    start = time.perf_counter()
    for seq in range(count):
        delay = start + seq / rate - time.perf_counter() if rate else 0.0
        if delay > 0:
            await asyncio.sleep(delay)
        sent[seq] = time.perf_counter_ns()
        await send(seq, f"{tag}:{seq}")
    return sent


async def drain(recorder: Recorder, step: int, expected: int) -> None:
    """Wait for every delivery, or until none has come for DRAIN_IDLE_S."""
    deadline = time.monotonic() + DRAIN_CAP_S
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        got = recorder.count(step)
        if got >= expected:
            return
        if got != last:
            last, last_change = got, time.monotonic()
        elif time.monotonic() - last_change > DRAIN_IDLE_S:
            return
        await asyncio.sleep(0.05)


async def wait_quiet(meter: CpuMeter) -> None:
    """Wait (up to QUIET_WAIT_S) until other processes leave the machine nearly idle."""
    deadline = time.monotonic() + QUIET_WAIT_S
    while time.monotonic() < deadline:
        meter.start()
        await asyncio.sleep(0.5)
        _, wall, other = meter.stop()
        if other / wall < FOREIGN_WARN_CORES:
            return
    progress("warning: other processes keep the machine busy; this step will be noisy")


async def run_step(
    label: str,
    step: int,
    rate: int,
    count: int,
    send: Send,
    recorder: Recorder,
    receivers: int,
    meter: CpuMeter,
) -> Step:
    recorder.received[step] = []
    await wait_quiet(meter)
    # The generator's own cyclic garbage collector is off while it measures: with the
    # receipts it keeps, its full collections paused it for 64 to 165 ms at a time
    # mid-step, which the latency would charge to the product. Collected before each step.
    gc.collect()
    gc.disable()
    try:
        meter.start()
        sent = await pace(send, rate, count, str(step))
        await drain(recorder, step, count * receivers)
        cpu, wall, other = meter.stop()
    finally:
        gc.enable()
    rows = recorder.received[step]
    unique = {(seq, who) for seq, _, who in rows}
    latencies = sorted((t - sent[seq]) / 1e6 for seq, t, _ in rows)
    last_receipt = max((t for _, t, _ in rows), default=sent[-1])
    window_s = max(1e-9, (last_receipt - sent[0]) / 1e9)
    return Step(
        label=label,
        rate=rate,
        offered=(count - 1) / max(1e-9, (sent[-1] - sent[0]) / 1e9),
        messages=count,
        receivers=receivers,
        deliveries=len(rows),
        lost=count * receivers - len(unique),
        delivered_per_s=len(rows) / window_s,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        max_ms=latencies[-1] if latencies else float("nan"),
        cpu_s=cpu,
        wall_s=wall,
        other_s=other,
    )


# -- bare Redis pub/sub ------------------------------------------------------------------


async def bare_subscriber(pubsub: PubSub, recorder: Recorder) -> None:
    """Read like konfer.core.bus.RedisBus does: one task, ``get_message`` in a loop."""
    while True:
        message = await pubsub.get_message(timeout=1.0)
        if message is None or message.get("type") != "message":
            continue
        now = time.perf_counter_ns()
        step, seq = str(message["data"]).split(":")
        recorder.received[int(step)].append((int(seq), now, 0))


async def bare_steps(redis_url: str, rates: Sequence[int], meter: CpuMeter) -> list[Step]:
    channel = f"bench:bare:{uuid.uuid4().hex}"
    publisher = Redis.from_url(redis_url, decode_responses=True)
    listener = Redis.from_url(redis_url, decode_responses=True)
    recorder = Recorder()
    recorder.received[0] = []
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)  # subscribed once the server has answered
    reader = asyncio.create_task(bare_subscriber(pubsub, recorder))

    async def send(_seq: int, text: str) -> None:
        await publisher.publish(channel, text)

    try:
        await run_step("warm-up", 0, WARMUP_RATE, WARMUP_MESSAGES, send, recorder, 1, meter)
        paced = [
            await run_step(f"bare {rate}/s", n, rate, int(rate * STEP_S), send, recorder, 1, meter)
            for n, rate in enumerate(rates, start=1)
        ]
        label, n = "bare closed loop", len(rates) + 1
        return [*paced, await run_step(label, n, 0, BARE_MAX_MESSAGES, send, recorder, 1, meter)]
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await pubsub.aclose()
        await publisher.aclose()
        await listener.aclose()


# -- chat fan-out ------------------------------------------------------------------------


class ChatListener(picows.WSListener):
    """One room socket's receiving side, called by the event loop for each frame.

    Why not the ``websockets`` client the tests use: the generator receives all 50
    deliveries of every chat on the same 2 cores as the product, and a task woken per
    message (``async for`` over a connection) cost it 16 to 25 µs of CPU per delivery, a
    third of everything a chat cost at 500 msg/s. picows parses frames in C and calls this
    straight from the socket's read callback, with no task or future per message.
    """

    def __init__(self, who: int, recorder: Recorder) -> None:
        super().__init__()
        self.who = who
        self.recorder = recorder
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        now = time.perf_counter_ns()
        if frame.msg_type is not WSMsgType.TEXT:
            if frame.msg_type is WSMsgType.CLOSE:
                self.recorder.closed.append(str(frame.get_close_code()))
                transport.disconnect()
            return  # the library answers pings itself
        if not frame.fin:  # the replicas send every message as one frame
            self.recorder.errors.append("fragmented frame")
            return
        msg = json.loads(frame.get_payload_as_bytes())
        kind = msg.get("type")
        if kind == "chat":
            step, seq = msg["message"].split(":")
            self.recorder.received[int(step)].append((int(seq), now, self.who))
        elif kind == "ping":
            transport.send(WSMsgType.TEXT, PONG_BYTES)
        elif kind == "joined":
            if not self.joined.done():
                self.joined.set_result(None)
        elif kind == "error":
            self.recorder.errors.append(str(msg.get("code")))
            if not self.joined.done():
                self.joined.set_exception(RuntimeError(f"join refused: {msg}"))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.joined.done():
            self.joined.set_exception(ConnectionError("socket closed before joined"))


@dataclass
class Room:
    meeting_id: str
    sockets: list[WSTransport]
    senders: list[WSTransport]  # alternating between the replicas
    recorder: Recorder

    @property
    def deflate(self) -> bool:
        return any(deflate_accepted(ws.response.headers) for ws in self.sockets)

    async def send_chat(self, seq: int, text: str) -> None:
        """Chat ``text`` from the senders in turn."""
        ws = self.senders[seq % len(self.senders)]
        ws.send(WSMsgType.TEXT, json.dumps({"type": "chat", "message": text}).encode())

    async def close(self) -> None:
        for ws in self.sockets:
            ws.send_close(WSCloseCode.OK)
            ws.disconnect()
        await asyncio.gather(*(ws.wait_disconnected() for ws in self.sockets))


async def open_listening(
    replica: Replica, user: User, meeting_id: str, who: int, recorder: Recorder
) -> WSTransport:
    """A joined room socket that offers permessage-deflate as browsers do."""
    transport, listener = await picows.ws_connect(
        lambda: ChatListener(who, recorder),
        replica.ws_url(user.token),
        extra_headers={"Sec-WebSocket-Extensions": DEFLATE_OFFER},
        websocket_handshake_timeout=60,
    )
    assert isinstance(listener, ChatListener)
    transport.send(WSMsgType.TEXT, json.dumps({"type": "join", "room_id": meeting_id}).encode())
    await asyncio.wait_for(listener.joined, 30)
    return transport


async def open_room(replicas: Sequence[Replica], users: Sequence[User], meeting_id: str) -> Room:
    """One socket per user, users split evenly over the replicas, all joined."""
    placed = [(replicas[i * len(replicas) // len(users)], u) for i, u in enumerate(users)]
    recorder = Recorder()
    sockets = await bounded(
        OPEN_CONCURRENCY,
        [open_listening(r, u, meeting_id, who, recorder) for who, (r, u) in enumerate(placed)],
    )
    room = Room(meeting_id, sockets, [], recorder)
    if room.deflate:
        raise RuntimeError("a replica accepted permessage-deflate, which this client cannot read")
    half = len(sockets) // len(replicas)
    per_replica = min(SENDERS_PER_REPLICA, half)
    room.senders = [sockets[r * half + i] for i in range(per_replica) for r in range(len(replicas))]
    return room


async def fanout_steps(room: Room, rates: Sequence[int], meter: CpuMeter) -> list[Step]:
    """Rates in ascending order; once one is not sustained, only the highest still runs:
    the rates in between would only queue up a longer backlog."""
    n = len(room.sockets)
    send = room.send_chat
    await run_step("warm-up", 0, WARMUP_RATE, WARMUP_MESSAGES, send, room.recorder, n, meter)
    steps: list[Step] = []
    ladder = sorted(rates)
    for number, rate in enumerate(ladder, start=1):
        if steps and not sustained(steps[-1]) and rate != ladder[-1]:
            continue
        count = int(rate * STEP_S)
        label = f"chat {rate}/s"
        steps.append(await run_step(label, number, rate, count, send, room.recorder, n, meter))
    return steps


# -- idle connections --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdleResult:
    label: str
    sockets: int
    rss_before: int
    rss_after: int
    idle_cpu: float  # cores the replica kept busy while holding them, over SETTLE_S
    deflate: bool  # whether the replica accepted permessage-deflate

    @property
    def per_socket(self) -> float:
        return (self.rss_after - self.rss_before) / self.sockets


@dataclass
class IdleClients:
    sockets: list[ClientConnection] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def open(
        self, replica: Replica, user: User, meeting_id: str, compression: Compression
    ) -> ClientConnection:
        ws = await open_joined(replica, user, meeting_id, compression)
        self.sockets.append(ws)
        self.tasks.append(asyncio.create_task(idle_client(ws)))
        return ws

    def abort(self) -> None:
        """A teardown: no closing handshakes for thousands of sockets."""
        for task in self.tasks:
            task.cancel()
        for ws in self.sockets:
            ws.transport.abort()


async def open_idle(
    clients: IdleClients,
    replica: Replica,
    users: Sequence[User],
    meetings: Sequence[str],
    compression: Compression,
) -> list[ClientConnection]:
    """IDLE_ROOM_SOCKETS per meeting: each user twice (two tabs), all joined."""
    per_user = IDLE_ROOM_SOCKETS // len(users)
    jobs = [
        clients.open(replica, u, mid, compression)
        for mid in meetings
        for _ in range(per_user)
        for u in users
    ]
    return await bounded(OPEN_CONCURRENCY, jobs)


async def idle_client(ws: ClientConnection) -> None:
    """Drop what an idle socket is sent (others joining), answer heartbeats, as browsers do."""
    with contextlib.suppress(ConnectionClosed):
        async for raw in ws:
            if json.loads(raw).get("type") == "ping":
                await ws.send(PONG)


async def idle_variant(
    replica: Replica, users: Sequence[User], meetings: Sequence[str], variant: Variant
) -> IdleResult:
    label, compression = variant
    # Warm every code path once, so the baseline is not mostly first-use allocations.
    warm = IdleClients()
    await open_idle(warm, replica, users, meetings[:1], compression)
    for task in warm.tasks:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in warm.sockets))
    await asyncio.sleep(SETTLE_S)
    before = rss_bytes(replica.proc.pid)
    clients = IdleClients()
    try:
        opened = await open_idle(clients, replica, users, meetings, compression)
        await asyncio.sleep(SETTLE_S)  # the join announcements settle
        t0, c0 = time.perf_counter(), cpu_ticks(replica.proc.pid)
        await asyncio.sleep(SETTLE_S)
        idle = (cpu_ticks(replica.proc.pid) - c0) / CLK_TCK / (time.perf_counter() - t0)
        after = rss_bytes(replica.proc.pid)
        deflate = deflate_negotiated(opened[0])
        result = IdleResult(label, len(opened), before, after, idle, deflate)
    finally:
        clients.abort()
    progress(f"idle: {label}: {result.per_socket / 1024:.1f} KiB/socket")
    return result


def stop(replica: Replica) -> None:
    """SIGTERM, so the replica shuts down as in production; SIGKILL if it hangs."""
    replica.proc.terminate()
    try:
        replica.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        replica.kill()


async def measure_idle(
    c: Cluster, rest: httpx.AsyncClient, users: Sequence[User], variants: Sequence[Variant]
) -> tuple[list[IdleResult], list[Replica]]:
    """Each variant on a fresh replica of its own, in meetings of its own."""
    rooms = IDLE_SOCKETS // IDLE_ROOM_SOCKETS
    meetings = await bounded(
        REST_CONCURRENCY, [create_meeting(rest, users[0]) for _ in range(rooms * len(variants))]
    )
    await bounded(REST_CONCURRENCY, [rest_join(rest, u, m) for m in meetings for u in users])
    results, used = [], []
    for n, variant in enumerate(variants):
        replica = await asyncio.to_thread(c.start)
        used.append(replica)
        mine = meetings[n * rooms : (n + 1) * rooms]
        results.append(await idle_variant(replica, users, mine, variant))
        await asyncio.to_thread(stop, replica)
    return results, used


# -- the run -----------------------------------------------------------------------------


@dataclass
class Report:
    bare: list[Step]
    fanout: list[Step]
    idle: list[IdleResult]
    fd_limit: int
    pg_version: str
    setup_s: float
    total_s: float
    replica_logs: list[str]
    deflate: bool  # whether the fan-out sockets got permessage-deflate
    rates: list[int]  # the ladder asked for; steps past the ceiling may be skipped
    closed: list[str]  # close codes of fan-out sockets the server closed during the run
    errors: list[str]  # error codes the fan-out sockets were sent


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def benchmark(c: Cluster, rates: Sequence[int], fd_limit: int) -> Report:
    began = time.perf_counter()
    redis_url = require_env("KONFER_TEST_REDIS_URL")
    pg_port = urlsplit(require_env("KONFER_TEST_DATABASE_URL")).port or 5432
    redis_port = urlsplit(redis_url).port or 6379
    progress("starting two replicas")
    a = await asyncio.to_thread(c.start)
    b = await asyncio.to_thread(c.start)

    def groups() -> dict[str, list[int]]:
        return {
            "replica A": [a.proc.pid],
            "replica B": [b.proc.pid],
            **service_pids(pg_port, redis_port),
            "load generator": [os.getpid()],
        }

    meter = CpuMeter(groups)
    async with (
        httpx.AsyncClient(base_url=a.http, timeout=60) as ra,
        httpx.AsyncClient(base_url=b.http, timeout=60) as rb,
    ):
        progress(f"registering {USERS} users (argon2id: about half a second of CPU each)")
        users = await bounded(4, [register(ra if i % 2 else rb) for i in range(USERS)])
        meeting = await create_meeting(ra, users[0])
        await bounded(REST_CONCURRENCY, [rest_join(ra, u, meeting) for u in users])
        setup_s = time.perf_counter() - began

        progress("bare Redis pub/sub")
        bare = await bare_steps(redis_url, rates, meter)

        progress(f"chat fan-out: {USERS} sockets in one room over two replicas")
        room = await open_room([a, b], users, meeting)
        fanout = await fanout_steps(room, rates, meter)
        await room.close()
        if room.recorder.closed or room.recorder.errors:
            progress(f"sockets closed: {room.recorder.closed}; errors: {room.recorder.errors}")

        progress("idle sockets, each kind on a fresh replica")
        variants = [("permessage-deflate (browsers)", "deflate"), ("no compression", None)]
        idle, idle_replicas = await measure_idle(c, ra, users, variants)
    logs = [r.log.read_text(errors="replace") for r in (a, b, *idle_replicas)]
    return Report(
        bare=bare,
        fanout=fanout,
        idle=idle,
        fd_limit=fd_limit,
        pg_version=postgres_version(),
        setup_s=setup_s,
        total_s=time.perf_counter() - began,
        replica_logs=logs,
        deflate=room.deflate,
        rates=list(rates),
        closed=room.recorder.closed,
        errors=room.recorder.errors,
    )


def postgres_version() -> str:
    with psycopg.connect(require_env("KONFER_TEST_PG_ADMIN_URL")) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "?"


# -- output ------------------------------------------------------------------------------


def ms(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def ratio(value: float, base: float) -> str:
    return f"{value / base:.1f}" if base > 0 else "n/a"


def asked(step: Step) -> str:
    return f"{step.rate:,}" if step.rate else "closed loop"


def latency_table(bare: Sequence[Step], fanout: Sequence[Step]) -> str:
    rows = [
        "| Path | Asked msg/s | Offered msg/s | Receivers | Deliveries/s | Msg/s to all "
        "| p50 ms | p99 ms | max ms | Lost | p50 ÷ bare | p99 ÷ bare | msg/s ÷ bare |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = {s.rate: s for s in bare}
    for s in [*bare, *fanout]:
        b = base[s.rate]
        rows.append(
            f"| {s.label} | {asked(s)} | {s.offered:,.0f} | {s.receivers} | "
            f"{s.delivered_per_s:,.0f} | {s.messages_per_s:,.0f} | {ms(s.p50_ms)} | "
            f"{ms(s.p99_ms)} | {ms(s.max_ms)} | {s.lost} | {ratio(s.p50_ms, b.p50_ms)} | "
            f"{ratio(s.p99_ms, b.p99_ms)} | {s.messages_per_s / b.messages_per_s:.2f} |"
        )
    return "\n".join(rows)


CPU_GROUPS = ("replica A", "replica B", "postgres", "redis", "load generator")


def cpu_table(steps: Sequence[Step]) -> str:
    head = " | ".join(f"{g} ms/msg" for g in CPU_GROUPS)
    rows = [
        f"| Step | {head} | all, ms/msg | cores busy (of {cpu_count()}) | other processes, cores |",
        "|---|" + "---:|" * (len(CPU_GROUPS) + 3),
    ]
    for s in steps:
        per = " | ".join(f"{s.cpu_s.get(g, 0.0) * 1000 / s.messages:.2f}" for g in CPU_GROUPS)
        total = sum(s.cpu_s.values())
        rows.append(
            f"| {s.label} | {per} | {total * 1000 / s.messages:.2f} | {total / s.wall_s:.2f} "
            f"| {s.other_s / s.wall_s:.2f} |"
        )
    return "\n".join(rows)


def idle_table(idle: Sequence[IdleResult]) -> str:
    rows = [
        "| Client offers | Deflate in use | Sockets | RSS before MiB | RSS after MiB "
        "| KiB per socket | Sockets in 1 GiB | Replica CPU while idle |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in idle:
        rows.append(
            f"| {r.label} | {yes(r.deflate)} | {r.sockets:,} | {r.rss_before / 2**20:.0f} | "
            f"{r.rss_after / 2**20:.0f} | {r.per_socket / 1024:.1f} | {fits(r):,.0f} | "
            f"{r.idle_cpu:.1%} |"
        )
    return "\n".join(rows)


def yes(flag: bool) -> str:
    return "yes" if flag else "no"


def fits(r: IdleResult) -> float:
    """Idle sockets one replica holds before its RSS reaches 1 GiB."""
    return (GIB - r.rss_before) / r.per_socket


def sustained(step: Step) -> bool:
    """The generator offered the rate, and that share of it reached every receiver."""
    bar = SUSTAINED * step.rate
    return step.lost == 0 and step.offered >= bar and step.messages_per_s >= bar


def best(fanout: Sequence[Step], ok: Callable[[Step], bool]) -> Step | None:
    return max((s for s in fanout if ok(s)), key=lambda s: s.rate, default=None)


def describe(step: Step | None) -> str:
    if step is None:
        return "none of the measured rates"
    return f"{step.rate} msg/s (p50 {ms(step.p50_ms)} ms, p99 {ms(step.p99_ms)} ms)"


def throughput(bare: Sequence[Step], fanout: Sequence[Step]) -> str:
    top = best(fanout, sustained)
    most = max(fanout, key=lambda s: s.messages_per_s)
    loop = next(s for s in bare if s.rate == 0)
    return (
        f"Highest sustained chat rate: {describe(top)}. Most delivered: "
        f"{most.messages_per_s:,.0f} messages/s to all {most.receivers} sockets "
        f"= {most.delivered_per_s:,.0f} deliveries/s, at {most.rate} msg/s offered. Bare "
        f"Redis pub/sub, one publisher in a closed loop: {loop.messages_per_s:,.0f} "
        f"messages/s (p50 {ms(loop.p50_ms)} ms). Fan-out ÷ bare: "
        f"{most.messages_per_s / loop.messages_per_s:.3f} in messages/s, "
        f"{most.delivered_per_s / loop.messages_per_s:.2f} in deliveries/s."
    )


def verdict(fanout: Sequence[Step]) -> str:
    s = next((s for s in fanout if s.rate == TARGET_RATE), None)
    if s is None:
        return f"Target not measured: run with a {TARGET_RATE} msg/s step."
    met = sustained(s) and s.p99_ms < TARGET_P99_MS
    how = "" if sustained(s) else f", and only {s.messages_per_s:,.0f} msg/s reached everyone"
    fast = best(fanout, lambda x: sustained(x) and x.p99_ms < TARGET_P99_MS)
    return (
        f"Target: p99 fan-out under {TARGET_P99_MS:g} ms at {TARGET_RATE} messages/s. "
        f"Measured p99 {ms(s.p99_ms)} ms{how}: target **{'met' if met else 'missed'}**. "
        f"Highest measured rate with p99 under {TARGET_P99_MS:g} ms: {describe(fast)}."
    )


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def slow_consumer_closes(report: Report) -> int:
    return sum(log.count("closing slow signaling client") for log in report.replica_logs)


def closures(report: Report) -> str:
    codes = ", ".join(sorted(set(report.closed)))
    text = (
        f"Fan-out sockets closed during the run: {len(report.closed)}"
        f"{f' (close codes {codes})' if codes else ''}; error messages received: "
        f"{len(report.errors)}; slow-consumer closes logged by the replicas: "
        f"{slow_consumer_closes(report)}."
    )
    if "1011" in report.closed:
        text += (
            " 1011 is uvicorn's keepalive timeout: while a socket's earlier messages wait"
            " their turn the server stops reading it, so it stops reading the client's"
            " pongs too."
        )
    return text


def ceiling(fanout: Sequence[Step]) -> str:
    """What the CPU per message at the highest rate implies for this machine."""
    top = max(fanout, key=lambda s: s.rate)
    every = sum(top.cpu_s.values()) / top.messages
    servers = every - top.cpu_s.get("load generator", 0.0) / top.messages
    replica = max(1e-9, top.cpu_s.get("replica A", 0.0) / top.messages)
    cores = cpu_count()
    return (
        f"At {top.rate} msg/s the benchmark's processes spent {every * 1000:.2f} ms of CPU "
        f"per chat message, so {cores} cores carry at most {cores / every:,.0f} msg/s; the "
        f"servers alone (without the load generator) spent {servers * 1000:.2f} ms, at most "
        f"{cores / servers:,.0f} msg/s on {cores} cores of their own; one replica (a single "
        f"core: half the stores, half the deliveries) at most {1 / replica:,.0f} msg/s."
    )


def foreign_load(report: Report) -> str:
    """How busy other processes kept the machine, worst step of each kind, and a warning
    when the chat steps were disturbed."""

    def worst(steps: Sequence[Step]) -> float:
        return max((s.other_s / s.wall_s for s in steps), default=0.0)

    chat, bare = worst(report.fanout), worst(report.bare)
    note = (
        "; **the machine was shared during the chat steps, so these numbers are noisy**"
        if chat > FOREIGN_WARN_CORES
        else ""
    )
    return f"at most {chat:.2f} cores during a chat step, {bare:.2f} during a bare one{note}"


# Not measured by this script (py-spy is not a dependency): a one-off sample taken while
# writing it. Rerun by hand after changing the chat or fan-out path, and update.
PROFILE_NOTE = """\
A one-off profile, not re-measured by this script: py-spy (200 Hz, 8 s) on replica A at
150 chat messages/s, 2026-11-21 07:45 UTC (chat path with one query and the INSERT,
deflate off), split the replica's busy event-loop time into storing the chat (SQLAlchemy
and psycopg) 46%, the event loop itself (uvloop: task wake-ups and socket I/O) 24%,
per-socket writes (framing, uvicorn and Starlette send path) 18%, `PUBLISH` 7%, the bus
reader handing messages to socket queues 4%, reading and parsing client messages 1%.
Before `konfer api` turned permessage-deflate off and chat lost two queries, the same
profile showed storing 40%, writes 37% (deflate alone 13% of all), and the replica spent
about 3.9 ms of CPU per chat message instead of about 2.2 ms. That profile predates group
commit: with it (2026-11-21 10:20 UTC), on an otherwise idle machine, 500 msg/s went from
417 msg/s reaching everyone at p99 1,534 ms to all 500 at p99 78-184 ms, and the whole
benchmark from 4.65 to 3.8 ms of CPU per chat message (replicas 1.55 to 1.27, PostgreSQL
0.47 to 0.33).

Frames encoded once and group commit without the ORM's unit of work, measured by hand on
2026-11-21 between 14:50 and 15:05 UTC as A/B in one run (the previous commit's code in a
second checkout against this one, replica pairs started alternately on the same database,
Redis and 50 users, 5 s steps), while other processes kept 0.02 to 0.86 cores of the 2
busy, so only CPU time per message is compared, not latency. Both replicas' CPU per chat
message, summed, two rounds each: at 100 msg/s 7.12 and 7.00 ms before, 4.66 and 4.98
after; at 300 msg/s 4.13 and 4.31 before, 2.73 and 2.90 after; at 500 msg/s 3.84 and 3.56
before, 2.30 and 2.72 after (about a third less). The fan-out alone (one replica, 25
joined sockets, chat events published straight on Redis, three rounds each) went from
0.91 to 1.07 ms of replica CPU per message at 300/s to 0.53 to 0.64, and from 0.69 to 0.88
at 600/s to 0.44 to 0.52: user time halved, kernel time (about 0.25 ms, the 25 socket
writes) unchanged. Storing chats (`ChatWriter`, against PostgreSQL, CPU of the writing
process): a lone chat from 3.1 to 3.4 ms to 2.0 ms per batch, three chats from 3.5 to 4.4
ms to 2.2 to 2.3 ms.

One statement instead of a session's query, INSERT and COMMIT, measured by hand on
2026-11-22: a lone chat stored by the api's code in process against PostgreSQL (1,000
in a row, two rounds) took 1.13 and 1.48 ms of CPU and 1.43 and 1.79 ms of wall time
per chat through the session, 0.45 and 0.47 ms of CPU and 0.55 and 0.61 ms of wall time
as one statement. This benchmark, the runs before and after on the same machine: at 500
msg/s p50 23.1 to 5.8 ms, p99 132 to 44 ms, 3.79 to 3.29 ms of CPU per chat message for
all processes (replicas 1.15 to 0.95 each, PostgreSQL 0.35 to 0.34), cores busy 1.87 to
1.63; at 400 msg/s p99 34.9 to 17.9 ms.

Where the p99 at 500 msg/s came from, measured by hand on 2026-11-22: in three 6 s steps
at 500 msg/s in a row (the worst delivery of each message in 250 ms windows), most
windows' worst delivery was 10 to 25 ms and one or two a step reached 45 to 120 ms, at no
fixed time, so a step's p99 moved between 20.6 and 94.6 ms across runs. A `gc.callbacks`
probe in the generator showed its own full collections (of the receipts it keeps)
pausing it for 64 to 165 ms, and its middle-generation ones for 5 to 7 ms, several times a
step. The generator now measures with its collector off (above). Four runs that way on
the same code: p99 at 500 msg/s 12.7, 25.3 (the one written here), 30.2 and 39.0 ms,
with the benchmark's processes spending 3.11, 3.53, 3.58 and 3.75 ms of CPU per chat
message (1.54 to 1.86 of the 2 cores busy): the p99 follows how much CPU a message costs
on the machine that day, and the target sits at the edge of what these 2 cores give.

Writing every message the bus hands over in one turn of the event loop with one write per
socket was tried that day and left out (3.44 ms of CPU per chat message against 3.29 ms
in the run before it).

The generator's sockets, measured by hand on 2026-11-22 as A/B (the `websockets` client
with a task reading each socket, then picows callbacks, alternating, two runs each, rates
300 to 500 msg/s): the generator spent 0.79 to 1.27 ms of CPU per chat message with
`websockets` and 0.53 to 0.78 ms with picows, 16 to 25 µs against 11 to 16 µs per
delivery. Parsing was not the difference (`websockets`, its sans-I/O protocol and aiohttp
each spend 8 to 10 µs per message read in bulk): the task and future woken for each
message were. The p99 at 500 msg/s in those runs, 6.7 and 18.6 ms before, 9.4 and 18.3
ms after, followed the machine's speed that hour (bare Redis closed loop 12,471 and 8,401
msg/s before, 12,687 and 11,126 after) more than the client. Seven runs with picows that
evening (21:00 to 21:50 UTC, bare closed loop 9,914 to 13,774 msg/s): p99 at 500 msg/s
8.8, 9.4, 18.3, 13.4 (the one written here), 9.6, 16.1 and 7.6 ms, p50 2.1 to 5.1 ms.

Run-to-run spread, also observed by hand: on this virtual machine, clean runs (other
processes under 0.05 cores) on 2026-11-21 spent between 4.5 and 5.6 ms of CPU per chat
message at 500 msg/s, so the ceiling moved between about 360 and 440 msg/s. Compare
numbers within one run; across runs, only differences well beyond that spread count."""


def section(report: Report) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cores = cpu_count()
    rates = ", ".join(str(r) for r in sorted(report.rates))
    accepted = "accepted" if report.deflate else "declined"
    idle_n = report.idle[0].sockets if report.idle else 0
    return f"""{SECTION}

Written by `make bench` (`bench/signaling.py`); rerun it to refresh this section.

- Date: {now}
- Machine: {cores} cores (nproc), CPU "{cpu_model()}"
- Other processes on the machine kept busy: {foreign_load(report)}
- Software: Python {platform.python_version()}, uvicorn {version("uvicorn")}, \
websockets {version("websockets")}, picows {version("picows")}, redis-py {version("redis")}, \
PostgreSQL {report.pg_version}
- Run: {report.total_s:.0f} s in all, {report.setup_s:.0f} s of it registering {USERS} users \
(argon2id) and joining them to the meeting; open-file limit {report.fd_limit:,}

### Method

- Replicas are `konfer api` processes (uvicorn, uvloop, httptools, one worker each)
  started by `tests/integration/replicas.py` on 127.0.0.1, sharing PostgreSQL and Redis
  from `scripts/with-services.sh`, migrated into a fresh database; rate limits off (the
  bench registers {USERS} users), presence TTL at its default, logs at WARNING, and no
  SFU process per meeting (`KONFER_SFU_ENABLED=false`): this measures signaling, not media.
- **Everything shares the {cores} cores**: both replicas, PostgreSQL, Redis and the load
  generator, which is this bench's own process (uvloop) and sends and receives every
  message. The CPU table shows what each of them used. The room's sockets are picows
  clients: frames parsed in C and handed to a callback, no task woken per message, so
  that receiving {USERS} deliveries of each chat takes as little as it can of the cores
  being measured (real clients run on their own machines).
- Chat fan-out: {USERS} users in one meeting (`max_participants` 100), one socket each,
  {USERS // 2} on each replica, joined through `POST /api/v1/meetings/{{id}}/join` and then
  the socket's `join`. The sockets offer permessage-deflate, as browsers do; the
  replicas {accepted} it. {SENDERS_PER_REPLICA * 2} senders, {SENDERS_PER_REPLICA} on each
  replica, take turns sending `{{"type":"chat","message":"<step>:<seq>"}}` on an
  absolute schedule (open loop) at {rates} messages/s, {STEP_S:g} s per rate, after a
  {WARMUP_MESSAGES}-message warm-up at {WARMUP_RATE}/s. Every socket, the sender's own
  included, receives every chat, so one message/s is {USERS} deliveries/s. Latency is
  receive time minus send time on the generator's one `perf_counter_ns` clock, so it
  includes the generator's own queueing. The generator's cyclic garbage collector is off
  during each step and run before it: with the receipts it keeps, its full collections
  paused it for 64 to 165 ms at a time (measured), which the latency would have charged to
  the product. A step ends when every delivery has arrived, or
  when none has for {DRAIN_IDLE_S:g} s; "Lost" counts deliveries that never came. A rate
  is *sustained* when it was offered and at least {SUSTAINED:.0%} of it reached all
  {USERS} sockets over the step (first send to last delivery); above that, a backlog grows
  and latency is mostly queueing. After the first rate that is not sustained only the
  highest rate (the target) still runs, to keep the run short. Before each step the bench
  waits (up to {QUIET_WAIT_S:g} s) until processes outside it use under
  {FOREIGN_WARN_CORES:g} cores; the CPU table shows what they used during the step.
- The product path stores every chat in PostgreSQL before it fans out, by group commit
  (`konfer.api.signaling.chatstore.ChatWriter`: chats that arrive while a batch is
  written go together in the next one; a lone chat is written at once), each batch by one
  autocommit `INSERT ... SELECT` that joins every row to its meeting and its sender's
  membership and keeps those the REST route's rules allow (rows it leaves out are judged
  by those rules in Python, for the sender's error code), then
  publishes it once on Redis. Each replica's one bus reader encodes it into one WebSocket
  frame and writes those bytes to each of its {USERS // 2} sockets
  (`konfer.api.signaling.wire`); a socket whose transport is full, or that has messages
  queued, gets it through its own queue and writer task instead, in order.
  One socket's messages are handled one after another, which is why several senders
  share the load.
- Bare baseline: one `redis.asyncio` publisher and one subscriber (read like
  `konfer.core.bus.RedisBus`: one task calling `get_message`) in the generator process, on
  the same Redis, at the same paced rates, plus a closed loop (each publish awaited, then
  the next; {BARE_MAX_MESSAGES:,} messages) for its throughput. Ratios divide the fan-out
  value by the bare value at the same asked rate; "Msg/s to all" is deliveries/s ÷
  receivers.
- CPU: user+system time from `/proc/<pid>/stat` over each step (PostgreSQL: its postmaster
  and backends), divided by the messages sent; "cores busy" is their sum over the step's
  wall time; "other processes" is the rest of the machine's busy time (`/proc/stat`).
- Idle sockets: {idle_n:,} per kind of client, each on a fresh replica of its own, each
  socket authenticated and joined to a meeting, because that is what a client in a
  meeting holds (presence entry, room membership, writer and heartbeat tasks). The room
  cap is 100 users per meeting, so they are spread over {idle_n // IDLE_ROOM_SOCKETS}
  meetings of {IDLE_ROOM_SOCKETS} sockets ({USERS} users x {IDLE_ROOM_SOCKETS // USERS}
  tabs); the client drops the join notices and answers heartbeats. RSS is the replica's
  VmRSS (`/proc/<pid>/status`), read after {IDLE_ROOM_SOCKETS} sockets were opened and
  closed once (so first-use allocations are in the baseline) and again {SETTLE_S:g} s after
  the last socket joined; "Sockets in 1 GiB" = (1 GiB - RSS before) ÷ bytes per socket.
  "No compression" is a diagnostic for clients that do not offer permessage-deflate.

### Chat fan-out latency and throughput

{latency_table(report.bare, report.fanout)}

{verdict(report.fanout)}

{throughput(report.bare, report.fanout)}

{closures(report)}

### Where the CPU goes

{cpu_table([*report.bare, *report.fanout])}

{ceiling(report.fanout)}

{PROFILE_NOTE}

### Idle connections per replica

{idle_table(report.idle)}
"""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rates", type=int, nargs="+", default=list(RATES), help="chat messages/s per step"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave the doc")
    args = parser.parse_args(argv)
    fd_limit = raise_fd_limit(4 * IDLE_SOCKETS + 4096)
    database_url = fresh_postgres_url()
    redis_url = require_env("KONFER_TEST_REDIS_URL")
    with tempfile.TemporaryDirectory(prefix="konfer-bench-signaling-") as tmp:
        os.chdir(tmp)  # replicas start in the cwd: keep a developer's .env out of them
        with cluster(Path(tmp), database_url, redis_url, **REPLICA_ENV) as c:
            report = uvloop.run(benchmark(c, args.rates, fd_limit))
        os.chdir(ROOT)
    print(latency_table(report.bare, report.fanout))
    print()
    print(verdict(report.fanout))
    print(throughput(report.bare, report.fanout))
    print()
    print(cpu_table([*report.bare, *report.fanout]))
    print()
    print(idle_table(report.idle))
    if not args.no_write:
        write_section(SECTION, section(report))
        progress(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
