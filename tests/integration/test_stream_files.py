"""Serving a live stream's files while its streamer keeps replacing the playlist.

The streamer uploads a new playlist (HLS) or manifest (DASH) after every segment, so a
player's request can land between two versions. Runs on SQLite + local disk and on
PostgreSQL + Redis + MinIO, with the stored files put there directly.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

from konfer.api.db.models import LiveStream
from konfer.core.storage import ObjectInfo, Storage, live_stream_folder
from tests.conftest import ApiClient
from tests.helpers import assert_error

M3U8 = "application/vnd.apple.mpegurl"


def playlist(segments: int) -> bytes:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2"]
    for n in range(segments):
        lines += ["#EXTINF:2.000000,", f"segment{n:05d}.ts"]
    return ("\n".join(lines) + "\n").encode()


class NewerAfterStat:
    """Storage on which the streamer's next upload of ``key`` lands right after each stat
    of it: the interleaving a busy stream produces now and then, made certain."""

    def __init__(self, inner: Storage, key: str, newer: bytes) -> None:
        self.inner = inner
        self.key = key
        self.newer = newer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def stat(self, key: str) -> ObjectInfo | None:
        info = await self.inner.stat(key)
        if key == self.key:
            await self.inner.put(key, io.BytesIO(self.newer), len(self.newer), M3U8)
        return info


async def hls_stream(client: ApiClient) -> str:
    host = await client.signup()
    r = await client.post(
        "/api/v1/meetings",
        headers=host["headers"],
        json={"title": "Town hall", "start_time": "2031-01-01T10:00:00Z", "duration": 30},
    )
    assert r.status_code == 201, r.text
    stream = LiveStream(
        id=uuid.uuid4(),
        meeting_id=uuid.UUID(r.json()["meeting_id"]),
        started_by=uuid.UUID(host["user_id"]),
        stream_type="hls",
        status="streaming",
    )
    async with client.app.state.konfer.sessionmaker() as session:
        session.add(stream)
        await session.commit()
    return str(stream.id)


async def put(client: ApiClient, key: str, data: bytes, content_type: str) -> None:
    await client.app.state.konfer.storage.put(key, io.BytesIO(data), len(data), content_type)


async def test_a_playlist_replaced_while_it_is_served_arrives_whole(client: ApiClient) -> None:
    stream_id = await hls_stream(client)
    folder = live_stream_folder(stream_id)
    segment = bytes(range(256)) * 64
    await put(client, f"{folder}segment00000.ts", segment, "video/mp2t")
    await put(client, f"{folder}playlist.m3u8", playlist(1), M3U8)
    base = f"/api/v1/streaming/hls/{stream_id}"

    r = await client.get(f"{base}/playlist.m3u8")
    assert r.status_code == 200
    assert r.content == playlist(1)
    assert r.headers["content-type"].startswith(M3U8)
    assert r.headers["cache-control"] == "no-cache"
    assert int(r.headers["content-length"]) == len(r.content)

    state = client.app.state.konfer
    original = state.storage
    state.storage = NewerAfterStat(original, f"{folder}playlist.m3u8", playlist(2))  # type: ignore[assignment]
    try:
        r = await client.get(f"{base}/playlist.m3u8")
    finally:
        state.storage = original
    assert r.status_code == 200
    # The newer playlist, and a Content-Length that is its own, not the stat's.
    assert r.content == playlist(2)
    assert int(r.headers["content-length"]) == len(playlist(2))

    r = await client.get(f"{base}/segment00000.ts")
    assert r.status_code == 200
    assert r.content == segment
    assert r.headers["content-type"] == "video/mp2t"
    assert r.headers["cache-control"] == "max-age=3600"
    assert int(r.headers["content-length"]) == len(segment)

    assert_error(await client.get(f"{base}/segment00001.ts"), 404, "RESOURCE_NOT_FOUND")
    assert_error(await client.get(f"{base}/bad!name.ts"), 404, "RESOURCE_NOT_FOUND")
    assert_error(
        await client.get(f"/api/v1/streaming/dash/{stream_id}/manifest.mpd"),
        404,
        "RESOURCE_NOT_FOUND",
    )
