"""Throughput and latency of the api, measured against a bare FastAPI route.

Why: every request pays for the api's pipeline (middleware, metrics, token check, a
database session) on top of what FastAPI and uvicorn cost anyway. Absolute numbers depend
on the machine; the ratio to a one-line FastAPI route served the same way on the same
machine in the same run does not, so that ratio is what the target is stated in: the
authenticated read ``GET /api/v1/users/me`` should reach at least half the bare route's
throughput. Login is measured too; it is bound by argon2id by design, so its section
states the hash parameters and the measured cost of one hash.

How to run::

    make bench
    # or, with the servers already described by KONFER_TEST_* variables:
    bash scripts/with-services.sh .venv/bin/python bench/api.py

It needs PostgreSQL and Redis (``scripts/with-services.sh`` starts them on loopback),
prints a markdown table and rewrites the "## API" section of ``docs/benchmarks.md``.
All traffic goes to 127.0.0.1. The ``serve-bare`` and ``load`` subcommands are internal:
the benchmark starts them as separate processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/api.py` puts bench/, not the root, first
    sys.path.insert(0, str(ROOT))

from bench.common import DOC, fresh_postgres_url, require_env, write_section  # noqa: E402

from konfer.api.services.passwords import (  # noqa: E402
    ARGON2_MEMORY_KIB,
    ARGON2_PARALLELISM,
    ARGON2_TIME_COST,
    PasswordHasher,
)
from tests.helpers import free_port  # noqa: E402

HOST = "127.0.0.1"
SECTION = "## API"

READ_CONCURRENCY = 32
LOGIN_CONCURRENCY = 4  # login is CPU-bound by argon2; more callers only queue up
WARMUP_S = 2.0
DURATION_S = 8.0
ROUNDS = 2
MAX_REQUESTS = 2_000_000  # per measurement: a bound on count besides the one on time
REQUEST_TIMEOUT_S = 10.0
START_TIMEOUT_S = 60.0
HASH_SAMPLES = 5
TARGET_READ_RATIO = 0.5
BACKGROUND_WARN_CORES = 0.25
PASSWORD = "bench-password-123"

# -- the bare baseline -------------------------------------------------------------------


def serve_bare(port: int) -> None:
    """One trivial FastAPI route, served exactly as ``konfer api`` serves the api."""
    import uvicorn
    from fastapi import FastAPI

    from konfer.core.logging import configure_logging

    app = FastAPI()

    @app.get("/bare")
    async def bare() -> dict[str, bool]:
        return {"ok": True}

    configure_logging("WARNING", json=True)
    uvicorn.run(
        app,
        host=HOST,
        port=port,
        loop="uvloop",
        http="httptools",
        proxy_headers=True,
        forwarded_allow_ips=HOST,
        log_config=None,
        access_log=False,
    )


# -- the load generator (runs in its own process) ----------------------------------------


@dataclass(frozen=True, slots=True)
class LoadSpec:
    port: int
    method: str
    path: str
    concurrency: int
    warmup_s: float
    duration_s: float
    server_pid: int
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    max_requests: int = MAX_REQUESTS


@dataclass(slots=True)
class LoadResult:
    requests: int = 0
    elapsed_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0


@dataclass(slots=True)
class Window:
    start: float
    end: float
    issued: int = 0


def process_cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def build_request(spec: LoadSpec) -> bytes:
    body = spec.body.encode() if spec.body is not None else b""
    lines = [f"{spec.method} {spec.path} HTTP/1.1", f"Host: {HOST}:{spec.port}"]
    lines += ["User-Agent: konfer-bench", *(f"{k}: {v}" for k, v in spec.headers.items())]
    if spec.body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one keep-alive response; return its status. Bodies must carry a length."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head[:-4].split(b"\r\n")
    length: int | None = None
    for line in header_lines:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            raise ValueError("chunked responses are not supported")
    if length is None:
        raise ValueError("response without Content-Length")
    await reader.readexactly(length)
    return int(status_line.split(b" ", 2)[1])


async def connection_loop(
    spec: LoadSpec, request: bytes, window: Window, result: LoadResult
) -> None:
    """One keep-alive connection sending requests back to back until the window ends."""
    reader, writer = await asyncio.open_connection(HOST, spec.port)
    try:
        while time.perf_counter() < window.end and window.issued < spec.max_requests:
            window.issued += 1
            sent = time.perf_counter()
            writer.write(request)
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    status = await read_response(reader)
            except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
                result.errors[type(exc).__name__] = result.errors.get(type(exc).__name__, 0) + 1
                writer.close()
                reader, writer = await asyncio.open_connection(HOST, spec.port)
                continue
            done = time.perf_counter()
            if window.start <= done <= window.end:
                result.requests += 1
                result.latencies_ms.append((done - sent) * 1000)
                if status >= 400:
                    result.errors[str(status)] = result.errors.get(str(status), 0) + 1
    finally:
        writer.close()


async def sample_cpu(spec: LoadSpec, window: Window, result: LoadResult) -> None:
    """CPU spent by this generator and by the server during the measured window only."""
    await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
    client, server = time.process_time(), process_cpu_seconds(spec.server_pid)
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    result.client_cpu_s = time.process_time() - client
    result.server_cpu_s = process_cpu_seconds(spec.server_pid) - server


async def generate_load(spec: LoadSpec) -> LoadResult:
    request = build_request(spec)
    start = time.perf_counter() + spec.warmup_s
    window = Window(start=start, end=start + spec.duration_s)
    result = LoadResult(elapsed_s=spec.duration_s)
    await asyncio.gather(
        sample_cpu(spec, window, result),
        *(connection_loop(spec, request, window, result) for _ in range(spec.concurrency)),
    )
    return result


def run_load_process(spec_json: str) -> None:
    import uvloop

    result = uvloop.run(generate_load(LoadSpec(**json.loads(spec_json))))
    json.dump(asdict(result), sys.stdout)


# -- servers -----------------------------------------------------------------------------


def postgres_version() -> str:
    with psycopg.connect(require_env("KONFER_TEST_PG_ADMIN_URL")) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "?"


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The caller's environment without any KONFER_* setting, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KONFER_")}
    return env | extra


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    port: int
    pid: int


@contextmanager
def server(
    name: str, argv: Sequence[str], env: dict[str, str], port: int, probe: str, workdir: Path
) -> Iterator[Server]:
    """Start a server process, wait until ``probe`` answers 200, stop it on exit."""
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        # cwd is a scratch folder so no developer .env is picked up by Settings.
        proc = subprocess.Popen(argv, env=env, cwd=workdir, stdout=log, stderr=log)
    try:
        wait_ready(proc, f"http://{HOST}:{port}{probe}", log_path)
        yield Server(name=name, port=port, pid=proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}:\n{log_path.read_text()}")
        with suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready:\n{log_path.read_text()}")


def start_bare(stack: ExitStack, workdir: Path) -> Server:
    port = free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "serve-bare", "--port", str(port)]
    return stack.enter_context(server("bare", argv, clean_env({}), port, "/bare", workdir))


def start_api(stack: ExitStack, workdir: Path) -> Server:
    """The production entry point, ``konfer api``, on PostgreSQL and Redis."""
    port = free_port()
    data_dir = workdir / "data"
    data_dir.mkdir()
    env = clean_env(
        {
            "KONFER_HOST": HOST,
            "KONFER_PORT": str(port),
            "KONFER_DATABASE_URL": fresh_postgres_url(),
            "KONFER_REDIS_URL": require_env("KONFER_TEST_REDIS_URL"),
            "KONFER_RATE_LIMIT_ENABLED": "false",
            "KONFER_LOG_LEVEL": "WARNING",
            "KONFER_JSON_LOGS": "true",
            "KONFER_DATA_DIR": str(data_dir),
        }
    )
    argv = [sys.executable, "-m", "konfer.cli.main", "api"]
    return stack.enter_context(server("api", argv, env, port, "/health/ready", workdir))


def sign_up(api: Server) -> str:
    """Register the benchmark user and return an access token for it."""
    base = f"http://{HOST}:{api.port}/api/v1/auth"
    body = {"username": "bench_user", "email": "bench@example.com", "password": PASSWORD}
    with httpx.Client(base_url=base, timeout=30) as client:
        client.post("/register", json=body).raise_for_status()
        r = client.post("/login", json={"username": "bench_user", "password": PASSWORD})
        r.raise_for_status()
        token: str = r.json()["access_token"]
        return token


# -- scenarios and statistics ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scenario:
    label: str
    server: Server
    method: str
    path: str
    concurrency: int
    baseline: str | None = None  # label of the bare scenario it is compared with
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None


@dataclass(frozen=True, slots=True)
class Stats:
    scenario: Scenario
    rps: float
    p50_ms: float
    p99_ms: float
    rounds_rps: list[float]
    server_cpu_ms_per_request: float
    client_cpu_share: float


def measure(scenario: Scenario, warmup_s: float, duration_s: float) -> LoadResult:
    spec = LoadSpec(
        port=scenario.server.port,
        method=scenario.method,
        path=scenario.path,
        concurrency=scenario.concurrency,
        warmup_s=warmup_s,
        duration_s=duration_s,
        server_pid=scenario.server.pid,
        headers=scenario.headers,
        body=scenario.body,
    )
    argv = [sys.executable, str(Path(__file__).resolve()), "load", json.dumps(asdict(spec))]
    done = subprocess.run(
        argv, capture_output=True, text=True, check=True, timeout=warmup_s + duration_s + 60
    )
    result = LoadResult(**json.loads(done.stdout))
    if result.errors or not result.requests:
        raise RuntimeError(f"{scenario.label}: {result.requests} ok, errors {result.errors}")
    print(
        f"  {scenario.label}: {result.requests / result.elapsed_s:,.0f} req/s",
        file=sys.stderr,
        flush=True,
    )
    return result


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def summarize(scenario: Scenario, runs: Sequence[LoadResult]) -> Stats:
    latencies = sorted(ms for run in runs for ms in run.latencies_ms)
    requests = sum(run.requests for run in runs)
    elapsed = sum(run.elapsed_s for run in runs)
    return Stats(
        scenario=scenario,
        rps=requests / elapsed,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        rounds_rps=[run.requests / run.elapsed_s for run in runs],
        server_cpu_ms_per_request=sum(run.server_cpu_s for run in runs) * 1000 / requests,
        client_cpu_share=sum(run.client_cpu_s for run in runs) / elapsed,
    )


def run_scenarios(
    scenarios: Sequence[Scenario], rounds: int, warmup_s: float, duration_s: float
) -> tuple[list[Stats], float]:
    """Interleave the scenarios round by round, so drift hits all of them alike.

    Returns the statistics and the most cores other processes kept busy in the half
    second before any measurement, while the benchmark's own servers were idle.
    """
    runs: dict[str, list[LoadResult]] = {s.label: [] for s in scenarios}
    background = 0.0
    for number in range(1, rounds + 1):
        print(f"round {number}/{rounds}", file=sys.stderr, flush=True)
        for scenario in scenarios:
            background = max(background, check_idle(0.5))
            runs[scenario.label].append(measure(scenario, warmup_s, duration_s))
    return [summarize(s, runs[s.label]) for s in scenarios], background


@dataclass(frozen=True, slots=True)
class HashCost:
    wall_ms: float
    cpu_ms: float


def measure_hash() -> HashCost:
    """Median cost of one argon2id hash with the api's parameters, on an idle machine."""
    hasher = PasswordHasher()

    async def timed() -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        await hasher.hash(PASSWORD)
        return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000

    async def sample() -> list[tuple[float, float]]:
        return [await timed() for _ in range(HASH_SAMPLES)]

    samples = asyncio.run(sample())
    return HashCost(
        wall_ms=statistics.median(s[0] for s in samples),
        cpu_ms=statistics.median(s[1] for s in samples),
    )


