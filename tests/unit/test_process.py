"""A child that asked to die with its parent does, even when the parent is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

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
