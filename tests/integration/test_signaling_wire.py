"""Signaling frames encoded once and written straight to sockets, in a real uvicorn.

These fail when uvicorn's websockets protocol changes what ``konfer.api.signaling.wire``
relies on: the extension would vanish (the hub silently falls back to ASGI) or the
writer would break.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from konfer.api.signaling.hub import SEND_QUEUE_LIMIT, Connection
from konfer.api.signaling.wire import KonferWebSocketProtocol, encode_text_frame, frame_writer
from tests.helpers import free_port

pytestmark = pytest.mark.integration


@dataclass
class Server:
    port: int
    opened: asyncio.Queue[Connection] = field(default_factory=asyncio.Queue)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


@contextlib.asynccontextmanager
async def serve(*, deflate: bool = False) -> AsyncIterator[Server]:
    """uvicorn with the protocol ``konfer api`` uses; each socket becomes a ``Connection``."""
    server = Server(free_port())

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        conn = Connection(
            websocket=websocket,
            session_id=uuid.uuid4().hex,
            user_id="u",
            username="u",
            avatar_url=None,
            frames=frame_writer(websocket.scope),
        )
        writer = asyncio.create_task(conn.write_loop())
        await server.opened.put(conn)
        try:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
        finally:
            writer.cancel()

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=server.port,
        ws=KonferWebSocketProtocol,
        ws_per_message_deflate=deflate,
        lifespan="off",
        log_level="warning",
    )
    uv = uvicorn.Server(config)
    task = asyncio.create_task(uv.serve())
    while not uv.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        yield server
    finally:
        uv.should_exit = True
        await asyncio.wait_for(task, 10)


async def test_one_encoded_frame_reaches_every_socket_unchanged() -> None:
    async with serve() as server:
        clients = [await websockets.connect(server.url, compression=None) for _ in range(3)]
        conns = [await asyncio.wait_for(server.opened.get(), 5) for _ in clients]
        assert all(c.frames is not None for c in conns), "uvicorn no longer offers the writer"
        body = json.dumps({"type": "chat", "message": "héllo " * 50})
        frame = encode_text_frame(body)
        for conn in conns:
            conn.send(body, frame)
        assert all(conn.queue.empty() for conn in conns)  # written, not queued
        for ws in clients:
            assert await asyncio.wait_for(ws.recv(), 5) == body
            await ws.close()


def test_an_encoded_frame_is_the_one_websockets_would_send() -> None:
    for body in ("small", "y" * 300, "é" * 40_000):  # 7-bit, 16-bit and 64-bit lengths
        server = ServerProtocol()
        server.state = State.OPEN
        server.send_text(body.encode())
        assert encode_text_frame(body) == b"".join(server.data_to_send())


async def test_a_socket_that_stops_reading_does_not_hold_up_the_others_or_lose_order() -> None:
    async with serve() as server:
        fast = await websockets.connect(server.url, compression=None, max_size=None)
        fast_conn = await asyncio.wait_for(server.opened.get(), 5)
        slow = await RawClient.open(server.port)  # reads nothing until told to
        slow_conn = await asyncio.wait_for(server.opened.get(), 5)
        count, pad = 160, "z" * 60_000  # about 9.6 MB: more than the kernel buffers hold
        fast_seen: list[int] = []

        async def read_fast() -> None:
            while len(fast_seen) < count:
                fast_seen.append(json.loads(await fast.recv())["seq"])

        reading = asyncio.create_task(read_fast())
        for seq in range(count):
            body = json.dumps({"seq": seq, "pad": pad})
            frame = encode_text_frame(body)
            fast_conn.send(body, frame)
            slow_conn.send(body, frame)
            await asyncio.sleep(0.001)
        await asyncio.wait_for(reading, 20)
        assert fast_seen == list(range(count))
        # The slow socket's transport filled up, so the rest waits in its own queue.
        assert slow_conn.sending or slow_conn.queue.qsize() > 0
        assert slow_conn.queue.qsize() < SEND_QUEUE_LIMIT
        slow_seen = [json.loads(text)["seq"] for text in await slow.read_texts(count)]
        assert slow_seen == list(range(count))
        await fast.close()
        await slow.close()


async def test_with_permessage_deflate_messages_take_the_asgi_path() -> None:
    async with serve(deflate=True) as server:
        ws = await websockets.connect(server.url, compression="deflate")
        conn = await asyncio.wait_for(server.opened.get(), 5)
        assert conn.frames is None  # a compressed connection cannot take raw frames
        conn.send({"type": "pong"})
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}
        await ws.close()


async def test_after_the_client_left_nothing_is_written() -> None:
    async with serve() as server:
        ws = await websockets.connect(server.url, compression=None)
        conn = await asyncio.wait_for(server.opened.get(), 5)
        assert conn.frames is not None
        await ws.close()
        for _ in range(200):
            if not conn.frames.write(encode_text_frame("late")):
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the writer kept writing to a closed socket")
        conn.send("late")  # falls back to the queue, never raises


@dataclass
class RawClient:
    """A client on a tiny receive buffer that reads only when asked: a stalled browser."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    protocol: ClientProtocol

    @classmethod
    async def open(cls, port: int) -> RawClient:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws"))
        protocol.send_request(protocol.connect())
        writer.write(b"".join(protocol.data_to_send()))
        while protocol.state is State.CONNECTING:
            protocol.receive_data(await asyncio.wait_for(reader.read(4096), 5))
        protocol.events_received()  # the handshake response
        return cls(reader, writer, protocol)

    async def read_texts(self, count: int) -> list[str]:
        texts: list[str] = []
        while len(texts) < count:
            self.protocol.receive_data(await asyncio.wait_for(self.reader.read(1 << 20), 10))
            for event in self.protocol.events_received():
                if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    texts.append(bytes(event.data).decode())
        return texts

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