# -- report ------------------------------------------------------------------------------


def ratio(value: float, base: float) -> str:
    """Two decimals, or two significant digits for ratios far from 1."""
    r = value / base
    if r >= 100:
        return f"{r:,.0f}"
    return f"{r:.2f}" if r >= 0.1 else f"{r:.2g}"


def table(stats: Sequence[Stats]) -> str:
    by_label = {s.scenario.label: s for s in stats}
    rows = [
        "| Scenario | Concurrency | req/s | p50 ms | p99 ms | req/s ÷ bare | p50 ÷ bare "
        "| server CPU ms/req | load-gen CPU | rounds req/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in stats:
        base = by_label.get(s.scenario.baseline or s.scenario.label, s)
        rows.append(
            f"| {s.scenario.label} | {s.scenario.concurrency} | {s.rps:,.0f} "
            f"| {s.p50_ms:.2f} | {s.p99_ms:.2f} | {ratio(s.rps, base.rps)} "
            f"| {ratio(s.p50_ms, base.p50_ms)} | {s.server_cpu_ms_per_request:.3f} "
            f"| {s.client_cpu_share:.0%} | {', '.join(f'{r:,.0f}' for r in s.rounds_rps)} |"
        )
    return "\n".join(rows)


def cpu_model() -> str:
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from the first line of /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # user .. steal; guest time is already inside user
    return total - idle, total


def background_load(seconds: float = 1.0) -> float:
    """How many cores other processes keep busy; the benchmark wants an idle machine."""
    busy, total = _cpu_jiffies()
    time.sleep(seconds)
    busy_after, total_after = _cpu_jiffies()
    return (busy_after - busy) / max(1, total_after - total) * (os.cpu_count() or 1)


def check_idle(seconds: float) -> float:
    load = background_load(seconds)
    if load > BACKGROUND_WARN_CORES:
        print(
            f"warning: other processes keep {load:.2f} cores busy; results will be noisy",
            file=sys.stderr,
            flush=True,
        )
    return load


@dataclass(frozen=True, slots=True)
class Report:
    stats: list[Stats]
    read_label: str
    hash_cost: HashCost
    pg_version: str
    rounds: int
    warmup_s: float
    duration_s: float
    background_cores: float


def verdict(report: Report) -> str:
    by_label = {s.scenario.label: s for s in report.stats}
    read = by_label[report.read_label]
    base = by_label[read.scenario.baseline or read.scenario.label]
    achieved = read.rps / base.rps
    met = "**met**" if achieved >= TARGET_READ_RATIO else "**missed**"
    return (
        f"Target: the authenticated read reaches at least {TARGET_READ_RATIO:.0%} of the bare "
        f"route's throughput at the same concurrency. Measured {achieved:.0%}: target {met}."
    )


def noisy(report: Report) -> str:
    if report.background_cores <= BACKGROUND_WARN_CORES:
        return ""
    return "; **the machine was not idle, so these numbers are noisy**"


def section(report: Report) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cost = report.hash_cost
    cores = cpu_count()
    return f"""{SECTION}

Written by `make bench` (`bench/api.py`); rerun it to refresh this section.

- Date: {now}
- Machine: {cores} cores (nproc), CPU "{cpu_model()}"
- Background load: other processes kept at most {report.background_cores:.2f} cores busy \
(sampled before the run and for 0.5 s before each measurement){noisy(report)}
- Software: Python {platform.python_version()}, uvicorn {version("uvicorn")}, \
FastAPI {version("fastapi")}, PostgreSQL {report.pg_version}
- Timing: {report.warmup_s:g} s warm-up, then {report.duration_s:g} s measured, per scenario \
and round; {report.rounds} rounds

### Method

- Each server is its own process on a free 127.0.0.1 port. The api runs through its
  production entry point `konfer api` (uvicorn, loop=uvloop, http=httptools, one worker)
  on PostgreSQL and Redis from `scripts/with-services.sh`, migrated into a fresh database.
  The baseline is a bare FastAPI app with one route, `GET /bare -> {{"ok": true}}`, started
  with the same `uvicorn.run` arguments.
- api settings: `KONFER_RATE_LIMIT_ENABLED=false`, because the documented limits (100/min
  for reads, 10/min for auth) would throttle any benchmark to a few requests;
  `KONFER_LOG_LEVEL=WARNING`, so no per-request access-log line is written and log I/O is
  not measured; JSON logs; data dir and signing keys in a temporary folder; local storage.
- Load: a separate Python process (uvloop) holds a fixed number of keep-alive HTTP/1.1
  connections, each sending its next request as soon as the previous answer arrives
  (closed loop). Scenarios are interleaved round by round and the table pools the rounds;
  "rounds req/s" shows the spread. Latency is client-side, from send to last body byte.
  In a closed loop latency ≈ concurrency ÷ throughput, so at equal concurrency the p50
  ratio mirrors the throughput ratio. Any non-2xx answer fails the run.
- The generator is the same for baseline and targets, so the ratios are fair. It writes
  raw requests rather than using httpx: on this machine an httpx `AsyncClient` tops out
  near 1,600 req/s (about 300 req/s with one shared pool at 32 connections) and would
  have measured itself instead of the bare route.
- The generator, the server and PostgreSQL share the {cores} cores; uvicorn with one worker
  uses at most one. "load-gen CPU" is the generator's share of one core during the
  measured window; "server CPU ms/req" is the server process's user+system CPU time
  divided by the requests it answered. It shifts less than req/s when other processes
  compete for the cores, which is why the run samples background load.
- Login registers one user, then logs it in again and again at lower concurrency
  ({LOGIN_CONCURRENCY}, since each login is CPU-bound); it is compared with the bare route
  at the same concurrency.
- "api floor" is a diagnostic row, not a target: an api route with no dependency and no
  database (`/api/v1/users/health`), i.e. the api's middleware, metrics and error handling
  on top of FastAPI. The gap between it and `/users/me` is the token check, the dependency
  chain and, when the sign-in cache misses, one database round trip.

### Results

{table(report.stats)}

{verdict(report)}

### Login cost: argon2id

Login verifies an argon2id hash (`konfer.api.services.passwords`) in a worker thread, so
its throughput is bounded by CPU, not by the framework.

- `ARGON2_TIME_COST` = {ARGON2_TIME_COST}
- `ARGON2_MEMORY_KIB` = {ARGON2_MEMORY_KIB} ({ARGON2_MEMORY_KIB // 1024} MiB)
- `ARGON2_PARALLELISM` = {ARGON2_PARALLELISM}
- One hash on the idle machine, before the servers start (median of {HASH_SAMPLES}): \
{cost.wall_ms:.1f} ms wall, {cost.cpu_ms:.1f} ms CPU summed over all threads
- Ceiling this implies: {cores} cores ÷ {cost.cpu_ms:.1f} ms CPU per hash ≈ \
{cores * 1000 / cost.cpu_ms:.1f} logins/s per machine, before any other work
"""


# -- main --------------------------------------------------------------------------------


def scenarios_for(bare: Server, api: Server, token: str) -> tuple[list[Scenario], str]:
    bare_read = f"bare `GET /bare`, c={READ_CONCURRENCY}"
    bare_login = f"bare `GET /bare`, c={LOGIN_CONCURRENCY}"
    read = "`GET /api/v1/users/me` (PostgreSQL)"
    login_body = json.dumps({"username": "bench_user", "password": PASSWORD})
    scenarios = [
        Scenario(bare_read, bare, "GET", "/bare", READ_CONCURRENCY),
        Scenario(  # diagnostic: the api's pipeline with no dependency and no database
            "api floor `GET /api/v1/users/health`",
            api,
            "GET",
            "/api/v1/users/health",
            READ_CONCURRENCY,
            baseline=bare_read,
        ),
        Scenario(
            read,
            api,
            "GET",
            "/api/v1/users/me",
            READ_CONCURRENCY,
            baseline=bare_read,
            headers={"Authorization": f"Bearer {token}"},
        ),
        Scenario(bare_login, bare, "GET", "/bare", LOGIN_CONCURRENCY),
        Scenario(
            "`POST /api/v1/auth/login` (PostgreSQL)",
            api,
            "POST",
            "/api/v1/auth/login",
            LOGIN_CONCURRENCY,
            baseline=bare_login,
            body=login_body,
        ),
    ]
    return scenarios, read


def benchmark(rounds: int, warmup_s: float, duration_s: float, write: bool) -> None:
    require_env("KONFER_TEST_REDIS_URL")
    background = check_idle(1.0)
    print("argon2: timing one hash", file=sys.stderr, flush=True)
    hash_cost = measure_hash()
    with tempfile.TemporaryDirectory(prefix="konfer-bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        bare, api = start_bare(stack, workdir), start_api(stack, workdir)
        scenarios, read_label = scenarios_for(bare, api, sign_up(api))
        stats, busy = run_scenarios(scenarios, rounds, warmup_s, duration_s)
    background = max(background, busy)
    report = Report(
        stats, read_label, hash_cost, postgres_version(), rounds, warmup_s, duration_s, background
    )
    print(table(stats))
    print()
    print(verdict(report))
    if write:
        write_section(SECTION, section(report))
        print(f"\nwrote {DOC.relative_to(ROOT)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--warmup", type=float, default=WARMUP_S, help="seconds")
    parser.add_argument("--duration", type=float, default=DURATION_S, help="seconds")
    parser.add_argument("--no-write", action="store_true", help="print only; leave the doc")
    sub = parser.add_subparsers(dest="command")
    bare = sub.add_parser("serve-bare", help="internal: serve the baseline app")
    bare.add_argument("--port", type=int, required=True)
    load = sub.add_parser("load", help="internal: generate load from a JSON LoadSpec")
    load.add_argument("spec")
    args = parser.parse_args(argv)
    if args.command == "serve-bare":
        serve_bare(args.port)
    elif args.command == "load":
        run_load_process(args.spec)
    else:
        benchmark(args.rounds, args.warmup, args.duration, write=not args.no_write)


if __name__ == "__main__":
    main()
