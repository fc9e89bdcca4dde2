"""``konfer sfu``: one meeting's SFU process, on uvloop, with its control API.

The local runtime (and the operator's Deployment) start it with the meeting id and a
port (0: the kernel picks one, and ``url_file`` tells the starter which). It serves the
control API of ``control`` over HTTP and media over UDP (ICE on the addresses of
``KONFER_SFU_ICE_HOSTS``). aiortc and aioice run unchanged on uvloop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import uvicorn
import uvloop

from konfer.core.keys import KeyRing
from konfer.core.process import announce, freeze_startup_heap, http_url
from konfer.core.settings import Settings
from konfer.sfu import aiortc_hooks as hooks
from konfer.sfu.auth import MediaAuth
from konfer.sfu.control import create_app
from konfer.sfu.room import Room, RoomConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServeOptions:
    meeting_id: str
    host: str
    port: int
    load_keys: Callable[[], KeyRing]
    reload_keys: bool = False
    url_file: Path | None = None


def room_config(settings: Settings, meeting_id: str) -> RoomConfig:
    return RoomConfig(
        meeting_id=meeting_id,
        announced_ip=settings.sfu_announced_ip,
        last_n=settings.sfu_last_n,
        keyframe_interval=settings.sfu_keyframe_min_interval_ms / 1000.0,
        audio_top_n=settings.sfu_audio_top_n,
        audio_hold=settings.sfu_audio_hold_ms / 1000.0,
    )


def prepare_process(settings: Settings) -> None:
    """Process-wide set-up: where ICE gathers, and the guard against any codec."""
    problems = hooks.check_compatibility()
    if problems:
        raise RuntimeError("aiortc does not match the SFU's hooks: " + "; ".join(problems))
    hooks.set_ice_hosts(settings.sfu_ice_hosts or None)
    hooks.set_udp_port_range(settings.sfu_udp_port_min, settings.sfu_udp_port_max)
    hooks.codec_guard.install()


async def serve(settings: Settings, options: ServeOptions) -> None:
    """Run until SIGTERM/SIGINT; then close every peer connection."""
    prepare_process(settings)
    room = Room(room_config(settings, options.meeting_id))
    auth = MediaAuth(
        options.load_keys(),
        settings.token_issuer,
        options.meeting_id,
        reload=options.load_keys if options.reload_keys else None,
    )
    room.start()
    config = uvicorn.Config(
        create_app(room, auth, fault_injection=settings.sfu_fault_injection),
        host=options.host,
        port=options.port,
        loop="none",
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = _Server(config, room)  # it turns SIGTERM/SIGINT into a graceful exit
    sock = config.bind_socket()
    url = http_url(options.host, sock.getsockname()[1])
    if options.url_file is not None:
        announce(options.url_file, url)
    freeze_startup_heap()  # no full-collection pauses in the forwarding path
    print(f"konfer sfu: meeting {options.meeting_id} on {url}", flush=True)
    try:
        await server.serve(sockets=[sock])
    finally:
        await room.close()


class _Server(uvicorn.Server):
    """uvicorn, ending the control API's long-polls as soon as shutdown begins."""

    def __init__(self, config: uvicorn.Config, room: Room) -> None:
        super().__init__(config)
        self.room = room
        self.loop = asyncio.get_running_loop()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.loop.call_soon_threadsafe(self.room.close_events)
        super().handle_exit(sig, frame)


def run(settings: Settings, options: ServeOptions) -> None:
    """Blocking entry point of ``konfer sfu``."""
    uvloop.run(serve(settings, options))
