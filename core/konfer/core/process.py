"""Child processes that must not outlive the process that started them."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` when the parent exits (even by SIGKILL).

    A replica killed hard cannot stop its SFU children itself; without this they would
    run on, orphaned, holding ports. Returns False where the kernel has no such switch.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    parent = os.getppid()
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # the parent died before the switch was set
        os.kill(os.getpid(), sig)
    return True


_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas for a long-running server process.

    glibc gives threads arenas of their own (up to 8 per core); the api's upload, storage
    and probe threads each leave freed buffers behind in theirs, so resident memory climbs
    with every transfer and never comes back. Must run before those threads start.
    Returns False where the C library has no such switch.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, arenas) == 1)
    except (OSError, AttributeError):
        return False


def freeze_startup_heap() -> None:
    """Move everything alive after start-up out of the cyclic collector's reach.

    A started api holds about 200,000 objects (FastAPI, SQLAlchemy, pydantic models). A
    full collection walks all of them — 60 to 250 ms on this class of machine — and it
    comes when enough long-lived objects pile up, in the middle of chat fan-out or
    packet forwarding: a pause every socket and track feels. Frozen objects are still
    freed by reference counting; only cycles among them are never collected, so garbage
    is collected first. Call it once, in a server process, after start-up.
    """
    import gc

    gc.collect()
    gc.freeze()


def http_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def announce(path: Path, text: str) -> None:
    """Tell the starting process where a server listens, once it does.

    A server bound to port 0 gets a port no other socket holds; a port chosen up front
    and bound later races with every socket the machine opens in between. The starter
    polls ``path``: it sees nothing or all of ``text``, never half of it.
    """
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def announced(path: Path) -> str | None:
    """What the child wrote with :func:`announce`, or None while it has not yet."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
