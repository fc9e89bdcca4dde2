"""Pure media logic: sniffing by magic bytes, Range parsing, option parsing, sizes."""

from __future__ import annotations

import pytest

from konfer.api.media import ops
from konfer.api.media.formats import sniff
from konfer.api.schemas.media import parse_bitrate, parse_resolution
from konfer.api.services.media import clean_filename, content_disposition, parse_range
from konfer.core.errors import RangeNotSatisfiable
from tests import media_samples as samples


@pytest.mark.parametrize(
    ("data", "container", "file_type"),
    [
        (samples.media("mp4", seconds=0.2), "mp4", "video"),
        (samples.media("webm", seconds=0.2), "webm", "video"),
        (samples.media("mkv", seconds=0.2), "mkv", "video"),
        (samples.media("avi", seconds=0.2), "avi", "video"),
        (samples.media("flv", seconds=0.2), "flv", "video"),
        (samples.media("mov", seconds=0.2), "mov", "video"),
        (samples.media("mp3", seconds=0.2), "mp3", "audio"),
        (samples.media("aac", seconds=0.2), "aac", "audio"),
        (samples.media("m4a", seconds=0.2), "m4a", "audio"),
        (samples.media("ogg", seconds=0.2), "ogg", "audio"),
        (samples.media("flac", seconds=0.2), "flac", "audio"),
        (samples.wav_header(1000) + bytes(1000), "wav", "audio"),
        (samples.image("jpg"), "jpg", "image"),
        (samples.image("png"), "png", "image"),
        (samples.image("gif"), "gif", "image"),
        (samples.image("webp"), "webp", "image"),
        (samples.image("bmp"), "bmp", "image"),
        (samples.pdf(), "pdf", "document"),
        ("plain text, ünïcode\n".encode(), "txt", "document"),
    ],
)
def test_sniff_knows_every_accepted_format(data: bytes, container: str, file_type: str) -> None:
    found = sniff(data[:65536], complete=True)
    assert found is not None
    assert (found.container, found.file_type) == (container, file_type)


@pytest.mark.parametrize(
    "data",
    [
        b"PK\x03\x04rest",
        b"\x7fELF\x02\x01",
        b"\x00\x01\x02\x03" * 100,
        "é".encode("latin-1") * 9,
        b"",
    ],
)
def test_sniff_refuses_everything_else(data: bytes) -> None:
    assert sniff(data, complete=True) is None


def test_text_cut_inside_a_character_is_still_text() -> None:
    assert sniff("ab✓".encode()[:-1], complete=False) is not None
    assert sniff("ab✓".encode()[:-1], complete=True) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", (0, 9)),
        ("bytes=10-", (10, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=-1000", (0, 99)),
        ("bytes=90-500", (90, 99)),
        ("bytes=0-1, 4-5", None),
        ("lines=1-2", None),
    ],
)
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize(
    "header", ["bytes=100-", "bytes=5-2", "bytes=x-1", "bytes=-0", "bytes=", "bytes=1"]
)
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as caught:
        parse_range(header, 100)
    assert caught.value.headers == {"Content-Range": "bytes */100"}


def test_option_parsing() -> None:
    assert parse_resolution("1280x720") == (1280, 720)
    assert parse_resolution("720p") == (None, 720)
    assert parse_resolution("4K") == (None, 2160)
    for bad in ("1280*720", "321x240", "8x8", "huge"):
        with pytest.raises(ValueError, match=r"."):
            parse_resolution(bad)
    assert parse_bitrate("2000k") == 2_000_000
    assert parse_bitrate("5M") == 5_000_000
    assert parse_bitrate("1.5m") == 1_500_000
    assert parse_bitrate(128000) == 128000
    for bad in ("fast", "1k", "1G", "500M"):
        with pytest.raises(ValueError, match=r"."):
            parse_bitrate(bad)


def test_output_sizes_are_even_and_keep_aspect() -> None:
    assert ops.output_size(1920, 1080, ops.VideoPlan(height=720)) == (1280, 720)
    assert ops.output_size(640, 480, ops.VideoPlan(width=320)) == (320, 240)
    assert ops.output_size(333, 201, ops.VideoPlan()) == (332, 200)
    assert ops.output_size(640, 480, ops.VideoPlan(width=1280, height=720)) == (1280, 720)


def test_file_names_are_cleaned_for_storage_and_headers() -> None:
    assert clean_filename("pass\x00wd\u202e.mp4", "mp4") == "passwd.mp4"
    assert clean_filename("  \x07 ", "mp4") == "upload.mp4"
    long_name = clean_filename("a" * 400 + ".mp4", "mp4")
    assert len(long_name) <= 255
    assert long_name.endswith("a.mp4")
    header = content_disposition('naïve "clip".mp4')
    assert header.startswith("attachment; filename=\"na_ve 'clip'.mp4\"")
    assert header.endswith("filename*=UTF-8''na%C3%AFve%20%22clip%22.mp4")
