"""WebSocket text frames encoded once per message and written straight to each socket.

Sits under ``signaling.hub``, which fans a room message out to every local socket of the
room, and ``cli`` (``konfer api``), which hands ``KonferWebSocketProtocol`` to uvicorn.

Why: through ASGI, each socket's copy of a message paid for a queue hand-off, a writer
task wake-up, Starlette's and the request middleware's send wrappers, uvicorn's ``send``
and websockets' framing, which made up most of a replica's CPU per chat message at 25
sockets a replica (docs/benchmarks.md, Signaling). A frame a server sends is not masked,
so its bytes are the same for every socket: the hub encodes it once and writes those
bytes to each socket's transport.

uvicorn has no call for that, so ``KonferWebSocketProtocol`` is uvicorn's default
websockets protocol plus one thing: it advertises the ASGI scope extension
``konfer.websocket.frames`` holding a ``FrameWriter`` for the connection, only when no
WebSocket extension (permessage-deflate) was negotiated, since a compressed connection
cannot take raw text frames. Where the extension is absent (another server, Starlette's
TestClient) every message takes the ASGI path, as it does whenever the writer refuses
one. ``tests/integration/test_signaling_wire.py`` runs it in a real uvicorn and fails when
uvicorn changes the protocol attributes used here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State

FRAMES_EXTENSION = "konfer.websocket.frames"


def encode_text_frame(text: str) -> bytes:
    """One complete, unmasked, uncompressed text frame, as a server sends it."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


class FrameWriter:
    """Writes whole frames to one connection's transport while it is open and writable.

    ``write`` answers False (and writes nothing) when the connection is closing or closed,
    or when the transport's buffer is over its high-water mark: the caller then queues
    the message for the ASGI path, which waits for the buffer to drain.
    """

    __slots__ = ("_protocol",)

    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self._protocol = protocol

    def write(self, frame: bytes) -> bool:
        p = self._protocol
        if (
            p.close_sent
            or p.disconnected
            or not p.writable.is_set()
            or p.conn.state is not State.OPEN
            or p.transport.is_closing()
        ):
            return False
        p.transport.write(frame)
        return True


class KonferWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets (sans-I/O) protocol, advertising a ``FrameWriter``."""

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.response.status_code == 101 and not self.conn.extensions:
            self.scope["extensions"][FRAMES_EXTENSION] = {"writer": FrameWriter(self)}


def frame_writer(scope: Mapping[str, Any]) -> FrameWriter | None:
    """The connection's ``FrameWriter`` when the server offers one."""
    entry = (scope.get("extensions") or {}).get(FRAMES_EXTENSION)
    writer = entry.get("writer") if isinstance(entry, Mapping) else None
    return writer if isinstance(writer, FrameWriter) else None
