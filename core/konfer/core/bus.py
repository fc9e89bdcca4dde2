"""Message fan-out between api replicas: Redis pub/sub, or in process for one replica.

A replica subscribes to a channel while it holds sockets that care about it and hands
every message to one handler; ordering per channel is preserved on both backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

log = logging.getLogger(__name__)

Handler = Callable[[str, str], None]
"""Called with (channel, data) on the event loop; must not block."""


class Bus(Protocol):
    async def start(self, handler: Handler) -> None: ...
    async def subscribe(self, channel: str) -> None: ...
    async def unsubscribe(self, channel: str) -> None: ...
    async def publish(self, channel: str, data: str) -> None: ...
    async def close(self) -> None: ...


class MemoryBus:
    """One process: publishing is a direct hand-off to the handler."""

    def __init__(self) -> None:
        self._handler: Handler | None = None
        self._channels: set[str] = set()

    async def start(self, handler: Handler) -> None:
        self._handler = handler

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    async def publish(self, channel: str, data: str) -> None:
        if self._handler is not None and channel in self._channels:
            self._handler(channel, data)

    async def close(self) -> None:
        self._channels.clear()


class RedisBus:
    """Redis pub/sub on a dedicated connection, read by one task."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._pubsub: PubSub = redis.pubsub(ignore_subscribe_messages=True)
        self._reader: asyncio.Task[None] | None = None
        self._handler: Handler | None = None

    async def start(self, handler: Handler) -> None:
        self._handler = handler
        # A placeholder channel keeps the connection in subscriber mode from the start.
        await self._pubsub.subscribe("konfer:bus:hello")
        self._reader = asyncio.create_task(self._read(), name="redis-bus-reader")

    async def _read(self) -> None:
        assert self._handler is not None
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:  # a dropped connection: redis-py reconnects and resubscribes
                log.exception("redis bus read failed; retrying")
                await asyncio.sleep(0.5)
                continue
            if message is None or message.get("type") != "message":
                continue
            channel, data = message["channel"], message["data"]
            if isinstance(channel, bytes):
                channel = channel.decode()
            if isinstance(data, bytes):
                data = data.decode()
            try:
                self._handler(channel, data)
            except Exception:
                log.exception("bus handler failed", extra={"channel": channel})

    async def subscribe(self, channel: str) -> None:
        await self._pubsub.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        await self._pubsub.unsubscribe(channel)

    async def publish(self, channel: str, data: str) -> None:
        await self._redis.publish(channel, data)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
