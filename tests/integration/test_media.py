"""The media library against real storage: uploads of every accepted format, refusals
that leave nothing behind, info, listing, downloads with HTTP Range, deletion, the
upload limits, and who may see what."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from konfer.core.ratelimit import MemorySlotLimiter, RedisSlotLimiter
from tests import media_samples as samples
from tests.conftest import ApiClient, SettingsFactory
from tests.helpers import assert_error
from tests.integration.media_helpers import (
    MEDIA,
    MIME,
    download,
    media_rows,
    running_worker,
    stored_keys,
    upload,
    uploaded,
)

# --- uploads ---------------------------------------------------------------------------

AV_FORMATS = ["mp4", "webm", "mkv", "avi", "mov", "flv", "mp3", "wav", "ogg", "flac", "aac", "m4a"]


@pytest.mark.parametrize("fmt", AV_FORMATS)
async def test_every_audio_and_video_format_is_accepted_and_probed(
    client: ApiClient, fmt: str
) -> None:
    user = await client.signup()
    data = samples.media(fmt, seconds=1.0)
    body = await uploaded(client, user, data, f"sample.{fmt}", description="a sample")
    is_video = fmt in ("mp4", "webm", "mkv", "avi", "mov", "flv")
    assert body["file_type"] == ("video" if is_video else "audio")
    assert body["mime_type"] == MIME[fmt]
    assert body["format"] == fmt
    assert body["size"] == len(data)
    assert body["filename"] == f"sample.{fmt}"
    assert body["description"] == "a sample"
    assert body["uploaded_by"] == user["user_id"]
    assert abs(body["duration"] - 1.0) < 0.2
    assert body["audio_codec"] in ("aac", "mp3", "opus", "pcm", "flac")
    if is_video:
        assert body["resolution"] == "160x120"
        assert body["codec"] in ("h264", "vp8")
        assert body["frame_rate"] == 15
        assert body["thumbnail_url"].endswith(f"/api/v1/media/thumbnail/{body['media_id']}")
    else:
        assert body["resolution"] is None
        assert body["thumbnail_url"] is None
    assert await download(client, user, body["media_id"]) == data


@pytest.mark.parametrize(
    ("name", "data", "file_type", "mime"),
    [
        ("a.jpg", samples.image("jpg"), "image", "image/jpeg"),
        ("a.png", samples.image("png"), "image", "image/png"),
        ("a.gif", samples.image("gif"), "image", "image/gif"),
        ("a.webp", samples.image("webp"), "image", "image/webp"),
        ("a.bmp", samples.image("bmp"), "image", "image/bmp"),
        ("a.pdf", samples.pdf(), "document", "application/pdf"),
        ("notes.txt", "Notes — ünïcode ✓\nline two\n".encode(), "document", "text/plain"),
    ],
)
async def test_images_and_documents_are_accepted(
    client: ApiClient, name: str, data: bytes, file_type: str, mime: str
) -> None:
    user = await client.signup()
    body = await uploaded(client, user, data, name, file_type=file_type)
    assert body["file_type"] == file_type
    assert body["mime_type"].startswith(mime)
    if file_type == "image":
        assert body["resolution"] == "64x48"
    assert await download(client, user, body["media_id"]) == data


async def test_format_comes_from_the_content_not_the_name(client: ApiClient) -> None:
    user = await client.signup()
    body = await uploaded(client, user, samples.media("mp3"), "looks-like-video.mp4")
    assert (body["file_type"], body["format"], body["mime_type"]) == ("audio", "mp3", "audio/mpeg")
    # An MP4 holding only audio is audio (M4A), whatever it is called.
    body = await uploaded(client, user, samples.media("mp4", video=False), "clip.mp4")
    assert (body["file_type"], body["mime_type"]) == ("audio", "audio/mp4")


async def test_large_upload_round_trips_byte_exact(client: ApiClient) -> None:
    """A 52 MB WAV (valid header, random samples) streams through the api into storage
    (MinIO: a multipart upload of unknown length) and back unchanged."""
    user = await client.signup()
    data = samples.noise_wav(52 * 1024 * 1024 + 1234)
    body = await uploaded(client, user, data, "noise.wav")
    assert body["size"] == len(data)
    assert body["file_type"] == "audio"
    r = await client.get(f"{MEDIA}/download/{body['media_id']}", headers=user["headers"])
    assert r.status_code == 200
    assert r.headers["content-length"] == str(len(data))
    assert hashlib.sha256(r.content).digest() == hashlib.sha256(data).digest()


# --- refusals leave nothing behind -----------------------------------------------------


def _mp4_with_garbage() -> bytes:
    good = samples.media("mp4")
    return good[:32] + os.urandom(len(good))


REFUSED = [
    ("zip archive", b"PK\x03\x04" + os.urandom(4000), "a.zip", 415, "UNSUPPORTED_MEDIA_TYPE"),
    ("random bytes", os.urandom(100_000), "a.mp4", 415, "UNSUPPORTED_MEDIA_TYPE"),
    (
        "executable",
        b"\x7fELF\x02\x01\x01" + os.urandom(5000),
        "a.mp3",
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
    ("mp4 header, garbage body", _mp4_with_garbage(), "a.mp4", 415, "UNSUPPORTED_MEDIA_TYPE"),
    ("truncated mp4", samples.media("mp4")[:3000], "a.mp4", 415, "UNSUPPORTED_MEDIA_TYPE"),
    (
        "png header, garbage",
        samples.image("png")[:40] + os.urandom(200),
        "a.png",
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
    ("pdf without trailer", samples.pdf()[:-7], "a.pdf", 415, "UNSUPPORTED_MEDIA_TYPE"),
    ("latin-1 text", "café crème\n".encode("latin-1") * 10, "a.txt", 415, "UNSUPPORTED_MEDIA_TYPE"),
    ("empty file", b"", "a.mp4", 400, "VALIDATION_ERROR"),
]


@pytest.mark.parametrize(("label", "data", "name", "status", "code"), REFUSED)
async def test_bad_files_are_refused_and_leave_nothing_behind(
    client: ApiClient, label: str, data: bytes, name: str, status: int, code: str
) -> None:
    user = await client.signup()
    before = await stored_keys(client)
    r = await upload(client, user, data, name)
    assert_error(r, status, code)
    assert await stored_keys(client) == before, label
    assert await media_rows(client, user["user_id"]) == 0


async def test_declared_type_must_match_the_content(client: ApiClient) -> None:
    user = await client.signup()
    before = await stored_keys(client)
    r = await upload(client, user, samples.media("mp3"), "song.mp3", file_type="video")
    err = assert_error(r, 400, "VALIDATION_ERROR")
    assert "file_type" in err["details"]
    assert await stored_keys(client) == before
    assert await media_rows(client, user["user_id"]) == 0


@pytest.mark.parametrize(
    ("fields", "status", "field"),
    [
        ({"file_type": "spreadsheet"}, 400, "file_type"),
        ({"meeting_id": "123"}, 400, "meeting_id"),
        ({"meeting_id": str(uuid.uuid4())}, 404, None),
        ({"description": "x" * 1001}, 400, "description"),
        ({"user_id": str(uuid.uuid4())}, 400, "user_id"),
        ({"colour": "red"}, 400, "colour"),
    ],
)
async def test_bad_form_fields_are_refused(
    client: ApiClient, fields: dict[str, str], status: int, field: str | None
) -> None:
    user = await client.signup()
    before = await stored_keys(client)
    r = await upload(client, user, samples.media("mp3"), "a.mp3", **fields)
    err = assert_error(r, status, "VALIDATION_ERROR" if status == 400 else "RESOURCE_NOT_FOUND")
    if field:
        assert field in err["details"]
    assert await stored_keys(client) == before
    assert await media_rows(client, user["user_id"]) == 0


async def test_upload_needs_multipart_and_a_file(client: ApiClient) -> None:
    user = await client.signup()
    r = await client.post(f"{MEDIA}/upload", headers=user["headers"], json={"file": "x"})
    assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    r = await client.post(f"{MEDIA}/upload", headers=user["headers"], data={"description": "x"})
    assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")  # urlencoded, not multipart
    r = await client.post(
        f"{MEDIA}/upload",
        headers=user["headers"],
        files={"description": (None, "no file here")},
    )
    assert assert_error(r, 400, "VALIDATION_ERROR")["details"] == {"file": "Field required"}
    boundary = "b0undary"
    r = await client.post(
        f"{MEDIA}/upload",
        headers={**user["headers"], "content-type": f"multipart/form-data; boundary={boundary}"},
        content=f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        'filename="a.wav"\r\n\r\nRIFF'.encode(),
    )
    assert_error(r, 400, "VALIDATION_ERROR")  # the body stops mid-part
    r = await client.post(f"{MEDIA}/upload", files={"file": ("a.mp3", samples.media("mp3"))})
    assert_error(r, 401, "MISSING_TOKEN")


async def test_oversized_uploads_are_refused_while_streaming(
    make_settings: SettingsFactory, open_client: Any
) -> None:
    """A per-type cap is enforced on the sniffed type as bytes arrive (413, nothing left)."""
    for backend in ("sqlite", "postgres"):
        settings = make_settings(backend, media_max_audio_mb=1)
        async with open_client(settings) as client:
            user = await client.signup()
            r = await upload(client, user, samples.noise_wav(3 * 1024 * 1024), "big.wav")
            err = assert_error(r, 413, "PAYLOAD_TOO_LARGE")
            assert err["message"] == "File size exceeds maximum limit of 1MB"
            assert await stored_keys(client) == set()
            assert await media_rows(client, user["user_id"]) == 0
            # Video keeps its own (default) cap.
            await uploaded(client, user, samples.media("mp4"), "ok.mp4")


async def test_a_declared_length_over_every_cap_is_refused_before_reading(
    make_settings: SettingsFactory, open_client: Any
) -> None:
    caps = {f"media_max_{t}_mb": 1 for t in ("video", "audio", "image", "document")}
    async with open_client(make_settings("sqlite", **caps)) as client:
        user = await client.signup()
        r = await upload(client, user, samples.noise_wav(2 * 1024 * 1024), "big.wav")
        assert_error(r, 413, "PAYLOAD_TOO_LARGE")
        assert await stored_keys(client) == set()


# --- upload limits ---------------------------------------------------------------------


def _gated_body(boundary: str, data: bytes, gate: asyncio.Event) -> AsyncIterator[bytes]:
    async def body() -> AsyncIterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n'
        ).encode() + data[:70_000]
        await gate.wait()
        yield data[70_000:] + f"\r\n--{boundary}--\r\n".encode()

    return body()


async def _held_upload(client: ApiClient, user: dict[str, Any], gate: asyncio.Event) -> int:
    boundary = uuid.uuid4().hex
    r = await client.post(
        f"{MEDIA}/upload",
        headers={**user["headers"], "content-type": f"multipart/form-data; boundary={boundary}"},
        content=_gated_body(boundary, samples.noise_wav(200_000), gate),
    )
    return r.status_code


async def _slots_held(client: ApiClient, user_id: str) -> int:
    slots = client.app.state.konfer.upload_slots
    key = f"uploads:{user_id}"
    if isinstance(slots, MemorySlotLimiter):
        return len(slots._held.get(key, ()))
    assert isinstance(slots, RedisSlotLimiter)
    return int(await slots._redis.zcard(slots._prefix + key))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_three_uploads_at_once_per_user_across_replicas(
    make_settings: SettingsFactory, open_client: Any, backend: str
) -> None:
    """A fourth concurrent upload is refused with 429; on PostgreSQL+Redis the count is
    shared by two api replicas."""
    settings = make_settings(backend)
    async with open_client(settings) as first, open_client(settings) as second:
        other = second if backend == "postgres" else first
        user = await first.signup()
        gate = asyncio.Event()
        held = [asyncio.create_task(_held_upload(c, user, gate)) for c in (first, first, other)]
        for _ in range(500):  # until the three hold their slots (white-box, no sleeps)
            if await _slots_held(first, user["user_id"]) == 3:
                break
            assert not any(t.done() for t in held), [t.result() for t in held if t.done()]
            await asyncio.sleep(0.01)
        probe = await upload(other, user, samples.media("mp3"), "a.mp3")
        assert probe.status_code == 429, probe.text
        err = probe.json()["error"]
        assert err["code"] == "RATE_LIMIT_EXCEEDED"
        assert "concurrent" in err["message"]
        assert probe.headers["retry-after"] == str(err["retry_after"])
        other_user = await first.signup()
        assert (await upload(other, other_user, samples.media("mp3"), "a.mp3")).status_code == 201
        gate.set()
        assert await asyncio.gather(*held) == [201, 201, 201]
        assert (await upload(other, user, samples.media("mp3"), "a.mp3")).status_code == 201


async def test_five_uploads_a_minute(make_settings: SettingsFactory, open_client: Any) -> None:
    async with open_client(make_settings("sqlite", rate_limit_enabled=True)) as client:
        user = await client.signup()
        data = samples.media("mp3", seconds=0.2)
        answers = [await upload(client, user, data, "a.mp3") for _ in range(6)]
        assert [r.status_code for r in answers] == [201] * 5 + [429]
        assert answers[0].headers["x-ratelimit-limit"] == "5"
        assert answers[-1].json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"


# --- info, list, download --------------------------------------------------------------


async def test_info_reads_streams_with_pyav(client: ApiClient) -> None:
    user = await client.signup()
    data = samples.media("mp4", seconds=1.5, width=176, height=144, fps=25)
    media_id = (await uploaded(client, user, data, "talk.mp4"))["media_id"]
    r = await client.get(f"{MEDIA}/info/{media_id}", headers=user["headers"])
    assert r.status_code == 200
    info = r.json()
    assert abs(info["duration"] - 1.5) < 0.1
    assert (info["resolution"], info["codec"], info["audio_codec"]) == ("176x144", "h264", "aac")
    assert info["frame_rate"] == 25
    assert info["bitrate"] > 0
    assert info["download_count"] == 0
    assert info["last_accessed"] is None
    await download(client, user, media_id)
    info = (await client.get(f"{MEDIA}/info/{media_id}", headers=user["headers"])).json()
    assert info["download_count"] == 1
    assert info["last_accessed"].endswith("Z")


async def test_list_pages_and_filters(client: ApiClient) -> None:
    user = await client.signup()
    ids = [
        (await uploaded(client, user, samples.media(f), f"f.{f}"))["media_id"]
        for f in ("mp3", "mp4", "wav")
    ]
    await uploaded(client, user, samples.image("png"), "p.png")
    r = await client.get(MEDIA, headers=user["headers"], params={"page_size": 2})
    body = r.json()
    assert r.status_code == 200
    assert body["message"] == "Media list retrieved successfully"
    assert body["data"]["total"] == 4
    assert len(body["data"]["media_files"]) == 2
    assert body["offset"] == 0
    assert body["filters"] == {"file_type": "", "meeting_id": "", "user_id": ""}
    page2 = (
        await client.get(MEDIA, headers=user["headers"], params={"page": 2, "page_size": 2})
    ).json()
    assert page2["offset"] == 2
    seen = {m["media_id"] for m in body["data"]["media_files"] + page2["data"]["media_files"]}
    assert set(ids) <= seen
    audio = (await client.get(MEDIA, headers=user["headers"], params={"file_type": "audio"})).json()
    assert {m["media_id"] for m in audio["data"]["media_files"]} == {ids[0], ids[2]}
    assert audio["filters"]["file_type"] == "audio"
    mine = (
        await client.get(MEDIA, headers=user["headers"], params={"user_id": user["user_id"]})
    ).json()
    assert mine["data"]["total"] == 4


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"file_type": "movie"}, "file_type"),
        ({"meeting_id": "12"}, "meeting_id"),
        ({"user_id": "me"}, "user_id"),
        ({"page": "0"}, "page"),
        ({"page_size": "101"}, "page_size"),
    ],
)
async def test_list_refuses_bad_filters(
    client: ApiClient, params: dict[str, str], field: str
) -> None:
    user = await client.signup()
    r = await client.get(MEDIA, headers=user["headers"], params=params)
    assert field in assert_error(r, 400, "VALIDATION_ERROR")["details"]


async def test_range_requests(client: ApiClient) -> None:
    user = await client.signup()
    data = samples.noise_wav(300_000)
    media_id = (await uploaded(client, user, data, "Überblick »2025«.wav"))["media_id"]
    url = f"{MEDIA}/download/{media_id}"
    size = len(data)

    async def get(range_header: str | None) -> httpx.Response:
        headers = dict(user["headers"])
        if range_header is not None:
            headers["Range"] = range_header
        return await client.get(url, headers=headers)

    full = await get(None)
    assert full.status_code == 200
    assert full.headers["accept-ranges"] == "bytes"
    assert full.headers["content-type"] == "audio/wav"
    disposition = full.headers["content-disposition"]
    assert disposition.startswith("attachment; filename=")
    assert "filename*=UTF-8''%C3%9Cberblick%20%C2%BB2025%C2%AB.wav" in disposition
    cases = [
        ("bytes=0-99", 0, 99),  # first bytes
        ("bytes=100000-100999", 100_000, 100_999),  # middle
        ("bytes=-500", size - 500, size - 1),  # suffix
        ("bytes=299000-", 299_000, size - 1),  # open end
        (f"bytes={size - 10}-{size + 5000}", size - 10, size - 1),  # clipped at the end
    ]
    for header, first, last in cases:
        r = await get(header)
        assert r.status_code == 206, header
        assert r.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert r.headers["content-length"] == str(last - first + 1)
        assert r.content == data[first : last + 1], header
    for header in (f"bytes={size}-", "bytes=500-100", "bytes=abc", "bytes=-0", "bytes=-"):
        r = await get(header)
        assert_error(r, 416, "RANGE_NOT_SATISFIABLE")
        assert r.headers["content-range"] == f"bytes */{size}"
    for header in ("bytes=0-1,5-9", "items=0-5"):  # ignored: the whole file
        r = await get(header)
        assert r.status_code == 200
        assert r.content == data
    head = await client.head(url, headers={**user["headers"], "Range": "bytes=0-9"})
    assert head.status_code == 206
    assert head.headers["content-length"] == "10"


async def test_delete_removes_row_and_objects(client: ApiClient) -> None:
    user = await client.signup()
    async with running_worker(client):
        body = await uploaded(client, user, samples.media("mp4"), "gone.mp4")
        media_id = body["media_id"]
        thumb = await client.get(f"{MEDIA}/thumbnail/{media_id}", headers=user["headers"])
        assert thumb.status_code == 200
    assert len(await stored_keys(client, f"media/{media_id}/")) == 2  # file and preview
    r = await client.delete(f"{MEDIA}/{media_id}", headers=user["headers"])
    assert r.status_code == 200
    assert r.json() == {"message": "Media file deleted successfully", "media_id": media_id}
    assert await stored_keys(client, f"media/{media_id}/") == set()
    for path in (f"info/{media_id}", f"download/{media_id}"):
        assert_error(
            await client.get(f"{MEDIA}/{path}", headers=user["headers"]), 404, "RESOURCE_NOT_FOUND"
        )
    assert_error(
        await client.delete(f"{MEDIA}/{media_id}", headers=user["headers"]),
        404,
        "RESOURCE_NOT_FOUND",
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "info/not-a-uuid"),
        ("GET", "download/not-a-uuid"),
        ("GET", "thumbnail/not-a-uuid"),
        ("DELETE", "not-a-uuid"),
    ],
)
async def test_item_routes_refuse_bad_ids(client: ApiClient, method: str, path: str) -> None:
    user = await client.signup()
    r = await client.request(method, f"{MEDIA}/{path}", headers=user["headers"])
    assert "media_id" in assert_error(r, 400, "VALIDATION_ERROR")["details"]
    r = await client.request(method, f"{MEDIA}/{path.replace('not-a-uuid', str(uuid.uuid4()))}")
    assert_error(r, 401, "MISSING_TOKEN")


async def test_thumbnail_of_audio_is_not_found(client: ApiClient) -> None:
    user = await client.signup()
    media_id = (await uploaded(client, user, samples.media("mp3"), "a.mp3"))["media_id"]
    r = await client.get(f"{MEDIA}/thumbnail/{media_id}", headers=user["headers"])
    assert_error(r, 404, "RESOURCE_NOT_FOUND")


# --- who may see what ------------------------------------------------------------------


async def test_other_users_get_404_and_admins_see_all(client: ApiClient) -> None:
    owner, stranger, admin = await client.signup(), await client.signup(), await client.make_admin()
    media_id = (await uploaded(client, owner, samples.media("mp3"), "a.mp3"))["media_id"]
    for path in (f"info/{media_id}", f"download/{media_id}"):
        assert_error(
            await client.get(f"{MEDIA}/{path}", headers=stranger["headers"]),
            404,
            "RESOURCE_NOT_FOUND",
        )
        assert (await client.get(f"{MEDIA}/{path}", headers=admin["headers"])).status_code == 200
    assert_error(
        await client.delete(f"{MEDIA}/{media_id}", headers=stranger["headers"]),
        404,
        "RESOURCE_NOT_FOUND",
    )
    listed = (await client.get(MEDIA, headers=stranger["headers"])).json()
    assert media_id not in {m["media_id"] for m in listed["data"]["media_files"]}
    by_owner = (
        await client.get(MEDIA, headers=admin["headers"], params={"user_id": owner["user_id"]})
    ).json()
    assert [m["media_id"] for m in by_owner["data"]["media_files"]] == [media_id]
    r = await client.delete(f"{MEDIA}/{media_id}", headers=admin["headers"])
    assert r.status_code == 200


async def test_meeting_members_see_meeting_media(client: ApiClient) -> None:
    host, member, outsider = await client.signup(), await client.signup(), await client.signup()
    r = await client.post(
        "/api/v1/meetings",
        headers=host["headers"],
        json={"title": "Review", "start_time": "2031-01-01T10:00:00Z", "duration": 30},
    )
    meeting_id = r.json()["meeting_id"]
    r = await client.post(
        f"/api/v1/meetings/{meeting_id}/participants",
        headers=host["headers"],
        json={"user_id": member["user_id"], "role": "participant"},
    )
    assert r.status_code in (200, 201), r.text
    shared = await uploaded(
        client, host, samples.media("mp3"), "minutes.mp3", meeting_id=meeting_id
    )
    assert shared["meeting_id"] == meeting_id
    private = await uploaded(client, host, samples.media("mp3"), "private.mp3")
    # The member sees the meeting's file, not the host's private one.
    listed = (
        await client.get(MEDIA, headers=member["headers"], params={"meeting_id": meeting_id})
    ).json()
    assert [m["media_id"] for m in listed["data"]["media_files"]] == [shared["media_id"]]
    assert await download(client, member, shared["media_id"])
    assert_error(
        await client.get(f"{MEDIA}/info/{private['media_id']}", headers=member["headers"]),
        404,
        "RESOURCE_NOT_FOUND",
    )
    # Members may not delete someone else's file; outsiders do not even see it.
    assert_error(
        await client.delete(f"{MEDIA}/{shared['media_id']}", headers=member["headers"]),
        403,
        "INSUFFICIENT_PERMISSIONS",
    )
    assert_error(
        await client.get(f"{MEDIA}/info/{shared['media_id']}", headers=outsider["headers"]),
        404,
        "RESOURCE_NOT_FOUND",
    )
    # Members can upload into the meeting; outsiders cannot.
    assert (
        await upload(client, member, samples.media("mp3"), "m.mp3", meeting_id=meeting_id)
    ).status_code == 201
    r = await upload(client, outsider, samples.media("mp3"), "o.mp3", meeting_id=meeting_id)
    assert_error(r, 404, "RESOURCE_NOT_FOUND")
    # The host (who runs the meeting) may delete the member's upload to it.
    theirs = (
        await client.get(MEDIA, headers=host["headers"], params={"user_id": member["user_id"]})
    ).json()["data"]["media_files"][0]
    assert (
        await client.delete(f"{MEDIA}/{theirs['media_id']}", headers=host["headers"])
    ).status_code == 200
