"""The recorder: joins a meeting's SFU as a hidden subscriber and writes what it receives.

``konfer recorder`` (``session``) is started by the api's local runtime or by the
operator as a Job; ``muxer`` does the stream copy, ``sfu_client`` the subscribing. This
package's own import is kept light: a stop can arrive while aiortc and PyAV still load,
and ``catch_early_stop`` makes sure it is remembered instead of killing the process.
"""

from __future__ import annotations

import signal
from types import FrameType

_stop_seen = False


def _remember(signum: int, frame: FrameType | None) -> None:
    global _stop_seen
    _stop_seen = True


def catch_early_stop() -> None:
    """Remember SIGTERM/SIGINT from now on, until the recorder installs its own handlers."""
    signal.signal(signal.SIGTERM, _remember)
    signal.signal(signal.SIGINT, _remember)


def early_stop_requested() -> bool:
    return _stop_seen
