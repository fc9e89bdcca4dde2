"""A child that asked to die with its parent does, even when the parent is SIGKILLed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from konfer.core.process import announce, announced, http_url

CHILD = (
    "from konfer.core.process import die_with_parent; import time; "
    "die_with_parent(); time.sleep(60)"
)
PARENT = (
    "import subprocess, sys, time; "
    f"p = subprocess.Popen([sys.executable, '-c', {CHILD!r}]); "
    "print(p.pid, flush=True); time.sleep(60)"
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie waiting for init counts as gone
        return fh.read().split(") ")[1][0] != "Z"


def test_child_exits_when_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    time.sleep(0.5)  # let the child set its death signal
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


ARENAS = """
import ctypes, sys, threading
from konfer.core.process import limit_malloc_arenas
capped = sys.argv[1] == "capped"
if capped:
    assert limit_malloc_arenas(2)
barrier = threading.Barrier(8)
def work():
    barrier.wait()  # all threads allocate at once, so each wants an arena of its own
    keep = [bytearray(64 * 1024) for _ in range(64)]
    barrier.wait()
    del keep
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL("libc.so.6").malloc_stats()
"""


def _arenas(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", ARENAS, mode], capture_output=True, text=True, check=True
    )
    return out.stderr.count("Arena ")


def test_capped_malloc_arenas_keep_threads_from_growing_their_own() -> None:
    assert _arenas("capped") <= 2
    assert _arenas("default") > 2  # the cap, not the workload, keeps the count down


FREEZE = """
import gc, json
from konfer.api.app import create_app
from konfer.core.process import freeze_startup_heap
from konfer.core.settings import Settings

create_app(Settings(_env_file=None))
before = len(gc.get_objects(generation=2))
freeze_startup_heap()
after = len(gc.get_objects(generation=2))
print(json.dumps({"frozen": gc.get_freeze_count(), "before": before, "after": after}))
"""


def test_a_frozen_startup_heap_leaves_full_collections_little_to_walk() -> None:
    """The api's start-up objects leave the collector's full passes (see
    ``freeze_startup_heap``): a full pass then walks only what came later."""
    out = subprocess.run(
        [sys.executable, "-c", FREEZE], capture_output=True, text=True, check=True, timeout=120
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["before"] > 100_000
    assert result["frozen"] >= result["before"]
    assert result["after"] < 1_000


def test_announced_url_is_read_whole_and_only_once_written(tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    assert announced(url_file) is None
    announce(url_file, http_url("127.0.0.1", 41234))
    assert announced(url_file) == "http://127.0.0.1:41234"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["url"]  # no partial file left


def test_http_url_brackets_ipv6_hosts() -> None:
    assert http_url("::1", 8080) == "http://[::1]:8080"
