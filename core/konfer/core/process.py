"""Child processes that must not outlive the process that started them."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

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
